"""``residual-detectron evaluate``: metrics of a model package on held-out simulated scenes."""

from __future__ import annotations

import argparse
import json
import logging

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package on held-out simulated scenes, with baselines",
        description=(
            "Simulate scenes the model never saw, take them through the first pass, run the network and the "
            "baselines (SEP 3/5 sigma, photutils) on the same inputs, and write OUT/evaluation.json with "
            "precision/recall/F1, PR curves per class, precision at 80% recall, recall versus magnitude and "
            "mask IoU, plus PNG plots."
        ),
    )
    parser.add_argument(
        "--model", default=None, help="model package (.zip); default: the shipped residual one"
    )
    parser.add_argument("--scenes", type=int, default=20, help="number of scenes (default 20)")
    parser.add_argument("--seed", type=int, default=1_000_000, help="first scene seed (default 1000000)")
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels (default 512)")
    parser.add_argument(
        "--match-radius", type=float, default=3.0, help="matching radius in pixels (default 3)"
    )
    parser.add_argument(
        "--score-threshold", type=float, default=None, help="operating threshold (default: package's)"
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip SEP and photutils")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..evaluation.evaluate import EvaluationConfig, evaluate_package
    from ..network import default_model_path

    config = EvaluationConfig(
        n_scenes=args.scenes,
        seed=args.seed,
        scene_size=args.size,
        match_radius=args.match_radius,
        score_threshold=args.score_threshold,
        baselines=not args.no_baselines,
        device=args.device,
    )
    summary = evaluate_package(args.model or default_model_path("residual"), config, args.out)
    brief = {k: v for k, v in summary.items() if k not in ("curves", "recall_vs_magnitude")}
    print(json.dumps(brief, indent=2))
    _log.info("Wrote %s/evaluation.json, pr_curves.png, recall_vs_mag.png, example_overlay.png", args.out)
