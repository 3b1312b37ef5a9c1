"""``residual-detectron simulate``: write a simulated scene FITS file."""

from __future__ import annotations

import argparse
import logging

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate an LSST-like multi-band coadd scene with truth",
        description="Simulate an LSST-like multi-band coadd scene (images, variance, PSFs, truth).",
    )
    parser.add_argument("--seed", type=int, required=True, help="random seed (same seed, same scene)")
    parser.add_argument(
        "--size", type=int, default=512, help="side of the square scene in pixels (default 512)"
    )
    parser.add_argument("--bands", default="ugrizy", help="bands, e.g. 'ugrizy' or 'g,r,i' (default ugrizy)")
    parser.add_argument("--depth", choices=("10yr", "1yr"), default="10yr", help="coadd depth (default 10yr)")
    parser.add_argument(
        "--density",
        type=float,
        default=None,
        help="galaxies per arcmin^2 brighter than the i-band 5-sigma depth (default: 60 at 10yr, 35 at 1yr)",
    )
    parser.add_argument("--star-density", type=float, default=8.0, help="stars per arcmin^2 (default 8)")
    parser.add_argument("--psf-model", choices=("kolmogorov", "moffat"), default="kolmogorov")
    parser.add_argument("--out", required=True, help="output scene FITS file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..configs import make_config
    from ..scene import write_scene
    from ..simulation import SimulationConfig, simulate_scene
    from .outputs import OutputFile

    config = make_config(
        SimulationConfig,
        "simulation options",
        height=args.size,
        width=args.size,
        bands=args.bands,
        depth=args.depth,
        galaxy_density=args.density,
        star_density=args.star_density,
        psf_model=args.psf_model,
    )
    output = OutputFile(args.out, overwrite=args.overwrite)
    scene = simulate_scene(args.seed, config)
    with output.staging() as path:
        write_scene(scene, path)
    n_stars = int(scene.truth.is_star.sum())
    _log.info(
        "Wrote %s: %dx%d, bands %s, %d galaxies and %d stars.",
        args.out,
        *scene.shape,
        ",".join(scene.bands),
        len(scene.truth) - n_stars,
        n_stars,
    )
