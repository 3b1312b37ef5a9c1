"""Realistic patches: the chain on scenes with coadd artefacts and correlated noise (issue 10's "before").

Seeded six-band 10-year scenes of 512² (seeds from 2 000 000; quick: two of
256²) are simulated four ways, the same sources each time:

* ``clean``: no artefacts, white noise (what the network was trained on);
* ``artefacts``: `ArtefactConfig()`'s mix (saturated bright stars with bleed
  trails, spikes and wings; satellite trails; coverage edges and chip gaps;
  cosmic rays), each mask plane declared;
* ``correlated``: clean, with noise correlated by LSST's warping kernel
  (Lanczos-3 at a half-pixel shift: sums over many pixels have 1.6× the
  variance the plane implies) and the variance plane scaled as LSST's is;
* ``artefacts+correlated``: both.

The whole chain (``run_chain``, CPU) runs on each with every shipped
residual-mode package (`shipped_model_paths`: the default, and the earlier
ones still shipped). Reported per package and variant:

* **spurious new sources per scene**: network detections kept as new whose
  nearest true source (any flux, the added bright stars included) is farther
  than 3 px, and how many of them lie within 5 px of an artefact's pixels
  (the artefact truth) or in a bright star's zone;
* **recall of real missed sources**: true sources with multi-band S/N >= 5
  that no first-pass peak matches within 3 px, matched by a new source
  within 3 px; and the new sources the package classes as artefacts;
* **sources centred on pixels without data** (no usable band): first-pass
  peaks, new sources and final sources; the target is 0;
* **fluxes of sources touching masks vs truth**: true sources with i-band
  S/N > 10 matched (2 px) by a first-pass and by a final source whose i-band
  footprint has masked pixels (``masked_fraction`` > 0): median |relative
  conserved-flux error|, the share off by more than 50 %, the share flagged
  ``mostly_masked`` (NaN flux), and the largest measured / true ratio; the
  same for the sources that touch no mask, as the reference. Also the number
  of final i fluxes above twice the brightest true i flux of the sources not
  centred on pixels saturated in i (the issue's runaway-flux case; target 0).
  Of the fluxes off by more than 50 %, the share that carries a flag
  (``near_bright_star``; ``mostly_masked`` ones are NaN, not counted as off).

Issue 11's target: network v2's (the first other shipped package's) spurious
new sources per artefact scene at most a third of ``residual_ugrizy``'s,
at equal recall of the real missed sources. Both are compared at each
package's own threshold, and at equal recall: the network is also run once
at a score threshold of 0.05 on the same first pass (`find_new_sources`), and
network v2's threshold is lowered until its recall of the missed
sources reaches the old package's (the spurious rate read at that threshold).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

FIRST_SEED = 2_000_000
SCENE_SIZE = 512
QUICK_SIZE = 256
SPURIOUS_RADIUS = 3.0
ARTEFACT_RADIUS = 5.0
MATCH_RADIUS = 2.0
FLUX_SNR_CUT = 10.0
BAD_FLUX_ERROR = 0.5
MISSED_SNR = 5.0
#: Spurious new sources per artefact scene: the default package's at most this share of the old one's.
SPURIOUS_TARGET = 1 / 3
OLD_PACKAGE = "residual_ugrizy"
#: Score threshold of the network run that the equal-recall comparison reads its curves from.
SWEEP_FLOOR = 0.05
VARIANTS = ("clean", "artefacts", "correlated", "artefacts+correlated")
PASSES = ("first_pass", "final")


def _scene_plan(quick: bool) -> tuple[list[int], int]:
    """Seeds and scene side: four scenes of 512², or two of 256² for a quick run."""
    if quick:
        return [FIRST_SEED, FIRST_SEED + 1], QUICK_SIZE
    return [FIRST_SEED + k for k in range(4)], SCENE_SIZE


def simulation_config(variant: str, size: int):
    """The `SimulationConfig` of ``variant`` (see the module doc)."""
    from lsst.meas.extensions.residual.simulation import ArtefactConfig, NoiseKernelConfig, SimulationConfig

    warping_kernel = NoiseKernelConfig(kind="lanczos", order=3, shift=0.5)

    artefacts = {
        "clean": None,
        "artefacts": ArtefactConfig(),
        "correlated": ArtefactConfig.without_artefacts(correlated_noise_kernel=warping_kernel),
        "artefacts+correlated": ArtefactConfig(correlated_noise_kernel=warping_kernel),
    }[variant]
    return SimulationConfig(height=size, width=size, depth="10yr", artefacts=artefacts)


def _artefact_distance(scene) -> np.ndarray:
    """(H, W) distance (pixels) to the nearest artefact pixel of the truth (inf without artefacts)."""
    from scipy import ndimage

    pixels = np.zeros(scene.shape, dtype=bool)
    for footprint in [] if scene.artefacts is None else scene.artefacts["footprint"]:
        pixels[footprint.slices] |= footprint.mask
    if not pixels.any():
        return np.full(scene.shape, np.inf)
    return ndimage.distance_transform_edt(~pixels)


def _at(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of a (H, W) image at the pixels holding positions ``xy``."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    height, width = image.shape
    x = np.clip(np.rint(xy[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.rint(xy[:, 1]).astype(int), 0, height - 1)
    return image[y, x]


def _matched_fluxes(catalog, truth_xy, true_flux, bright, band) -> dict:
    """Per matched bright true source: relative error, measured/true, masked fraction and flag in ``band``."""
    from lsst.meas.extensions.residual.groundtruth.matching import match_positions

    xy = np.column_stack([catalog["x"], catalog["y"]]).reshape(-1, 2)
    truth_index, row = match_positions(truth_xy, xy, MATCH_RADIUS)
    keep = bright[truth_index]
    truth_index, row = truth_index[keep], row[keep]
    measured = np.asarray(catalog["conserved_flux"], dtype=np.float64)[row, band]
    return {
        "ratio": measured / true_flux[truth_index],
        "masked_fraction": np.asarray(catalog["masked_fraction"], dtype=np.float64)[row, band],
        "mostly_masked": np.asarray(catalog["mostly_masked"], dtype=bool)[row, band],
        "near_bright_star": np.asarray(catalog["near_bright_star"], dtype=bool)[row],
    }


def _sweep(scene, result, detector, truth_xy: np.ndarray, missed: np.ndarray) -> dict:
    """Scores of the new sources of a low-threshold network run on the same first pass: those of the
    spurious ones, and per missed true source the best score of a new source within the radius."""
    from lsst.meas.extensions.residual.chain.run import find_new_sources_after
    from lsst.meas.extensions.residual.network import InferenceConfig
    from scipy.spatial import cKDTree

    first = result.first_pass
    low = find_new_sources_after(scene, first, detector, InferenceConfig(score_threshold=SWEEP_FLOOR))
    first.deblend.release_model()
    xy = low.xy.reshape(-1, 2)[low.peaks]
    score = np.asarray(low.detections.table["score"], dtype=np.float64)[low.peaks]
    nearest = cKDTree(truth_xy).query(xy)[0] if len(xy) else np.zeros(0)
    best = np.full(int(missed.sum()), -np.inf)
    if len(xy):
        tree = cKDTree(xy)
        for k, index in enumerate(np.flatnonzero(missed)):
            near = tree.query_ball_point(truth_xy[index], SPURIOUS_RADIUS)
            if near:
                best[k] = float(score[near].max())
    return {"spurious_scores": score[nearest > SPURIOUS_RADIUS], "missed_best_scores": best}


def _at_threshold(runs: list[dict], threshold: float) -> tuple[float, float]:
    """(spurious new sources per scene, recall of the missed sources) at a score threshold."""
    spurious = sum(int(np.sum(r["sweep"]["spurious_scores"] >= threshold)) for r in runs) / len(runs)
    best = np.concatenate([r["sweep"]["missed_best_scores"] for r in runs])
    return spurious, float(np.mean(best >= threshold)) if len(best) else 0.0


def _one(seed: int, size: int, variant: str, detector) -> dict:
    from lsst.meas.extensions.residual.chain import ChainConfig, run_chain
    from lsst.meas.extensions.residual.detection.bright_stars import bright_star_zones
    from lsst.meas.extensions.residual.simulation import simulate_scene
    from scipy.spatial import cKDTree

    from bench.deblend import _truth_properties
    from bench.second_pass import _multiband_snr

    scene = simulate_scene(seed, simulation_config(variant, size))
    start = time.perf_counter()
    result = run_chain(scene, detector, ChainConfig())
    seconds = time.perf_counter() - start
    props = _truth_properties(scene)
    band = props["band"]
    truth_xy = scene.truth.xy
    new_xy = result.new_sources.xy.reshape(-1, 2)
    nearest = cKDTree(truth_xy).query(new_xy)[0] if len(new_xy) else np.zeros(0)
    # Detections classed as artefacts are not new sources (they never reach the second pass).
    spurious = (nearest > SPURIOUS_RADIUS) & result.new_sources.peaks
    config = ChainConfig().deblend
    zone = bright_star_zones(scene, config.bright_star_zone_factor, config.bright_star_zone_min_radius)
    near_artefact = (_at(_artefact_distance(scene), new_xy) <= ARTEFACT_RADIUS) | _at(zone, new_xy)
    no_data = ~scene.has_data()
    peaks = result.first_pass.detections.peaks
    # Real missed sources: S/N >= 5, no first-pass peak within the radius; found if a new one is.
    peak_xy = np.column_stack([peaks["x"], peaks["y"]]).reshape(-1, 2)
    missed = (_multiband_snr(scene) >= MISSED_SNR) & (cKDTree(peak_xy).query(truth_xy)[0] > SPURIOUS_RADIUS)
    kept = result.new_sources.peaks
    found = np.zeros(len(truth_xy), dtype=bool)
    if kept.any():
        found = cKDTree(new_xy[kept]).query(truth_xy)[0] <= SPURIOUS_RADIUS
    sweep = _sweep(scene, result, detector, truth_xy, missed)
    final = result.second_pass.catalog
    bright = props["snr"] > FLUX_SNR_CUT
    # Stars saturated in i are not measured there: the reference is the brightest true source that is not.
    saturated = scene.plane("SAT")
    unsaturated = np.ones(len(truth_xy), dtype=bool)
    if saturated is not None:
        unsaturated = ~_at(saturated[band], truth_xy)
    brightest = float(np.max(props["flux"][unsaturated]))
    return {
        "seed": seed,
        "variant": variant,
        "seconds": seconds,
        "n_true": len(scene.truth),
        "n_first_pass": len(peaks),
        "n_new": len(new_xy),
        "n_spurious": int(spurious.sum()),
        "n_spurious_near_artefacts": int((spurious & near_artefact).sum()),
        "n_classed_artefact": int((~result.new_sources.peaks).sum()),
        "n_missed": int(missed.sum()),
        "n_missed_found": int((missed & found).sum()),
        "sweep": sweep,
        "n_dropped_on_masked_pixels": int(result.new_sources.n_masked),
        "no_data_fraction": float(no_data.mean()),
        "centred_without_data": {
            "first_pass_peaks": int(_at(no_data, np.column_stack([peaks["x"], peaks["y"]])).sum()),
            "new_sources": int(_at(no_data, new_xy).sum()),
            "final_sources": int(_at(no_data, np.column_stack([final["x"], final["y"]])).sum()),
        },
        "runaway_fluxes": int(np.sum(np.asarray(final["conserved_flux"])[:, band] > 2 * brightest)),
        "fluxes": {
            "first_pass": _matched_fluxes(
                result.first_pass.deblend.catalog, truth_xy, props["flux"], bright, band
            ),
            "final": _matched_fluxes(final, truth_xy, props["flux"], bright, band),
        },
    }


def _flux_summary(runs: list[dict], which: str, touching: bool) -> dict:
    parts = [r["fluxes"][which] for r in runs]
    ratio = np.concatenate([p["ratio"] for p in parts])
    masked = np.concatenate([p["masked_fraction"] for p in parts])
    flagged = np.concatenate([p["mostly_masked"] for p in parts])
    near_star = np.concatenate([p["near_bright_star"] for p in parts])
    keep = (masked > 0) if touching else (masked == 0)
    ratio, flagged, near_star = ratio[keep], flagged[keep], near_star[keep]
    finite = np.isfinite(ratio)
    measured, near_star = ratio[finite], near_star[finite]
    error = np.abs(measured - 1)
    off = error > BAD_FLUX_ERROR
    return {
        "n": int(keep.sum()),
        "median_abs_error": round(float(np.median(error)), 4) if len(error) else None,
        "share_error_above_50pc": round(float(np.mean(off)), 3) if len(error) else None,
        "share_of_those_near_bright_star": round(float(np.mean(near_star[off])), 3) if off.any() else None,
        "share_flagged_mostly_masked": round(float(np.mean(flagged)), 3) if len(flagged) else None,
        "max_measured_over_true": round(float(np.max(measured)), 3) if len(measured) else None,
    }


def summarise(runs: list[dict]) -> dict:
    """Per-variant figures over the scenes (the module doc's list)."""
    table = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        n = len(mine)

        def per_scene(key: str, mine=mine, n=n) -> float:
            return round(sum(r[key] for r in mine) / n, 2)

        table[variant] = {
            "scenes": n,
            "seconds_per_scene": round(per_scene("seconds"), 1),
            "spurious_new_per_scene": per_scene("n_spurious"),
            "spurious_near_artefacts_per_scene": per_scene("n_spurious_near_artefacts"),
            "new_per_scene": per_scene("n_new"),
            "classed_artefact_per_scene": per_scene("n_classed_artefact"),
            "missed_recall": round(
                sum(r["n_missed_found"] for r in mine) / max(sum(r["n_missed"] for r in mine), 1), 3
            ),
            "new_dropped_on_masked_pixels": sum(r["n_dropped_on_masked_pixels"] for r in mine),
            "no_data_fraction": round(float(np.mean([r["no_data_fraction"] for r in mine])), 4),
            "centred_without_data": {
                key: sum(r["centred_without_data"][key] for r in mine)
                for key in ("first_pass_peaks", "new_sources", "final_sources")
            },
            "runaway_fluxes": sum(r["runaway_fluxes"] for r in mine),
            "fluxes_touching_masks": {which: _flux_summary(mine, which, True) for which in PASSES},
            "fluxes_unmasked": {which: _flux_summary(mine, which, False) for which in PASSES},
        }
    return table


def _plot(runs: list[dict], table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    positions = np.arange(len(VARIANTS))
    near = [table[v]["spurious_near_artefacts_per_scene"] for v in VARIANTS]
    total = [table[v]["spurious_new_per_scene"] for v in VARIANTS]
    ax.bar(positions, np.subtract(total, near), label="elsewhere")
    ax.bar(positions, near, bottom=np.subtract(total, near), label="near artefacts / bright stars")
    ax.set_xticks(positions, VARIANTS, rotation=15)
    ax.set_ylabel("spurious new sources per scene")
    ax.legend(fontsize=8)
    ax.set_title(f"new detections > {SPURIOUS_RADIUS:g} px from any true source")
    for ax, which in zip(axes[1:], PASSES, strict=True):
        for variant, color in zip(VARIANTS, ("C0", "C1", "C2", "C3"), strict=True):
            parts = [r["fluxes"][which] for r in runs if r["variant"] == variant]
            masked = np.concatenate([p["masked_fraction"] for p in parts])
            ratio = np.concatenate([p["ratio"] for p in parts])
            touching = masked > 0
            ax.scatter(masked[touching], ratio[touching], s=10, color=color, label=variant, alpha=0.7)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("i-band masked fraction of the footprint")
        ax.set_ylabel("measured / true i conserved flux")
        ax.set_title(f"{which.replace('_', ' ')}: sources touching masks (S/N > {FLUX_SNR_CUT:g})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print(table: dict) -> None:
    print(
        f"{'variant':>22} {'s/scene':>7} {'new':>5} {'spurious':>8} {'near art.':>9} {'artefact':>8} "
        f"{'missed rec.':>11} "
        f"{'no-data centres':>15} {'runaway':>7} {'touching: n':>11} {'|err| 1st':>9} {'|err| fin':>9} "
        f"{'>50% fin':>8} {'flagged':>7} {'unmasked |err|':>14}"
    )
    for variant, row in table.items():
        centres = row["centred_without_data"]
        touching, unmasked = row["fluxes_touching_masks"], row["fluxes_unmasked"]
        centred = f"{centres['first_pass_peaks']}/{centres['new_sources']}/{centres['final_sources']}"
        print(
            f"{variant:>22} {row['seconds_per_scene']:>7} {row['new_per_scene']:>5} "
            f"{row['spurious_new_per_scene']:>8} {row['spurious_near_artefacts_per_scene']:>9} "
            f"{row['classed_artefact_per_scene']:>8} {row['missed_recall']:>11} {centred:>15} "
            f"{row['runaway_fluxes']:>7} {touching['final']['n']:>11} "
            f"{str(touching['first_pass']['median_abs_error']):>9} "
            f"{str(touching['final']['median_abs_error']):>9} "
            f"{str(touching['final']['share_error_above_50pc']):>8} "
            f"{str(touching['final']['share_flagged_mostly_masked']):>7} "
            f"{str(unmasked['final']['median_abs_error']):>14}"
        )
    print(
        "(artefact: detections classed as artefacts, per scene; missed rec.: recall of the S/N >= 5 "
        "sources without a first-pass peak; no-data centres: first-pass peaks / new sources / final "
        "sources, target 0/0/0)"
    )


def _comparison(
    tables: dict[str, dict], runs: dict[str, list[dict]], thresholds: dict[str, float]
) -> dict | None:
    """The default package's spurious rate and recall on artefact scenes against the old package's, at
    their own thresholds and at equal recall."""
    names = [name for name in tables if name != OLD_PACKAGE][:1]
    if OLD_PACKAGE not in tables or not names:
        return None
    default, old = tables[names[0]], tables[OLD_PACKAGE]
    rows = {}
    for variant in ("artefacts", "artefacts+correlated"):
        mine = {name: [r for r in runs[name] if r["variant"] == variant] for name in (names[0], OLD_PACKAGE)}
        old_spurious, old_recall = _at_threshold(mine[OLD_PACKAGE], thresholds[OLD_PACKAGE])
        # The highest threshold of the default package whose recall reaches the old package's.
        equal = None
        for threshold in np.arange(0.95, SWEEP_FLOOR - 1e-9, -0.01):
            spurious, recall = _at_threshold(mine[names[0]], float(threshold))
            if recall >= old_recall:
                equal = {
                    "threshold": round(float(threshold), 2),
                    "spurious_per_scene": spurious,
                    "recall": round(recall, 3),
                }
                break
        ratio = (
            default[variant]["spurious_new_per_scene"] / old[variant]["spurious_new_per_scene"]
            if old[variant]["spurious_new_per_scene"]
            else None
        )
        equal_ratio = (
            None
            if equal is None or not old_spurious
            else round(equal["spurious_per_scene"] / old_spurious, 3)
        )
        rows[variant] = {
            "at_equal_recall": {
                OLD_PACKAGE: {
                    "threshold": thresholds[OLD_PACKAGE],
                    "spurious_per_scene": old_spurious,
                    "recall": round(old_recall, 3),
                },
                names[0]: equal,
                "spurious_ratio": equal_ratio,
                "target_met": equal_ratio is not None and equal_ratio <= SPURIOUS_TARGET,
            },
            "spurious_ratio": None if ratio is None else round(ratio, 3),
            "missed_recall": {
                names[0]: default[variant]["missed_recall"],
                OLD_PACKAGE: old[variant]["missed_recall"],
            },
            "target_met": ratio is not None
            and ratio <= SPURIOUS_TARGET
            and default[variant]["missed_recall"] >= old[variant]["missed_recall"] - 0.02,
        }
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    import logging

    from lsst.meas.extensions.residual.network import Detector, shipped_model_paths
    from tqdm.auto import tqdm

    logging.getLogger("lsst.meas.extensions.residual").setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds, size = _scene_plan(quick)
    packages = shipped_model_paths("residual")
    tables, per_scene, all_runs, thresholds = {}, {}, {}, {}
    for name, path in packages.items():
        detector = Detector(path, "cpu")
        thresholds[name] = detector.metadata.score_threshold
        runs = []
        plan = [(seed, variant) for seed in seeds for variant in VARIANTS]
        for seed, variant in tqdm(plan, desc=f"artefact scenes, {name}", unit="run"):
            runs.append(_one(seed, size, variant, detector))
        tables[name] = summarise(runs)
        per_scene[name] = [{k: v for k, v in r.items() if k not in ("fluxes", "sweep")} for r in runs]
        all_runs[name] = runs
        print(f"package {name}:")
        _print(tables[name])
        _plot(runs, tables[name], out_dir / f"artefacts_{name}.png")
    comparison = _comparison(tables, all_runs, thresholds)
    if comparison is not None:
        default = next(name for name in packages if name != OLD_PACKAGE)
        for variant, row in comparison.items():
            recall = row["missed_recall"]
            print(
                f"{variant}, own thresholds: spurious new sources {default} / {OLD_PACKAGE} = "
                f"{row['spurious_ratio']}, recall of missed sources {recall[default]} "
                f"vs {recall[OLD_PACKAGE]}"
            )
            equal = row["at_equal_recall"]
            old, mine = equal[OLD_PACKAGE], equal[default]
            if mine is None:
                verdict = f"{default} never reaches that recall at a threshold >= {SWEEP_FLOOR}: NOT met"
            else:
                verdict = (
                    f"{default} at {mine['threshold']} (recall {mine['recall']}): spurious per scene "
                    f"{mine['spurious_per_scene']:.2f} vs {old['spurious_per_scene']:.2f}, ratio "
                    f"{equal['spurious_ratio']} (target <= {SPURIOUS_TARGET:.3f}): "
                    f"{'met' if equal['target_met'] else 'NOT met'}"
                )
            print(f"  at equal recall ({OLD_PACKAGE} {old['recall']} at {old['threshold']}): {verdict}")
    report = {
        "scenes": {"seeds": seeds, "size": size, "depth": "10yr"},
        "packages": {name: str(path.name) for name, path in packages.items()},
        "variants": tables,
        "comparison": comparison,
        "per_scene": per_scene,
    }
    (out_dir / "artefacts.json").write_text(json.dumps(report, indent=2))
    return report
