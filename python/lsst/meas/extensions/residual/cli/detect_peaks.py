"""``residual-detectron detect-peaks``: first-pass footprints and peaks of a scene."""

from __future__ import annotations

import argparse
import logging
import os

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
    from ..detection import DetectionConfig, detect_peaks, write_detections
    from ..scene import read_scene
    from .main import CommandError

    if os.path.exists(args.out) and not args.overwrite:
        raise CommandError(f"{args.out} exists; pass --overwrite to replace it.")
    scene = read_scene(args.scene)
    detections = detect_peaks(
        scene, DetectionConfig(threshold=args.threshold, min_prominence=args.min_prominence)
    )
    write_detections(detections, args.out, overwrite=args.overwrite)
    _log.info(
        "Wrote %s: %d peaks in %d footprints.",
        args.out,
        len(detections.peaks),
        int(detections.footprints.max()),
    )
