"""``residual-detectron simulate``: write a simulated scene FITS file."""

from __future__ import annotations

import argparse
import logging

_log = logging.getLogger(__name__)

#: SimulationConfig fields set only when their option (of the same name) is given.
_OPTIONAL_FIELDS = (
    "depth",
    "psf_model",
    "psf_model_mix",
    "moffat_beta_range",
    "psf_model_error",
    "galaxy_sizes",
    "knot_fraction",
    "depth_years",
    "depth_years_range",
    "background_offset_sigma",
    "background_gradient_sigma",
)


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
    parser.add_argument("--depth", choices=("10yr", "1yr"), help="coadd depth (default 10yr)")
    parser.add_argument(
        "--density",
        type=float,
        default=None,
        help="galaxies per arcmin^2 brighter than the i-band 5-sigma depth (default: 60 at 10yr, 35 at 1yr)",
    )
    parser.add_argument("--star-density", type=float, default=8.0, help="stars per arcmin^2 (default 8)")
    parser.add_argument(
        "--psf-model",
        choices=("kolmogorov", "moffat", "kolmogorov_airy"),
        help="PSF family (default kolmogorov)",
    )
    widened = parser.add_argument_group(
        "widened scenes", "each defaults to the standard scene; --widened starts from the network-v2 mix"
    )
    widened.add_argument(
        "--widened",
        action="store_true",
        help="draw each scene from SimulationConfig.widened(): PSF family mix, Moffat beta 2-5, 2.5%% "
        "PSF-model error, compact sizes, knots in 30%% of galaxies, 1-10 yr depth, background offsets and "
        "gradients; the other options override it",
    )
    widened.add_argument(
        "--psf-model-mix",
        nargs="+",
        choices=("kolmogorov", "moffat", "kolmogorov_airy"),
        help="PSF families drawn uniformly per scene (overrides --psf-model)",
    )
    widened.add_argument(
        "--moffat-beta-range", nargs=2, type=float, metavar=("MIN", "MAX"), help="Moffat beta drawn per scene"
    )
    widened.add_argument(
        "--psf-model-error",
        type=float,
        help="scatter of the fractional FWHM and shear error of the PSF written to the scene",
    )
    widened.add_argument("--galaxy-sizes", choices=("standard", "compact"), help="size-magnitude relation")
    widened.add_argument("--knot-fraction", type=float, help="fraction of galaxies with star-forming knots")
    widened.add_argument("--depth-years", type=float, help="coadd length in years, 1-10 (overrides --depth)")
    widened.add_argument(
        "--depth-years-range",
        nargs=2,
        type=float,
        metavar=("MIN", "MAX"),
        help="coadd length in years drawn log-uniformly per scene (overrides --depth)",
    )
    widened.add_argument(
        "--background-offset-sigma", type=float, help="background offset scatter, in background sigmas"
    )
    widened.add_argument(
        "--background-gradient-sigma",
        type=float,
        help="background gradient scatter (change across the scene), in background sigmas",
    )
    parser.add_argument(
        "--artefacts",
        action="store_true",
        help="add a 10-year patch's mix of coadd artefacts with their truth (ARTEFACTS table) and an LSST "
        "MASK: bright stars with saturated cores, bleed trails, diffraction spikes and PSF wings, "
        "satellite trails (masked STREAK or faint), a NO_DATA coverage edge, chip gaps, cosmic rays",
    )
    parser.add_argument(
        "--correlated-noise",
        metavar="SIGMA_OR_KERNEL",
        default=None,
        help="correlate the noise (not the sources) as resampling does, keeping the variance plane's "
        "per-pixel variance: a Gaussian sigma in pixels ('0.8' or 'gaussian:0.8'), or a Lanczos "
        "resampling kernel at a sub-pixel shift ('lanczos3' = 'lanczos3:0.5', 'lanczos5:0.25'); "
        "recorded as NOISEKER in the header; without --artefacts it adds no artefact (default: white noise)",
    )
    parser.add_argument("--out", required=True, help="output scene FITS file")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..configs import make_config
    from ..scene import write_scene
    from ..simulation import SimulationConfig, simulate_scene
    from .outputs import OutputFile

    options = dict(
        height=args.size,
        width=args.size,
        bands=args.bands,
        galaxy_density=args.density,
        star_density=args.star_density,
    )
    # Only the options given, so that the model's (or the widened mix's) defaults stand for the rest.
    options.update(
        {field: getattr(args, field) for field in _OPTIONAL_FIELDS if getattr(args, field) is not None}
    )
    if args.artefacts or args.correlated_noise is not None:
        from ..simulation import ArtefactConfig, NoiseKernelConfig

        kernel = None if args.correlated_noise is None else NoiseKernelConfig.parse(args.correlated_noise)
        if args.artefacts:
            options["artefacts"] = make_config(
                ArtefactConfig, "artefact options", correlated_noise_kernel=kernel
            )
        else:
            options["artefacts"] = ArtefactConfig.without_artefacts(correlated_noise_kernel=kernel)
    if args.widened:
        config = SimulationConfig.widened(**options)
    else:
        config = make_config(SimulationConfig, "simulation options", **options)
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
    if scene.artefacts is not None:
        _log.info("  with %d artefact(s) in its ARTEFACTS table.", len(scene.artefacts))
