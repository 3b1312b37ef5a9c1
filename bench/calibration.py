"""Score calibration of each shipped residual-mode package on held-out variants of the scenes.

If the shipped package carries no calibration, one (`calibrate_package`,
isotonic, threshold for purity 0.92) is fitted here on held-out scenes as the
package's training made them (seeds from 1 200 000), and raw and calibrated
packages are compared. A package shipped calibrated (network v2: fitted when
it was made, on its own held-out seeds) is checked as it is. Either way the
check runs `evaluate_package` (no baselines) on other seeds (from 1 300 000)
of each variant of `EVALUATION_VARIANTS`, and reports per variant the
expected calibration error (ECE) of the scores of every detection, the
purity at the package's threshold and the recall of missed sources there.

A variant is held out when the package's training did not draw such scenes:
every variant that changes its training scenes, less, for a package trained
on the widened mix, those the mix draws (`WIDENED_MIX_VARIANTS`: other PSF
families, compact galaxies, 1-year depth). Issue 11's target: ECE <= 0.05 and purity >= 0.90 on each of >= 4
held-out variants. Scenes are 256² (quick: 128², fewer scenes).
"""

from __future__ import annotations

import json
from pathlib import Path

import bench

FIT_SEED = 1_200_000
CHECK_SEED = 1_300_000
PURITY = 0.92


def _plan(quick: bool) -> dict:
    if quick:
        return {"fit_scenes": 4, "check_scenes": 2, "size": 128}
    return {"fit_scenes": 16, "check_scenes": 12, "size": 256}


def held_out_variants(package) -> list[str]:
    """The variants of `EVALUATION_VARIANTS` a package's training drew no scenes of: those that
    change its training scenes, less those the widened mix draws if it was trained on that."""
    from lsst.meas.extensions.residual.evaluation.evaluate import (
        EVALUATION_VARIANTS,
        WIDENED_MIX_VARIANTS,
        EvaluationConfig,
        _settings,
    )

    widened = bool(package.metadata.training.get("dataset", {}).get("widened"))
    trained = _settings(package, EvaluationConfig())[0]
    return [
        name
        for name in EVALUATION_VARIANTS
        if _settings(package, EvaluationConfig(variant=name))[0] != trained
        and not (widened and name in WIDENED_MIX_VARIANTS)
    ]


def run(out_dir: Path, quick: bool = False) -> dict:
    """Every shipped residual-mode package, one after the other (``out_dir/<package name>/``)."""
    import logging

    from lsst.meas.extensions.residual.network import load_model_package, shipped_model_paths

    logging.getLogger("lsst.meas.extensions.residual").setLevel(logging.WARNING)
    reports = {}
    for name, path in shipped_model_paths("residual").items():
        reports[name] = _package_report(load_model_package(path), out_dir / name, _plan(quick))
    (out_dir / "calibration.json").write_text(json.dumps(reports, indent=2))
    return reports


def _package_report(shipped, out_dir: Path, plan: dict) -> dict:
    import numpy as np
    from lsst.meas.extensions.residual.errors import InputError
    from lsst.meas.extensions.residual.evaluation.evaluate import (
        EVALUATION_VARIANTS,
        EvaluationConfig,
        evaluate_package,
    )
    from lsst.meas.extensions.residual.network import calibrate_package

    out_dir.mkdir(parents=True, exist_ok=True)

    def evaluate(package, variant: str, seed: int, n_scenes: int, name: str) -> dict:
        config = EvaluationConfig(
            n_scenes=n_scenes,
            seed=seed,
            scene_size=plan["size"],
            baselines=False,
            device="cpu",
            variant=variant,
        )
        return evaluate_package(package, config, out_dir / name, progress=False, workers=bench.WORKERS)

    fit_error = None
    if shipped.metadata.score_calibration is None:
        evaluate(shipped, "training", FIT_SEED, plan["fit_scenes"], "fit")
        with np.load(out_dir / "fit" / "detection_scores.npz") as data:
            try:
                calibrated = calibrate_package(
                    shipped, data["score"], data["is_real"], PURITY, scenes=plan["fit_scenes"], seed=FIT_SEED
                )
                packages = {"raw": shipped, "calibrated": calibrated}
            except InputError as err:  # no threshold reaches the purity: the raw package alone
                fit_error = str(err)
                calibrated = None
                packages = {"raw": shipped}
    else:
        calibrated = shipped
        packages = {"calibrated": shipped}
    held_out = held_out_variants(shipped)
    rows = {}
    for variant in EVALUATION_VARIANTS:
        rows[variant] = {"held_out": variant in held_out}
        for label, package in packages.items():
            summary = evaluate(package, variant, CHECK_SEED, plan["check_scenes"], f"{variant}_{label}")
            calibration = summary["calibration"]
            at = summary["network_at_operating_threshold"]
            rows[variant][label] = {
                "ece": calibration["expected_calibration_error"],
                "threshold": summary["operating_threshold"],
                "purity": calibration["purity_at_operating_threshold"],
                "recall": at["recall"],
                "n_detections": calibration["n_detections"],
            }

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    def meets(row) -> bool:
        cal = row[list(packages)[-1]]
        return cal["ece"] is not None and cal["ece"] <= 0.05 and (cal["purity"] or 0.0) >= 0.90

    labels = list(packages)
    print(f"package {shipped.metadata.name}")
    print(
        f"{'variant':>17} {'held out':>8} "
        + " ".join(f"{'ECE ' + k[:3]:>8} {'purity ' + k[:3]:>10} {'recall ' + k[:3]:>10}" for k in labels)
    )
    for variant, row in rows.items():
        cells = " ".join(
            f"{fmt(row[k]['ece']):>8} {fmt(row[k]['purity']):>10} {fmt(row[k]['recall']):>10}" for k in labels
        )
        print(f"{variant:>17} {'yes' if row['held_out'] else 'no':>8} {cells}")
    passing = [v for v in held_out if meets(rows[v])]
    met = len(held_out) >= 4 and len(passing) == len(held_out)
    if fit_error is not None:
        print(f"No calibration: {fit_error}")
    threshold = "-" if calibrated is None else f"{calibrated.metadata.score_threshold:.3f}"
    print(
        f"(threshold {threshold} for purity {PURITY}); held-out variants with "
        f"ECE <= 0.05 and purity >= 0.90: {len(passing)} of {len(held_out)} "
        f"({', '.join(passing) or 'none'}): {'met' if met else 'NOT met'}"
    )
    report = {
        "package": shipped.metadata.name,
        "shipped_calibrated": shipped.metadata.score_calibration is not None,
        "plan": plan,
        "fit_seed": FIT_SEED if "raw" in packages else None,
        "check_seed": CHECK_SEED,
        "purity_target": PURITY,
        "calibrated_threshold": None if calibrated is None else calibrated.metadata.score_threshold,
        "calibration_error": fit_error,
        "held_out": held_out,
        "held_out_passing": passing,
        "target_met": met,
        "variants": rows,
    }
    return report
