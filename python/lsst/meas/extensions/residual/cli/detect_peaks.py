"""``residual-detectron detect-peaks``: first-pass footprints and peaks of a scene."""

from __future__ import annotations

import argparse
import logging

from ..detection.detect import DetectionConfig
from .options import add_model_options, model_from_args

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect-peaks",
        help="first-pass multi-band detection: footprints and peaks",
        description="Detect footprints and peaks in the multi-band S/N image of a scene FITS file.",
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument("--out", required=True, help="output peaks FITS file")
    add_model_options(parser.add_argument_group("first-pass detection"), DetectionConfig)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..detection import detect_peaks, write_detections
    from ..scene import read_scene
    from .outputs import OutputFile

    config = model_from_args(DetectionConfig, args, "detection options")
    output = OutputFile(args.out, overwrite=args.overwrite)
    scene = read_scene(args.scene)
    detections = detect_peaks(scene, config)
    with output.staging() as path:
        write_detections(detections, path)
    _log.info(
        "Wrote %s: %d peaks in %d footprints.",
        args.out,
        len(detections.peaks),
        int(detections.footprints.max(initial=0)),
    )
