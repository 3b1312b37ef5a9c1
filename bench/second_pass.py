"""The second deblending pass: the local warm re-fit against a whole-blend warm and a cold re-fit.

On held-out simulated scenes (256x256, six bands, 10-year depth, seeds from
1 000 000) the first pass deblends the peaks of `detect_peaks`. The second
pass is given, as its new peaks, the true positions of the sources the first
pass missed (true sources with multi-band S/N >= 5 that no first-pass peak
matches within 3 px), so that this benchmark measures the deblender, not the
network. It runs three ways on the same inputs:

* warm (the default: ``second_pass_start="warm"``,
  ``second_pass_refit="local"``): the existing sources of a blend that gained
  a source start from their first-pass components, only the new ones are
  initialised, and only the sources near a new one are fitted again, on the
  window they cover (`local_refit`);
* warm_whole_blend (``second_pass_refit="blend"``): the same start, every
  source of the blend fitted again;
* cold (``"cold"``, the baseline measured in the same run: every source of
  those blends initialised from the image again, as before the warm start).

The same comparison runs on the 2048² patch of ``bench.scaling`` (its seed
and size; quick: 512²), with the shipped residual network's new sources as
the new peaks (the chain's own, artefacts left out): the case the default
exists for, with hundreds of first-pass sources in re-fitted blends to
measure the photometry on (new-source flux errors are not measured there,
as those peaks are not truth).

Reported, for each, over the first-pass blends that gained a source
("re-fitted"):

* second-pass wall time (and its fitting part) of each variant, and against
  the first pass;
* optimizer iterations per re-fitted blend;
* median reduced chi^2 of the re-fitted blends (residual of the patch model
  inside the footprint): first pass and each variant;
* median |relative i-band conserved-flux error| against truth for the true
  sources of those blends with i-band S/N > 20: the sources the first pass
  had (first pass vs each variant: how much the second pass improves the
  photometry of blends that gained a source) and the new ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench import scaling

FIRST_SEED = 1_000_000
SCENE_SIZE = 256
NEW_SOURCE_MIN_SNR = 5.0
MATCH_RADIUS = 3.0
FLUX_SNR_CUT = 20.0
#: The patch whose new peaks are the shipped network's: `bench.scaling`'s at the size its ratio
#: targets are checked at (quick: 512²).
PATCH = {"size": scaling.RATIO_SIZE, "seed": scaling.SEED}
QUICK_PATCH = {"size": 512, "seed": scaling.SEED}
#: The second-pass variants compared, by name: changes to the default `DeblendConfig`.
VARIANTS = {
    "warm": {},
    "warm_whole_blend": {"second_pass_refit": "blend"},
    "cold": {"second_pass_start": "cold"},
}


def _scene_plan(quick: bool) -> tuple[list[int], int]:
    """Seeds and scene size: 8 scenes of 256^2, or 2 for a quick run."""
    if quick:
        return [FIRST_SEED, FIRST_SEED + 1], SCENE_SIZE
    return [FIRST_SEED + k for k in range(8)], SCENE_SIZE


def _multiband_snr(scene) -> np.ndarray:
    """Optimal multi-band S/N of each true source (its noiseless image against the variance)."""
    values = []
    for index in range(len(scene.truth)):
        stamp, (sy, sx) = scene.truth.isolated_image(index, scene.shape)
        values.append(np.sqrt(np.sum(stamp**2 / scene.variance[:, sy, sx])))
    return np.array(values)


def _per_blend(catalog, blend_ids: np.ndarray, column: str) -> np.ndarray:
    """One value of a per-blend catalog column for each of ``blend_ids``."""
    parents = np.asarray(catalog["parent_id"])
    first_row = {int(p): k for k, p in reversed(list(enumerate(parents)))}
    return np.array([catalog[column][first_row[int(b)]] for b in blend_ids], dtype=np.float64)


def _flux_errors(catalog, peak_ids: np.ndarray, true_flux: np.ndarray, band: int) -> np.ndarray:
    """Relative conserved-flux error in ``band`` of the rows with ``peak_ids``."""
    row_of = {int(p): k for k, p in enumerate(catalog["peak_id"])}
    flux = np.array([catalog["conserved_flux"][row_of[int(p)]][band] for p in peak_ids], dtype=np.float64)
    return (flux - true_flux) / true_flux


def _one_scene(seed: int, size: int) -> dict:
    """A held-out scene whose new peaks are the true sources the first pass missed."""
    from lsst.meas.extensions.residual.chain import run_first_pass
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.groundtruth.matching import match_positions
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    scene = simulate_scene(seed, SimulationConfig(height=size, width=size, depth="10yr"))
    start = time.perf_counter()
    first = run_first_pass(scene, deblend_config=DeblendConfig(show_progress=False))
    first_seconds = time.perf_counter() - start
    peaks = first.detections.peaks
    peak_xy = np.column_stack([peaks["x"], peaks["y"]]) if len(peaks) else np.zeros((0, 2))
    truth_index, _ = match_positions(scene.truth.xy, peak_xy, MATCH_RADIUS)
    snr = _multiband_snr(scene)
    missed = np.setdiff1d(np.arange(len(scene.truth)), truth_index)
    missed = missed[snr[missed] >= NEW_SOURCE_MIN_SNR]
    next_id = int(np.max(peaks["id"])) + 1 if len(peaks) else 1
    new_ids = next_id + np.arange(len(missed), dtype=np.int64)
    result = _compare_variants(scene, first, scene.truth.xy[missed], new_ids, missed)
    return {"seed": seed, "first_pass_seconds": first_seconds, **result}


def _patch_with_network(size: int, seed: int) -> dict:
    """The scaling benchmark's patch, its new peaks the shipped network's new sources."""
    from lsst.meas.extensions.residual.chain import ChainConfig, find_new_sources_after, run_first_pass
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.network import Detector
    from lsst.meas.extensions.residual.network.package import model_path
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    scene = simulate_scene(seed, SimulationConfig(height=size, width=size, depth="10yr"))
    start = time.perf_counter()
    first = run_first_pass(scene, deblend_config=DeblendConfig(show_progress=False))
    first_seconds = time.perf_counter() - start
    new = find_new_sources_after(
        scene, first, Detector(model_path(None), "cpu"), None, ChainConfig().new_sources
    )
    first.deblend.release_model()
    result = _compare_variants(scene, first, new.xy[new.peaks], new.ids[new.peaks], None)
    return {"seed": seed, "size": size, "first_pass_seconds": first_seconds, **result}


def _compare_variants(scene, first, new_xy: np.ndarray, new_ids: np.ndarray, new_truth) -> dict:
    """Each second-pass variant on the same first pass and new peaks; the re-fitted blends' figures.

    ``new_truth``: index in the truth of each new peak (None: the new peaks are not truth, e.g.
    the network's, and the new sources' flux errors are not measured).
    """
    from lsst.meas.extensions.residual.deblending import DeblendConfig, deblend_with_new_peaks
    from lsst.meas.extensions.residual.groundtruth.matching import match_positions

    from bench.deblend import _truth_properties

    props = _truth_properties(scene)
    band = props["band"]
    config = DeblendConfig(show_progress=False)
    detections, first_result = first.detections, first.deblend
    peaks = detections.peaks
    peak_xy = np.column_stack([peaks["x"], peaks["y"]]) if len(peaks) else np.zeros((0, 2))
    truth_index, peak_index = match_positions(scene.truth.xy, peak_xy, MATCH_RADIUS)

    runs = {}
    for start_mode, changes in VARIANTS.items():
        begin = time.perf_counter()
        runs[start_mode] = deblend_with_new_peaks(
            scene,
            detections,
            first_result.catalog,
            first_result.model_data,
            new_xy,
            config.replace(**changes),
            new_peak_ids=new_ids,
        )
        runs[start_mode].timing["wall"] = time.perf_counter() - begin

    # Re-fitted blends: first-pass footprints that gained a source (new footprints have no first pass).
    new_parents = np.asarray(runs["warm"].detections.peaks["footprint_id"])[len(peaks) :]
    refitted = np.intersect1d(new_parents, np.asarray(first_result.catalog["parent_id"]))

    # True sources of those blends bright enough for photometry: those the first pass had, and the new.
    bright = props["snr"] > FLUX_SNR_CUT
    keep = bright[truth_index] & np.isin(np.asarray(peaks["footprint_id"])[peak_index], refitted)
    existing_truth, existing_peaks = truth_index[keep], np.asarray(peaks["id"])[peak_index][keep]
    if new_truth is None:
        new_truth, new_peaks = np.zeros(0, dtype=int), np.zeros(0, dtype=np.int64)
    else:
        keep = bright[new_truth] & np.isin(new_parents, refitted)
        new_truth, new_peaks = new_truth[keep], new_ids[keep]

    result = {
        "n_true_sources": len(scene.truth),
        "n_first_pass_peaks": len(peaks),
        "n_new_peaks": len(new_xy),
        "n_refitted_blends": len(refitted),
        "snr_existing": props["snr"][existing_truth],
        "snr_new": props["snr"][new_truth],
        "chi2": {"first_pass": _per_blend(first_result.catalog, refitted, "blend_reduced_chi2")},
        "flux_error_existing": {
            "first_pass": _flux_errors(
                first_result.catalog, existing_peaks, props["flux"][existing_truth], band
            )
        },
        "flux_error_new": {},
        "seconds": {},
        "fit_seconds": {},
        "iterations": {},
        "converged": {},
    }
    for start_mode, second in runs.items():
        catalog = second.catalog
        result["seconds"][start_mode] = second.timing["wall"]
        result["fit_seconds"][start_mode] = second.timing["fit"]
        result["iterations"][start_mode] = _per_blend(catalog, refitted, "n_iter")
        result["converged"][start_mode] = _per_blend(catalog, refitted, "converged")
        result["chi2"][start_mode] = _per_blend(catalog, refitted, "blend_reduced_chi2")
        result["flux_error_existing"][start_mode] = _flux_errors(
            catalog, existing_peaks, props["flux"][existing_truth], band
        )
        result["flux_error_new"][start_mode] = _flux_errors(
            catalog, new_peaks, props["flux"][new_truth], band
        )
    return result


def _pooled(scenes: list[dict], key: str, name: str) -> np.ndarray:
    return np.concatenate([s[key][name] for s in scenes]) if scenes else np.zeros(0)


def _median(values: np.ndarray, absolute: bool = False) -> float | None:
    values = np.abs(values) if absolute else values
    return round(float(np.median(values)), 4) if len(values) else None


def _cell(value: float | None, width: int, digits: int) -> str:
    """``value`` right-aligned in ``width`` with ``digits`` decimals; a dash where there is none."""
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def _mean(values: np.ndarray) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _plot(scenes: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    warm_iter, cold_iter = _pooled(scenes, "iterations", "warm"), _pooled(scenes, "iterations", "cold")
    ax = axes[0]
    ax.scatter(cold_iter, warm_iter, s=14)
    top = max(float(np.max(cold_iter, initial=1)), float(np.max(warm_iter, initial=1)))
    ax.plot([1, top], [1, top], "k-", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cold re-fit iterations")
    ax.set_ylabel("warm re-fit iterations")
    ax.set_title(f"per re-fitted blend (medians {np.median(warm_iter):g} vs {np.median(cold_iter):g})")

    ax = axes[1]
    first = _pooled(scenes, "chi2", "first_pass")
    for name, marker in (("warm", "o"), ("warm_whole_blend", "s"), ("cold", "^")):
        values = _pooled(scenes, "chi2", name)
        ax.scatter(first, values, s=14, marker=marker, label=f"{name} (median {np.median(values):.3f})")
    low, high = float(np.min(first, initial=1)), float(np.max(first, initial=1))
    ax.plot([low, high], [low, high], "k-", lw=0.5)
    ax.set_xlabel(f"first-pass reduced chi2 (median {np.median(first):.3f})")
    ax.set_ylabel("second-pass reduced chi2")
    ax.set_title("re-fitted blends")
    ax.legend(fontsize=8)

    ax = axes[2]
    snr = np.concatenate([s["snr_existing"] for s in scenes])
    for name, marker in (("first_pass", "x"), ("warm", "o"), ("warm_whole_blend", "s"), ("cold", "^")):
        errors = _pooled(scenes, "flux_error_existing", name)
        label = f"{name} (median |err| {np.median(np.abs(errors)):.3f})" if len(errors) else name
        ax.scatter(snr, errors, s=14, marker=marker, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("true i-band S/N")
    ax.set_ylabel("relative conserved i-band flux error")
    ax.set_title(f"first-pass sources of re-fitted blends, S/N > {FLUX_SNR_CUT:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figures(cases: list[dict]) -> dict:
    """Times, iterations, χ² and flux errors of each variant, pooled over ``cases``."""

    def total(key: str, name: str) -> float:
        return round(float(sum(s[key][name] for s in cases)), 2)

    summary = {
        "n_new_peaks": int(sum(s["n_new_peaks"] for s in cases)),
        "n_refitted_blends": int(sum(s["n_refitted_blends"] for s in cases)),
        "first_pass_seconds": round(float(sum(s["first_pass_seconds"] for s in cases)), 2),
        "second_pass_seconds": {name: total("seconds", name) for name in VARIANTS},
        "second_pass_fit_seconds": {name: total("fit_seconds", name) for name in VARIANTS},
        "iterations_per_refitted_blend": {
            name: {
                "median": _median(_pooled(cases, "iterations", name)),
                "total": int(_pooled(cases, "iterations", name).sum()),
                "converged_fraction": _mean(_pooled(cases, "converged", name)),
            }
            for name in VARIANTS
        },
        "median_reduced_chi2_refitted_blends": {
            name: _median(_pooled(cases, "chi2", name)) for name in ("first_pass", *VARIANTS)
        },
        "conserved_flux_existing_sources": {
            "n": int(len(_pooled(cases, "flux_error_existing", "first_pass"))),
            **{
                f"{name}_median_abs_rel_error": _median(_pooled(cases, "flux_error_existing", name), True)
                for name in ("first_pass", *VARIANTS)
            },
        },
        "conserved_flux_new_sources": {
            "n": int(len(_pooled(cases, "flux_error_new", "warm"))),
            **{
                f"{name}_median_abs_rel_error": _median(_pooled(cases, "flux_error_new", name), True)
                for name in VARIANTS
            },
        },
    }
    seconds, iterations = summary["second_pass_seconds"], summary["iterations_per_refitted_blend"]
    chi2, existing = (
        summary["median_reduced_chi2_refitted_blends"],
        summary["conserved_flux_existing_sources"],
    )
    summary["ratios"] = {
        "warm_over_cold_seconds": _ratio(seconds["warm"], seconds["cold"]),
        "warm_over_cold_iterations": _ratio(iterations["warm"]["total"], iterations["cold"]["total"]),
        "warm_over_cold_chi2": _ratio(chi2["warm"], chi2["cold"]),
        "warm_over_first_pass_seconds": _ratio(seconds["warm"], summary["first_pass_seconds"]),
        "cold_over_first_pass_seconds": _ratio(seconds["cold"], summary["first_pass_seconds"]),
        "existing_flux_error_warm_over_first_pass": _ratio(
            existing["warm_median_abs_rel_error"], existing["first_pass_median_abs_rel_error"]
        ),
        "existing_flux_error_warm_over_cold": _ratio(
            existing["warm_median_abs_rel_error"], existing["cold_median_abs_rel_error"]
        ),
        "warm_over_whole_blend_seconds": _ratio(seconds["warm"], seconds["warm_whole_blend"]),
        "warm_over_whole_blend_chi2": _ratio(chi2["warm"], chi2["warm_whole_blend"]),
    }
    return summary


def _print_figures(title: str, summary: dict) -> None:
    seconds, iterations = summary["second_pass_seconds"], summary["iterations_per_refitted_blend"]
    chi2 = summary["median_reduced_chi2_refitted_blends"]
    existing, new = summary["conserved_flux_existing_sources"], summary["conserved_flux_new_sources"]
    r = summary["ratios"]
    print(
        f"{title} ({summary['n_new_peaks']} new peaks, {summary['n_refitted_blends']} re-fitted blends), "
        f"first pass {summary['first_pass_seconds']} s:"
    )
    print(
        f"  {'variant':<18} {'seconds':>8} {'/first':>7} {'iterations':>10} {'chi2':>7} "
        f"{'flux err':>9} {'new err':>8}"
    )
    print(
        f"  {'first_pass':<18} {'':>8} {'':>7} {'':>10} {_cell(chi2['first_pass'], 7, 4)} "
        f"{_cell(existing['first_pass_median_abs_rel_error'], 9, 4)} {'':>8}"
    )
    for name in VARIANTS:
        print(
            f"  {name:<18} {seconds[name]:>8.2f} "
            f"{_cell(_ratio(seconds[name], summary['first_pass_seconds']), 7, 3)} "
            f"{iterations[name]['total']:>10d} {_cell(chi2[name], 7, 4)} "
            f"{_cell(existing[f'{name}_median_abs_rel_error'], 9, 4)} "
            f"{_cell(new[f'{name}_median_abs_rel_error'], 8, 4)}"
        )
    print(
        "  (chi2: median reduced chi2 of the re-fitted blends; flux err: median |relative conserved "
        f"i-band flux error| of their first-pass sources with S/N > {FLUX_SNR_CUT:g}, n={existing['n']}; "
        f"new err: the same for the new sources, n={new['n']})"
    )
    print(
        f"  warm (local) / whole-blend warm: time {r['warm_over_whole_blend_seconds']}, "
        f"chi2 {r['warm_over_whole_blend_chi2']}; warm / cold: time {r['warm_over_cold_seconds']}, "
        f"chi2 {r['warm_over_cold_chi2']}"
    )


def run(out_dir: Path, quick: bool = False) -> dict:
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    seeds, size = _scene_plan(quick)
    scenes = [_one_scene(seed, size) for seed in tqdm(seeds, desc="second pass", unit="scene")]
    plan = QUICK_PATCH if quick else PATCH
    patch = _patch_with_network(plan["size"], plan["seed"])
    summary = {
        "scenes": len(scenes),
        "scene_size": size,
        "seeds": seeds,
        "new_peaks": "truth positions of true sources with multi-band S/N >= "
        f"{NEW_SOURCE_MIN_SNR:g} that no first-pass peak matches within {MATCH_RADIUS:g} px",
        **_figures(scenes),
        "patch": {
            "size": plan["size"],
            "seed": plan["seed"],
            "new_peaks": "the shipped residual network's new sources (artefacts left out)",
            **_figures([patch]),
        },
    }
    summary["per_scene"] = [
        {
            "seed": s["seed"],
            "n_true_sources": s["n_true_sources"],
            "n_first_pass_peaks": s["n_first_pass_peaks"],
            "n_new_peaks": s["n_new_peaks"],
            "n_refitted_blends": s["n_refitted_blends"],
            "first_pass_seconds": round(s["first_pass_seconds"], 2),
            **{f"{name}_seconds": round(s["seconds"][name], 2) for name in VARIANTS},
            **{f"{name}_iterations": int(s["iterations"][name].sum()) for name in VARIANTS},
        }
        for s in scenes
    ]
    if summary["n_refitted_blends"]:
        _plot(scenes, out_dir / "second_pass.png")
    if summary["patch"]["n_refitted_blends"]:
        _plot([patch], out_dir / "second_pass_patch.png")
    _print_figures(f"second pass on {len(scenes)} scenes of {size}^2, truth as the new peaks", summary)
    _print_figures(
        f"second pass on the {plan['size']}^2 patch of bench.scaling, the network's new sources",
        summary["patch"],
    )
    (out_dir / "second_pass.json").write_text(json.dumps(summary, indent=2))
    return {k: v for k, v in summary.items() if k != "per_scene"}
