"""The network stage's cost and quality under inference settings that trade one for the other.

On the 2048² patch of ``bench.scaling`` (its seed and size; quick: 512²),
after the chain's first pass, the shipped residual package finds the new
sources with its default settings and with each variant of `VARIANTS` (tiles
of the package's side exactly, ``fit_tiles=False``; fewer RPN proposals per
tile, ``proposals_per_tile``; the arithmetic of a GPU's autocast,
``precision``, whose CPU time means nothing).
Each is timed twice (the faster counts: this machine's run-to-run spread is
about 10%) and scored against the patch's truth:

* the missed sources: true sources of multi-band S/N >= 5 with no
  first-pass peak within 3 px (as in ``bench.second_pass``);
* a new source is on truth when a true source lies within 2 px, and it
  recovers that source when the source was missed; it is spurious when no
  true source lies within 2 px;
* recovered missed sources at the package's threshold, and, ranking the
  new sources by score, at the number of spurious ones the shipped settings
  let through at their threshold (and at half and three quarters of it):
  the same purity for every variant, so that a variant that merely moves
  along the curve is not counted as better or worse.

The same comparison runs on the crowded scene of ``bench.scaling``
(256², 1500 galaxies per arcmin²), where a tile holds hundreds of new
sources: a cap on proposals that costs nothing on the patch can bind there.

The figures say whether a faster setting loses sources; the package's
settings are not changed here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench import scaling
from bench.second_pass import MATCH_RADIUS, NEW_SOURCE_MIN_SNR, _multiband_snr

#: Patch the settings are compared on: `bench.scaling`'s at the side of its ratio targets.
PATCH = {"size": scaling.RATIO_SIZE, "seed": scaling.SEED}
QUICK_PATCH = {"size": 512, "seed": scaling.SEED}
#: A new source within this many pixels of a true source is on it.
ON_TRUTH_RADIUS = 2.0
#: Inference settings compared with the package's, by name: `InferenceConfig` fields.
VARIANTS = {
    "shipped": {},
    "tiles_512": {"fit_tiles": False},
    "proposals_500": {"proposals_per_tile": 500},
    "proposals_300": {"proposals_per_tile": 300},
    # A GPU's reduced precisions, emulated by the CPU's autocast: their scores, not their speed
    # (this CPU has no fast float16; a GPU's timing is bench.network's).
    "float16": {"precision": "float16"},
    "bfloat16": {"precision": "bfloat16"},
}
#: Shares of the shipped settings' spurious count at which recovery is compared.
SPURIOUS_SHARES = (0.5, 0.75, 1.0)
REPEATS = 2


def _first_pass(size: int, seed: int):
    from lsst.meas.extensions.residual.chain import run_first_pass
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    scene = simulate_scene(seed, SimulationConfig(height=size, width=size, depth="10yr"))
    start = time.perf_counter()
    first = run_first_pass(scene, deblend_config=DeblendConfig(show_progress=False))
    return scene, first, time.perf_counter() - start


def _missed(scene, first) -> np.ndarray:
    """Bool per true source: S/N >= 5 and no first-pass peak within `MATCH_RADIUS`."""
    from scipy.spatial import cKDTree

    peaks = first.detections.xy
    if len(peaks) == 0:
        far = np.ones(len(scene.truth), dtype=bool)
    else:
        distance, _ = cKDTree(peaks).query(scene.truth.xy)
        far = distance > MATCH_RADIUS
    return far & (_multiband_snr(scene) >= NEW_SOURCE_MIN_SNR)


def _score(scene, missed: np.ndarray, xy: np.ndarray, scores: np.ndarray) -> dict:
    """Per new source: whether it recovers a missed source (first hit only) and whether it is spurious."""
    from scipy.spatial import cKDTree

    order = np.argsort(-scores, kind="stable")
    xy, scores = xy[order], scores[order]
    if len(xy):
        distance, nearest = cKDTree(scene.truth.xy).query(xy)
    else:
        distance, nearest = np.zeros(0), np.zeros(0, dtype=int)
    on_truth = distance <= ON_TRUTH_RADIUS
    recovers = np.zeros(len(xy), dtype=bool)
    seen: set[int] = set()
    for k in np.flatnonzero(on_truth & missed[nearest] if len(xy) else []):
        if int(nearest[k]) not in seen:
            seen.add(int(nearest[k]))
            recovers[k] = True
    return {"scores": scores, "recovers": recovers, "spurious": ~on_truth}


def _recovered_at(scored: dict, spurious: int) -> int:
    """Missed sources recovered by the best-scoring new sources holding at most ``spurious`` spurious ones."""
    count = np.cumsum(scored["spurious"])
    last = int(np.searchsorted(count, spurious, side="right"))
    return int(scored["recovers"][:last].sum())


def _plot(curves: dict, path: Path, title: str = "Network settings on the bench.scaling patch") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, scored in curves.items():
        ax.plot(np.cumsum(scored["spurious"]), np.cumsum(scored["recovers"]), label=name, lw=1.2)
    ax.set_xlabel("spurious new sources (best-scoring first)")
    ax.set_ylabel("missed sources recovered")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _first_pass_crowded():
    """`bench.scaling`'s crowded scene (as ``simulate --seed S --size N --density D``) and its first pass."""
    from lsst.meas.extensions.residual.chain import run_first_pass
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    size = scaling.CROWDED["size"]
    config = SimulationConfig(
        height=size, width=size, depth="10yr", galaxy_density=scaling.CROWDED["density"]
    )
    scene = simulate_scene(scaling.CROWDED["seed"], config)
    start = time.perf_counter()
    first = run_first_pass(scene, deblend_config=DeblendConfig(show_progress=False))
    return scene, first, time.perf_counter() - start


def _compare(scene, first, first_seconds: float, detector, desc: str) -> dict:
    """Every variant of `VARIANTS` on one first pass: time, counts and recovery at equal spurious counts."""
    from lsst.meas.extensions.residual.chain import ChainConfig, find_new_sources_after
    from lsst.meas.extensions.residual.network import fitted_tile_size
    from lsst.meas.extensions.residual.network.inference_config import InferenceConfig
    from tqdm.auto import tqdm

    missed = _missed(scene, first)
    new_sources = ChainConfig().new_sources
    rows, curves = {}, {}
    for name, changes in tqdm(VARIANTS.items(), desc=desc, unit="setting"):
        inference = InferenceConfig(**changes)
        seconds = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            new = find_new_sources_after(scene, first, detector, inference, new_sources)
            seconds.append(time.perf_counter() - start)
        peaks = new.peaks
        scored = _score(scene, missed, new.xy[peaks], np.asarray(new.detections.table["score"])[peaks])
        curves[name] = scored
        settings = detector.settings(inference)
        side = (
            fitted_tile_size(scene.shape, settings.tile_size, settings.tile_overlap)
            if settings.fit_tiles
            else settings.tile_size
        )
        rows[name] = {
            "settings": settings.model_dump(
                include={"tile_size", "fit_tiles", "proposals_per_tile", "precision"}
            ),
            "tile_side": side,
            "seconds": round(min(seconds), 2),
            "new_sources": int(len(scored["scores"])),
            "recovered": int(scored["recovers"].sum()),
            "spurious": int(scored["spurious"].sum()),
        }
    reference = rows["shipped"]["spurious"]
    levels = [int(round(share * reference)) for share in SPURIOUS_SHARES]
    for name, row in rows.items():
        row["recovered_at_spurious"] = {str(level): _recovered_at(curves[name], level) for level in levels}
        row["seconds_over_shipped"] = round(row["seconds"] / rows["shipped"]["seconds"], 3)
        row["seconds_over_first_pass"] = round(row["seconds"] / first_seconds, 3)
    return {
        "first_pass_seconds": round(first_seconds, 2),
        "true_sources": len(scene.truth),
        "first_pass_peaks": len(first.detections.peaks),
        "missed_true_sources": int(missed.sum()),
        "spurious_levels": levels,
        "variants": rows,
        "curves": curves,
    }


def _print_table(result: dict) -> None:
    levels = result["spurious_levels"]
    header = "  ".join(f"at {level:>3}" for level in levels)
    columns = f"{'tile':>5}{'seconds':>8}{'/shipped':>9}{'/first':>8}{'new':>6}{'recov':>6}{'spur':>6}"
    print(f"  {'setting':<24}{columns}  {header}")
    for name, row in result["variants"].items():
        at = "  ".join(f"{row['recovered_at_spurious'][str(level)]:>6}" for level in levels)
        print(
            f"  {name:<24}{row['tile_side']:>5}{row['seconds']:>8.2f}{row['seconds_over_shipped']:>9.3f}"
            f"{row['seconds_over_first_pass']:>8.3f}{row['new_sources']:>6}{row['recovered']:>6}"
            f"{row['spurious']:>6}  {at}"
        )


def run(out_dir: Path, quick: bool = False) -> dict:
    from lsst.meas.extensions.residual.network import Detector
    from lsst.meas.extensions.residual.network.package import model_path

    out_dir.mkdir(parents=True, exist_ok=True)
    plan = QUICK_PATCH if quick else PATCH
    detector = Detector(model_path(None), "cpu")
    scene, first, first_seconds = _first_pass(plan["size"], plan["seed"])
    patch = _compare(scene, first, first_seconds, detector, "network settings")
    del scene, first
    crowded_scene, crowded_first, crowded_seconds = _first_pass_crowded()
    crowded = _compare(crowded_scene, crowded_first, crowded_seconds, detector, "network settings, crowded")
    _plot(patch.pop("curves"), out_dir / "network_settings.png")
    _plot(
        crowded.pop("curves"),
        out_dir / "network_settings_crowded.png",
        "Network settings on the bench.scaling crowded scene",
    )
    summary = {
        "size": plan["size"],
        "seed": plan["seed"],
        **patch,
        "crowded": {**scaling.CROWDED, **crowded},
    }
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2))
    print(
        f"network settings on the {plan['size']}² patch of bench.scaling "
        f"({patch['missed_true_sources']} true sources of S/N >= {NEW_SOURCE_MIN_SNR:g} missed by the first "
        "pass; first pass "
        f"{first_seconds:.1f} s):"
    )
    _print_table(patch)
    c = summary["crowded"]
    print(
        f"and on bench.scaling's crowded {c['size']}² scene (density {c['density']:g}, seed {c['seed']}: "
        f"{c['true_sources']} true sources, {c['first_pass_peaks']} first-pass peaks, "
        f"{c['missed_true_sources']} missed; first pass {crowded_seconds:.1f} s):"
    )
    _print_table(crowded)
    print(
        "  (recov: missed sources recovered at the package's threshold; at N: recovered by the best-scoring "
        "new sources holding at most N spurious ones)"
    )
    return summary
