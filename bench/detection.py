"""First-pass peaks against truth: completeness and purity versus magnitude.

Baseline in the same run: SEP (SExtractor's algorithm) on the i-band image
with SExtractor's default detection settings (1.5 sigma per pixel after its
default 3x3 filter, 5 connected pixels, deblending on).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MATCH_RADIUS = 2.0
MAG_BINS = np.arange(19.0, 28.5, 1.0)


def _sep_positions(scene) -> np.ndarray:
    import sep

    i = scene.bands.index("i")
    data = np.ascontiguousarray(scene.clean_image()[i], dtype=np.float64)
    err = np.ascontiguousarray(np.sqrt(np.where(scene.good[i], scene.variance[i], np.inf)), dtype=np.float64)
    objects = sep.extract(data, 1.5, err=err, minarea=5)
    return np.column_stack([objects["x"], objects["y"]])


def _binned(values, hits, bins):
    index = np.digitize(values, bins) - 1
    out = []
    for b in range(len(bins) - 1):
        sel = index == b
        out.append(None if not sel.any() else round(float(np.mean(hits[sel])), 4))
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lsst.meas.extensions.residual.detection import detect_peaks
    from lsst.meas.extensions.residual.groundtruth import match_positions
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene
    from lsst.meas.extensions.residual.simulation.survey import flux_to_mag

    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = range(200, 202 if quick else 206)
    true_mag, found_ours, found_sep = [], [], []
    peak_mag, peak_real, sep_n, sep_real = [], [], 0, 0
    for seed in seeds:
        scene = simulate_scene(seed, SimulationConfig(height=512, width=512))
        truth = scene.truth
        mag_i = np.asarray(truth.table["mag"])[:, scene.bands.index("i")]
        detections = detect_peaks(scene)
        ref, cand = match_positions(truth.xy, detections.xy, MATCH_RADIUS)
        hit = np.zeros(len(truth), bool)
        hit[ref] = True
        real = np.zeros(len(detections.peaks), bool)
        real[cand] = True
        sep_xy = _sep_positions(scene)
        sref, scand = match_positions(truth.xy, sep_xy, MATCH_RADIUS)
        sep_hit = np.zeros(len(truth), bool)
        sep_hit[sref] = True
        true_mag.append(mag_i)
        found_ours.append(hit)
        found_sep.append(sep_hit)
        peak_mag.append(flux_to_mag(np.asarray(detections.peaks["psf_flux"])[:, scene.bands.index("i")]))
        peak_real.append(real)
        sep_n += len(sep_xy)
        sep_real += len(scand)
    true_mag, found_ours, found_sep = map(np.concatenate, (true_mag, found_ours, found_sep))
    peak_mag, peak_real = np.concatenate(peak_mag), np.concatenate(peak_real)
    centres = (MAG_BINS[:-1] + MAG_BINS[1:]) / 2
    result = {
        "scenes": len(seeds),
        "match_radius_pixels": MATCH_RADIUS,
        "i_mag_bin_edges": MAG_BINS.tolist(),
        "completeness_ours": _binned(true_mag, found_ours, MAG_BINS),
        "completeness_sep_i": _binned(true_mag, found_sep, MAG_BINS),
        "purity_ours_vs_peak_psf_mag": _binned(peak_mag, peak_real, MAG_BINS),
        "purity_ours": round(float(peak_real.mean()), 4),
        "purity_sep_i": round(sep_real / max(sep_n, 1), 4),
        "true_sources": int(len(true_mag)),
        "peaks": int(len(peak_real)),
    }
    print(
        f"{'i mag':>8} {'N true':>7} {'compl. ours':>12} {'compl. SEP-i':>13} {'ratio':>6} "
        f"{'purity ours':>12}"
    )
    for k, c in enumerate(centres):
        n = int(((true_mag >= MAG_BINS[k]) & (true_mag < MAG_BINS[k + 1])).sum())
        ours, sep_c, pur = (
            result["completeness_ours"][k],
            result["completeness_sep_i"][k],
            result["purity_ours_vs_peak_psf_mag"][k],
        )
        ratio = f"{ours / sep_c:6.2f}" if ours is not None and sep_c else "   -  "
        fmt = lambda v: f"{v:12.3f}" if v is not None else f"{'-':>12}"  # noqa: E731
        print(f"{c:8.1f} {n:7d} {fmt(ours)} {fmt(sep_c):>13} {ratio} {fmt(pur)}")
    print(f"overall purity: ours {result['purity_ours']:.3f}, SEP i-band {result['purity_sep_i']:.3f}")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        centres,
        [np.nan if v is None else v for v in result["completeness_ours"]],
        "o-",
        label="completeness (ours)",
    )
    ax.plot(
        centres,
        [np.nan if v is None else v for v in result["completeness_sep_i"]],
        "s--",
        label="completeness (SEP, i)",
    )
    ax.plot(
        centres,
        [np.nan if v is None else v for v in result["purity_ours_vs_peak_psf_mag"]],
        "^-",
        label="purity (ours, vs peak PSF mag)",
    )
    ax.set_xlabel("i magnitude")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("First-pass peaks, 10-year depth")
    fig.tight_layout()
    fig.savefig(out_dir / "detection_completeness.png", dpi=110)
    plt.close(fig)
    (out_dir / "detection.json").write_text(json.dumps(result, indent=2))
    return result
