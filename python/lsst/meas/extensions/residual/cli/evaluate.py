"""``residual-detectron evaluate``: metrics of a model package on held-out simulated scenes."""

from __future__ import annotations

import argparse
import json
import logging

from .options import MODEL_HELP, add_workers_option

_log = logging.getLogger(__name__)

# What `evaluate --injected` writes into --out instead.
_RECOVERY_OUTPUTS = ("recovery.json", "recovery.png", "summary.json")
# Everything `evaluate` writes into --out (summary.json: the headline numbers and the files' SHA-256).
_OUTPUTS = (
    "evaluation.json",
    "pr_curves.png",
    "recall_vs_mag.png",
    "example_overlay.png",
    "reliability.png",
    "detection_scores.npz",
    "calibrated.zip",
    "summary.json",
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model package on held-out simulated scenes, with baselines",
        description=(
            "Simulate scenes the model never saw, take them through the first pass, run the network and the "
            "baselines (SEP 3/5 sigma, photutils) on the same inputs, and write OUT/evaluation.json with "
            "precision/recall/F1, PR curves per class, precision at 80% recall, recall versus magnitude and "
            "mask IoU, the scores' calibration (ECE, reliability.png, detection_scores.npz; --calibrate "
            "fits one and writes OUT/calibrated.zip), plus PNG plots and OUT/summary.json (headline "
            "numbers, SHA-256 of each file). With --injected and --original: injection-recovery on those "
            "scenes instead (OUT/recovery.json, recovery.png)."
        ),
    )
    parser.add_argument(
        "--model",
        default=None,
        help=MODEL_HELP,
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
    parser.add_argument(
        "--variant",
        default="training",
        help="scenes as the package's training made them (training, the default) or a held-out "
        "variant: another PSF family, compact galaxies, correlated noise, 1-year depth "
        "(evaluation.EVALUATION_VARIANTS)",
    )
    parser.add_argument(
        "--bands",
        default=None,
        help="bands of the scenes, e.g. grizy: a subset of the package's, for a package taking band "
        "subsets (default: the package's)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip SEP and photutils")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_workers_option(
        parser, "simulate the scenes and run their first pass while the network runs on those done"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also fit a score calibration to these scenes' detections and write OUT/calibrated.zip (the "
        "package with it, its threshold chosen for --purity); evaluate that on other seeds",
    )
    parser.add_argument(
        "--purity",
        type=float,
        default=0.92,
        help="purity of the calibrated package's threshold (default 0.92)",
    )
    parser.add_argument(
        "--injected",
        help="a scene with injected sources (`inject`): run the chain on it and on --original, and report "
        "the injected sources recovered by pass 1 and pass 1 + 2 against magnitude and separation",
    )
    parser.add_argument("--original", help="the scene --injected was made from")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the outputs of an earlier run in --out"
    )
    parser.set_defaults(handler=main)


def _recovery(args: argparse.Namespace) -> None:
    """``evaluate --injected --original``: injection-recovery through the whole chain."""
    from ..chain import run_chain
    from ..network import Detector, model_path
    from ..realdata import injection_recovery, plot_recovery
    from ..scene import read_scene
    from .main import CommandError, input_files
    from .outputs import OutputFolder

    if not (args.injected and args.original):
        raise CommandError("--injected and --original go together.")
    folder = OutputFolder(args.out, overwrite=args.overwrite, output_names=_RECOVERY_OUTPUTS)
    injected = read_scene(args.injected)
    original = read_scene(args.original, truth=False)
    if original.bands != injected.bands or original.shape != injected.shape:
        raise CommandError(
            f"{args.injected} and {args.original} are not the same scene (bands or size differ)."
        )
    with input_files():
        detector = Detector(model_path(args.model), device=args.device)
    truth = injected.truth
    results = {}
    for name, scene in (("original", original), ("injected", injected)):
        scene.truth = None  # the chain needs none
        _log.info("Running the chain on the %s scene.", name)
        results[name] = run_chain(scene, detector, progress=True)
    injected.truth = truth
    summary = injection_recovery(injected, results["original"], results["injected"])
    with folder.staging() as staged:
        (staged.path / "recovery.json").write_text(json.dumps(summary, indent=2))
        plot_recovery(summary, staged.path / "recovery.png", title=f"{detector.metadata.name}:")
        staged.summary.update({k: v for k, v in summary.items() if k != "per_source"})
    print(json.dumps(staged.summary, indent=2))


def main(args: argparse.Namespace) -> None:
    if args.injected or args.original:
        _recovery(args)
        return
    from ..configs import make_config
    from ..evaluation.evaluate import EvaluationConfig, evaluate_package
    from ..network import load_model_package, model_path
    from .main import CommandError, input_files
    from .outputs import OutputFolder

    config = make_config(
        EvaluationConfig,
        "evaluation options",
        n_scenes=args.scenes,
        seed=args.seed,
        scene_size=args.size,
        match_radius=args.match_radius,
        score_threshold=args.score_threshold,
        baselines=not args.no_baselines,
        device=args.device,
        variant=args.variant,
        bands=args.bands,
    )
    folder = OutputFolder(args.out, overwrite=args.overwrite, output_names=_OUTPUTS)
    with input_files():
        package = load_model_package(model_path(args.model))
    if not 0 < args.purity < 1:
        raise CommandError(f"--purity must be between 0 and 1, not {args.purity}.")
    if args.calibrate and package.metadata.score_calibration is not None:
        raise CommandError(
            f"--calibrate: {package.metadata.name!r} is calibrated already (fit to raw scores)."
        )
    with folder.staging() as staged:
        summary = evaluate_package(package, config, staged.path, workers=args.workers)
        if args.calibrate:
            import numpy as np

            from ..network import calibrate_package, save_model_package

            with np.load(staged.path / "detection_scores.npz") as data:
                calibrated = calibrate_package(
                    package,
                    data["score"],
                    data["is_real"],
                    args.purity,
                    scenes=config.n_scenes,
                    seeds=[config.seed, config.seed + config.n_scenes - 1],
                    scene_size=config.scene_size,
                )
            save_model_package(staged.path / "calibrated.zip", calibrated.metadata, calibrated.state_dict)
            summary["calibrated_package"] = {
                "score_threshold": calibrated.metadata.score_threshold,
                "purity": args.purity,
                "knots": len(calibrated.metadata.score_calibration.scores),
            }
        staged.summary.update(
            {k: v for k, v in summary.items() if k not in ("curves", "recall_vs_magnitude")}
        )
    print(json.dumps(staged.summary, indent=2))
    _log.info("Wrote %s in %s", ", ".join(folder.written), folder.path)
