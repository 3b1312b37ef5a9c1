"""``residual-detectron deblend``: first-pass Scarlet-like deblending of a scene."""

from __future__ import annotations

import argparse
import json
import logging

from ..deblending.config import DeblendConfig
from .options import add_model_options, model_from_args

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deblend",
        help="deblend a scene at its peaks (Scarlet-compatible model); write catalog, model, residual",
        description=(
            "Fit every footprint of PEAKS with its peaks (scarlet_lite's model, LSST defaults) and write "
            "DIR/catalog.fits, model.fits, residual.fits, peaks.fits, "
            "models.scarlet (LSST scarlet model data) "
            "and summary.json (with the SHA-256 of each file)."
        ),
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument("--peaks", required=True, help="peaks FITS file (from detect-peaks)")
    parser.add_argument("--out", required=True, help="output directory")
    add_model_options(parser.add_argument_group("deblender"), DeblendConfig, exclude=["show_progress"])
    parser.add_argument(
        "--plot", action="store_true", help="also write DIR/deblend.png (image, model, residual)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier run in --out"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..deblending import deblend, plot_deblend
    from ..deblending.io import RESULT_FILES
    from ..detection import read_detections
    from ..scene import read_scene
    from .main import CommandError
    from .outputs import SUMMARY_NAME, OutputFolder

    config = model_from_args(DeblendConfig, args, "deblend options", show_progress=True)
    folder = OutputFolder(
        args.out, overwrite=args.overwrite, output_names=[*RESULT_FILES.values(), "deblend.png"]
    )
    scene = read_scene(args.scene)
    detections = read_detections(args.peaks)
    if tuple(detections.bands) != scene.bands or detections.footprints.shape != scene.shape:
        raise CommandError(
            f"{args.peaks} is for a {detections.footprints.shape} image in bands "
            f"{','.join(detections.bands)}; {args.scene} is {scene.shape} in {','.join(scene.bands)}."
        )
    result = deblend(scene, detections, config)
    with folder.staging() as staged:
        result.write(staged.path)
        # The result's own summary (counts, timing, config: read back by read_deblend_result)
        # becomes the folder's, which gets the outputs manifest.
        staged.summary.update(json.loads((staged / SUMMARY_NAME).read_text()))
        if args.plot:
            plot_deblend(scene, result, staged / "deblend.png")
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
    _log.info("Wrote %s in %s", ", ".join(folder.written), folder.path)


def _nanmedian(values) -> float:
    import numpy as np

    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else float("nan")
