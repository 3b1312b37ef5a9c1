"""``residual-detectron import``: per-band survey FITS images into a scene file."""

from __future__ import annotations

import argparse
import logging

_log = logging.getLogger(__name__)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict (a name given twice is refused)."""
    from .main import CommandError

    pairs: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise CommandError(f"{option} {value!r}: give NAME=VALUE (e.g. {option} g=image_g.fits).")
        if name in pairs:
            raise CommandError(f"{option} gives {name} twice.")
        pairs[name] = rest
    return pairs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "import",
        help="make a scene from per-band survey FITS images (estimating variance and PSF if missing)",
        description=(
            "Stack per-band FITS images on one pixel grid into a scene file in nJy. A band without a "
            "variance gets one estimated from the sky (plus the sources' Poisson noise with --gain); a "
            "band without a PSF gets one built from its bright, isolated, unsaturated stars. The header "
            "records what was given and what estimated; OUT with .import.json lists it, with the stars."
        ),
    )
    parser.add_argument(
        "--band",
        action="append",
        required=True,
        metavar="NAME=IMAGE.fits[HDU]",
        help="a band's image (repeat)",
    )
    parser.add_argument("--variance", action="append", metavar="NAME=FILE[HDU]", help="a band's variance")
    parser.add_argument(
        "--invvar", action="append", metavar="NAME=FILE[HDU]", help="a band's inverse variance"
    )
    parser.add_argument("--psf", action="append", metavar="NAME=FILE[HDU]", help="a band's PSF image")
    parser.add_argument(
        "--mask", action="append", metavar="NAME=FILE[HDU]", help="a band's mask (nonzero: bad)"
    )
    parser.add_argument(
        "--band-map",
        action="append",
        metavar="SURVEY=LSST",
        help="a survey band name as LSST's, e.g. HSC-I=i",
    )
    parser.add_argument(
        "--unit", default="nJy", help="pixel unit: nJy, nanomaggies (nmgy) or counts (with --zeropoint)"
    )
    parser.add_argument("--zeropoint", type=float, help="AB magnitude of one count (--unit counts)")
    parser.add_argument(
        "--gain",
        type=float,
        help="electrons per image unit: estimated variances add the sources' Poisson noise",
    )
    parser.add_argument("--pixel-scale", type=float, help="arcsec per pixel (default: from the WCS)")
    parser.add_argument("--psf-size", type=int, default=25, help="side of estimated PSFs (odd; default 25)")
    parser.add_argument(
        "--min-psf-stars", type=int, default=5, help="fewest stars an estimated PSF is built from (default 5)"
    )
    parser.add_argument(
        "--psf-min-snr", type=float, default=20.0, help="least S/N of those stars, in a 7x7 box (default 20)"
    )
    parser.add_argument("--out", required=True, help="output scene FITS file")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out (and its report) if they exist"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from ..realdata import import_fits
    from ..scene import write_scene
    from .outputs import OutputFile

    images = _pairs(args.band, "--band")
    band_map = _pairs(args.band_map, "--band-map")
    output = OutputFile(args.out, overwrite=args.overwrite)
    report_output = OutputFile(Path(args.out).with_suffix(".import.json"), overwrite=args.overwrite)
    scene, report = import_fits(
        images,
        variance=_pairs(args.variance, "--variance"),
        inverse_variance=_pairs(args.invvar, "--invvar"),
        psf=_pairs(args.psf, "--psf"),
        mask=_pairs(args.mask, "--mask"),
        band_map=band_map,
        pixel_scale=args.pixel_scale,
        unit=args.unit,
        zeropoint=args.zeropoint,
        gain=args.gain,
        psf_size=args.psf_size,
        min_psf_stars=args.min_psf_stars,
        psf_min_snr=args.psf_min_snr,
    )
    with output.staging() as path:
        write_scene(scene, path)
    with report_output.staging() as path:
        path.write_text(json.dumps(report.to_dict(), indent=2))
    _log.info(
        'Wrote %s (%dx%d, bands %s, %.4g" pixels):',
        args.out,
        *scene.shape,
        ",".join(scene.bands),
        report.pixel_scale,
    )
    for band in scene.bands:
        psf = report.psf[band]
        stars = f", {psf['n_stars']} stars" if psf["source"] == "estimated" else ""
        _log.info(
            '  %s: sky sigma %.4g nJy, variance %s; PSF %s, FWHM %.3f"%s.',
            band,
            report.sky_sigma_njy[band],
            report.variance[band],
            psf["source"],
            psf["fwhm_arcsec"],
            stars,
        )
