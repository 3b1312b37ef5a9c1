"""``residual-detectron deblend``: first-pass Scarlet-like deblending of a scene."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deblend",
        help="deblend a scene at its peaks (Scarlet-compatible model); write catalog, model, residual",
        description=(
            "Fit every footprint of PEAKS with its peaks (scarlet_lite's model, LSST defaults) and write "
            "DIR/catalog.fits, model.fits, residual.fits, peaks.fits, "
            "models.scarlet (LSST scarlet model data) "
            "and summary.json."
        ),
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument("--peaks", required=True, help="peaks FITS file (from detect-peaks)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--max-iter", type=int, default=300, help="maximum iterations per blend (default 300)"
    )
    parser.add_argument(
        "--relative-error",
        type=float,
        default=1e-3,
        help="stop when logL changes by less than this (default 1e-3)",
    )
    parser.add_argument(
        "--isolated",
        choices=("fit", "footprint"),
        default="fit",
        help="single-peak footprints: fit them (default) or use the image inside the footprint (LSST's way)",
    )
    parser.add_argument(
        "--plot", action="store_true", help="also write DIR/deblend.png (image, model, residual)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..deblending import DeblendConfig, deblend, plot_deblend
    from ..detection import read_detections
    from ..scene import read_scene
    from .main import CommandError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a directory.")
    scene = read_scene(args.scene)
    detections = read_detections(args.peaks)
    config = DeblendConfig(
        max_iter=args.max_iter, relative_error=args.relative_error, isolated=args.isolated, show_progress=True
    )
    result = deblend(scene, detections, config)
    try:
        paths = result.write(out, overwrite=args.overwrite)
    except FileExistsError as err:
        raise CommandError(str(err)) from None
    if args.plot:
        plot_deblend(scene, result, out / "deblend.png")
    catalog = result.catalog
    summary = {
        "sources": len(catalog),
        "blends": len(result.model_data.blends),
        "converged_fraction": round(float(catalog["converged"].mean()), 3) if len(catalog) else None,
        "median_blend_reduced_chi2": round(float(_nanmedian(catalog["blend_reduced_chi2"])), 3)
        if len(catalog)
        else None,
        "seconds": round(result.timing.get("total", float("nan")), 2),
    }
    print(json.dumps(summary, indent=2))
    _log.info("Wrote %s", ", ".join(str(p) for p in paths.values()))


def _nanmedian(values) -> float:
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else float("nan")
