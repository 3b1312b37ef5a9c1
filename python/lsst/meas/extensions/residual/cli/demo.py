"""``residual-detectron demo``: run the main job end to end on the embedded default.

Interim version (foundation issue): simulate a scene, run first-pass detection
and save a PNG with truth and peaks marked.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the chain end to end on simulated data (what `make demo` runs)",
        description="Run the chain end to end on the embedded default (simulated data).",
    )
    parser.add_argument("--out", default="demo_output", help="output directory (default demo_output)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels (default 512)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..detection import detect_peaks, write_detections
    from ..evaluation import match_positions
    from ..scene import write_scene
    from ..simulation import SimulationConfig, simulate_scene
    from ..visualization import plot_detections

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene = simulate_scene(args.seed, SimulationConfig(height=args.size, width=args.size))
    write_scene(scene, out / "scene.fits", overwrite=True)
    detections = detect_peaks(scene)
    write_detections(detections, out / "peaks.fits", overwrite=True)
    truth_index, _ = match_positions(scene.truth.xy, detections.xy, radius=2.0)
    summary = {
        "true_sources": len(scene.truth),
        "peaks": len(detections.peaks),
        "footprints": int(detections.footprints.max()),
        "matched_peaks": len(truth_index),
    }
    plot_detections(scene, detections, out / "detections.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"Wrote {out}/scene.fits, peaks.fits, detections.png, summary.json")
