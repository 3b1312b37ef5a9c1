"""Band subsets: the shipped residual-mode package that takes them (network v2) on patches that lack bands.

Held-out scenes as the package's training made them (seeds from 1 400 000,
256²) are simulated in all six bands and cut to each subset of
`SUBSETS` (ugrizy, grizy, griz, gri, ri, i) before the first pass, so every
subset sees the same sources; the first pass, the labels' S/N and the
network then see only the subset (`EvaluationConfig.bands`). Reported per
subset: the recall of missed sources at purity 0.9 (the targets are the
sources recoverable in those bands that the first pass missed there), the
number of targets, and the drop from ugrizy. Issue 11's targets: at most 3
points from ugrizy to grizy and 10 to gri. Also reported: recall and purity
at the package's own threshold. Without a shipped package taking band
subsets, the default one is reported on ugrizy only.
"""

from __future__ import annotations

import json
from pathlib import Path

import bench

SEED = 1_400_000
SUBSETS = ("ugrizy", "grizy", "griz", "gri", "ri", "i")
#: Largest drop of the recall at purity 0.9 from ugrizy (points), by subset.
DROP_TARGETS = {"grizy": 3.0, "gri": 10.0}


def _plan(quick: bool) -> dict:
    return {"scenes": 2, "size": 128} if quick else {"scenes": 16, "size": 256}


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    recall = [rows[n]["recall_at_purity_0.9"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar(names, recall, color="tab:blue")
    for x, value in enumerate(recall):
        ax.text(x, value + 0.01, f"{value:.3f}", ha="center", fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_xlabel("bands of the patch")
    ax.set_ylabel("recall of missed sources at purity 0.9")
    ax.set_title("Residual-mode package on band subsets (same sources)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False) -> dict:
    import logging

    from lsst.meas.extensions.residual.evaluation.evaluate import EvaluationConfig, evaluate_package
    from lsst.meas.extensions.residual.network import (
        band_subset_model_path,
        default_model_path,
        load_model_package,
    )

    logging.getLogger("lsst.meas.extensions.residual").setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(quick)
    package = load_model_package(band_subset_model_path("residual") or default_model_path("residual"))
    subsets = SUBSETS if package.metadata.band_subsets else SUBSETS[:1]
    rows = {}
    for bands in subsets:
        config = EvaluationConfig(
            n_scenes=plan["scenes"],
            seed=SEED,
            scene_size=plan["size"],
            baselines=False,
            device="cpu",
            bands=bands,
        )
        summary = evaluate_package(package, config, out_dir / bands, progress=False, workers=bench.WORKERS)
        rows[bands] = {
            "recall_at_purity_0.9": summary["network_recall_at_precision_0.9"],
            "n_targets": summary["n_targets"],
            "recall_at_operating_threshold": summary["network_at_operating_threshold"]["recall"],
            "purity_at_operating_threshold": summary["network_at_operating_threshold"]["precision"],
        }
    full = rows["ugrizy"]["recall_at_purity_0.9"]
    checks = {}
    for bands, row in rows.items():
        recall = row["recall_at_purity_0.9"]
        row["drop_points"] = None if recall is None or full is None else round(100.0 * (full - recall), 2)
        if bands in DROP_TARGETS:
            checks[bands] = row["drop_points"] is not None and row["drop_points"] <= DROP_TARGETS[bands]
    print(f"package {package.metadata.name} (band subsets: {package.metadata.band_subsets})")
    print(
        f"{'bands':>7} {'targets':>8} {'recall@0.9':>11} {'drop (pts)':>11} "
        f"{'recall@thr':>10} {'purity@thr':>10}"
    )
    for bands, row in rows.items():
        recall = row["recall_at_purity_0.9"]
        drop = row["drop_points"]
        print(
            f"{bands:>7} {row['n_targets']:>8} {'-' if recall is None else f'{recall:.3f}':>11} "
            f"{'-' if drop is None else f'{drop:.1f}':>11} {row['recall_at_operating_threshold']:>10.3f} "
            f"{row['purity_at_operating_threshold']:>10.3f}"
        )
    if not package.metadata.band_subsets:
        print("The package takes no band subsets: it needs all of u, g, r, i, z, y.")
    for bands, ok in checks.items():
        print(f"drop to {bands} <= {DROP_TARGETS[bands]:g} points: {'met' if ok else 'NOT met'}")
    _plot(rows, out_dir / "band_subsets.png")
    report = {
        "package": package.metadata.name,
        "band_subsets": package.metadata.band_subsets,
        "plan": plan,
        "seed": SEED,
        "subsets": rows,
        "drop_targets_points": DROP_TARGETS,
        "checks": checks,
    }
    (out_dir / "band_subsets.json").write_text(json.dumps(report, indent=2))
    return report
