"""``residual-detectron detect-peaks``: first-pass footprints and peaks of a scene."""

from __future__ import annotations

import argparse
import logging

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect-peaks",
        help="first-pass multi-band detection: footprints and peaks",
        description="Detect footprints and peaks in the multi-band S/N image of a scene FITS file.",
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument("--out", required=True, help="output peaks FITS file")
    parser.add_argument(
        "--threshold", type=float, default=5.0, help="detection threshold in sigma (default 5)"
    )
    parser.add_argument(
        "--min-prominence", type=float, default=3.0, help="minimum peak prominence in sigma (default 3)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..configs import make_config
    from ..detection import DetectionConfig, detect_peaks, write_detections
    from ..scene import read_scene
    from .outputs import OutputFile

    config = make_config(
        DetectionConfig, "detection options", threshold=args.threshold, min_prominence=args.min_prominence
    )
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
