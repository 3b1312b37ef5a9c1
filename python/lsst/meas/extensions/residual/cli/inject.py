"""``residual-detectron inject``: add simulated sources to a scene, with their truth."""

from __future__ import annotations

import argparse
import logging

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inject",
        help="inject simulated galaxies and stars into a scene (its TRUTH: the injected sources)",
        description=(
            "Add simulated galaxies and stars, drawn with the scene's PSF at its pixel scale, to a (real) "
            "scene, as LSST's source_injection does: their Poisson noise and variance at the scene's gain, "
            "TRUTH holding the injected sources only. Magnitudes default to the scene's 5-sigma "
            "point-source depth minus 3 mag to the depth (reference band i, else r)."
        ),
    )
    parser.add_argument("scene", help="scene FITS file (e.g. from `import`)")
    parser.add_argument("--n", type=int, default=50, help="sources to inject (default 50)")
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same injections)")
    parser.add_argument("--star-fraction", type=float, default=0.2, help="share of stars (default 0.2)")
    parser.add_argument(
        "--mag-range", type=float, nargs=2, metavar=("BRIGHT", "FAINT"), help="reference-band AB magnitudes"
    )
    parser.add_argument(
        "--near-sources", action="store_true", help="place each at 1-3 PSF FWHM from a source of the scene"
    )
    parser.add_argument("--gain", type=float, help="electrons per nJy (default: from the scene's variance)")
    parser.add_argument("--out", required=True, help="output scene FITS file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..configs import make_config
    from ..realdata import InjectionConfig, inject_sources
    from ..scene import read_scene, write_scene
    from .outputs import OutputFile

    config = make_config(
        InjectionConfig,
        "injection options",
        n_sources=args.n,
        star_fraction=args.star_fraction,
        mag_range=args.mag_range,
        near_sources=args.near_sources,
        gain=args.gain,
    )
    output = OutputFile(args.out, overwrite=args.overwrite)
    scene = read_scene(args.scene, truth=False)
    injected = inject_sources(scene, args.seed, config)
    with output.staging() as path:
        write_scene(injected, path)
    meta = injected.metadata
    _log.info(
        "Wrote %s: %d sources injected at %s = %.2f-%.2f (depth %.2f).",
        args.out,
        len(injected.truth),
        meta["INJREF"],
        meta["INJMAG0"],
        meta["INJMAG1"],
        meta[f"DEPTH_{meta['INJREF'].upper()}"],
    )
