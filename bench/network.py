"""Benchmark of the shipped Mask R-CNN packages: quality against baselines, and speed.

1. Residual mode (``data/models/residual_ugrizy.zip``) on held-out 10-year
   scenes: recall of the recoverable missed sources at purity ≥ 90%, against
   SEP on the same residuals at 5σ (target: ≥ 2×) and 3σ, and photutils.
2. Image mode (``data/models/image_ugrizy.zip``) on held-out scenes: star and
   galaxy precision at 80% recall (targets: ≥ 92% and ≥ 98%, Burke et al.
   2019's figures), against the first-pass peaks; the classification table
   against LSST's extendedness on the same detections, for all sources and
   for S/N < 20, on the held-out scenes and on the same seeds with compact
   galaxies only (``--variant compact``).
3. Inference on a 4096×4096 six-band patch (quick: 1024²) on the CPU in a
   child process: wall time and peak resident memory (target: < 4 GB); and
   the latency of one 512² tile (CPU, and CUDA where available; Burke's
   anchor ≤ 100 ms on a GPU). Where CUDA is available, also each
   `InferenceConfig.precision` on the GPU: time per tile in batches of 16,
   the 4096² patch, and how many of float32's detections it finds again.

The held-out scenes have seeds from 1 000 000 (training uses 100 000-200 399,
validation 900 000-900 015).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import bench

EVAL_SEED = 1_000_000
PATCH_SEED = 1_100_000


def _evaluate(mode: str, out_dir: Path, n_scenes: int, variant: str = "training") -> dict:
    from lsst.meas.extensions.residual.evaluation.evaluate import EvaluationConfig, evaluate_package
    from lsst.meas.extensions.residual.network import default_model_path

    config = EvaluationConfig(n_scenes=n_scenes, seed=EVAL_SEED, scene_size=512, variant=variant)
    name = f"evaluate_{mode}" if variant == "training" else f"evaluate_{mode}_{variant}"
    return evaluate_package(
        default_model_path(mode), config, out_dir / name, progress=True, workers=bench.WORKERS
    )


def _patch_arrays(size: int):
    """A size² six-band patch: a simulated 512² scene (with its first-pass model) tiled."""
    from lsst.meas.extensions.residual.chain.first_pass import first_pass_model
    from lsst.meas.extensions.residual.deblending import DeblendConfig
    from lsst.meas.extensions.residual.detection import detect_peaks
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    scene = simulate_scene(PATCH_SEED, SimulationConfig(height=512, width=512))
    model = first_pass_model(scene, detect_peaks(scene), DeblendConfig(show_progress=False))
    reps = int(np.ceil(size / 512))

    def tile(cube):
        return np.tile(cube, (1, reps, reps))[:, :size, :size].copy()

    return tile(scene.image), tile(scene.variance), tile(model), scene.bands


def _patch_child(size: int, batch_size: int) -> None:
    """Run in a child process: time find_sources on a size² patch and report peak memory."""
    from lsst.meas.extensions.residual.network import Detector, InferenceConfig, default_model_path

    image, variance, model, bands = _patch_arrays(size)
    input_bytes = image.nbytes + variance.nbytes + model.nbytes
    detector = Detector(default_model_path("residual"), device="cpu")
    start = time.perf_counter()
    found = detector.find(
        image, variance, bands, model, inference=InferenceConfig(batch_size=batch_size), progress=True
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    print(
        json.dumps(
            {
                "size": size,
                "seconds": round(seconds, 1),
                "detections": len(found),
                "batch_size": batch_size,
                "peak_rss_gb": round(peak / 1024**3, 3),
                "input_arrays_gb": round(input_bytes / 1024**3, 3),
            }
        )
    )


def _tile_latency(device: str, reps: int) -> dict:
    import torch
    from lsst.meas.extensions.residual.network import Detector, default_model_path

    detector = Detector(default_model_path("residual"), device=device)
    rng = np.random.default_rng(0)
    tile = rng.normal(0, 1, size=(len(detector.metadata.channels), 512, 512)).astype(np.float32)
    settings = detector.settings()

    def run_tile():
        return detector._run_batch([tile], settings)

    run_tile()  # warm-up
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run_tile()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "device": device,
        "median_ms": round(1000 * float(np.median(times)), 1),
        "reps": reps,
        "torch_threads": torch.get_num_threads(),
    }


def _precision_runs(device: str, size: int, batch_size: int, reps: int) -> dict:
    """The network at each `InferenceConfig.precision` on ``device``: a size² patch and 512² tiles.

    For each precision: the patch's wall time and detections, how many of the float32 run's
    detections it finds again (same class, centre within 0.5 px), and the median time per tile
    of batches of ``batch_size`` real 512² tiles of the patch.
    """
    import torch
    from lsst.meas.extensions.residual.network import (
        Detector,
        InferenceConfig,
        band_noise,
        default_model_path,
    )
    from scipy.spatial import cKDTree

    image, variance, model, bands = _patch_arrays(size)
    detector = Detector(default_model_path("residual"), device=device)

    def synchronize():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    index = detector.metadata.check_data(tuple(bands), True)
    noise = np.array([band_noise(variance[band][None], variance[band][None] > 0)[0] for band in index])
    tiles = [
        detector._tile_channels(image, variance, model, None, index, noise, y0, x0, 512)
        for y0, x0 in [(0, 0), (0, 448), (448, 0), (448, 448)] * (batch_size // 4 + 1)
    ][:batch_size]
    rows, reference = {}, None
    for precision in ("float32", "float16", "bfloat16"):
        inference = InferenceConfig(precision=precision, batch_size=batch_size)
        settings = detector.settings(inference)
        detector._run_batch(tiles, settings)  # warm-up (kernels, autotuning)
        times = []
        for _ in range(reps):
            synchronize()
            start = time.perf_counter()
            detector._run_batch(tiles, settings)
            synchronize()
            times.append((time.perf_counter() - start) / len(tiles))
        synchronize()
        start = time.perf_counter()
        found = detector.find(image, variance, bands, model, inference=inference).table
        synchronize()
        seconds = time.perf_counter() - start
        xy = np.column_stack([found["x"], found["y"]])
        if reference is None:
            reference = (xy, np.asarray(found["class_id"]))
        again = 0
        if len(xy) and len(reference[0]):
            distance, nearest = cKDTree(xy).query(reference[0])
            again = int(np.sum((distance < 0.5) & (np.asarray(found["class_id"])[nearest] == reference[1])))
        rows[precision] = {
            "tile_ms": round(1000 * float(np.median(times)), 2),
            "patch_seconds": round(seconds, 2),
            "detections": len(found),
            "float32_detections_found_again": again,
            "float32_detections": len(reference[0]),
        }
    return {"device": device, "size": size, "batch_size": batch_size, "precisions": rows}


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    residual = summary["residual_mode"]
    names = ["network @ P≥0.9"] + list(residual["baselines"])
    recall = [residual["network_recall_at_precision_0.9"]] + [
        b["recall"] for b in residual["baselines"].values()
    ]
    purity = [0.9] + [b["precision"] for b in residual["baselines"].values()]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, recall, 0.4, label="recall of missed recoverable sources")
    ax.bar(x + 0.2, purity, 0.4, label="purity")
    ax.set_xticks(x, names, rotation=15, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Residual mode on held-out 10-year scenes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _classification_table(image: dict) -> dict:
    """Star and galaxy precision at 80% recall: the network against LSST's extendedness, printed."""
    faint_key = next(k for k in image if k.startswith("precision_at_80_recall_snr_lt_"))
    faint = faint_key.removeprefix("precision_at_80_recall_snr_lt_")
    extendedness = image.get("extendedness_baseline") or {}
    rows = {
        "network, all": image["precision_at_80_recall"],
        "network, all, each class alone (COCO)": image.get("precision_at_80_recall_each_class_alone") or {},
        "extendedness, all": {
            name: entry["precision_at_80_recall"] for name, entry in extendedness.get("all", {}).items()
        },
        f"network, S/N < {faint}": image[faint_key],
        f"extendedness, S/N < {faint}": {
            name: entry["precision_at_80_recall"]
            for name, entry in extendedness.get(f"snr_lt_{faint}", {}).items()
        },
    }

    def cell(value):
        return f"{'-':>7}" if value is None else f"{value:>7.3f}"

    print("  precision at 80% recall (-: recall never reaches 80%)      star  galaxy")
    for name, values in rows.items():
        print(f"    {name:<52} {cell(values.get('star'))} {cell(values.get('galaxy'))}")
    if extendedness:
        cut = extendedness["lsst_cut"]
        at = {name: entry["at_lsst_cut"] for name, entry in extendedness["all"].items()}
        print(
            f"    extendedness at LSST's cut {cut}: star precision {at['star']['precision']:.3f} "
            f"recall {at['star']['recall']:.3f}; galaxy precision {at['galaxy']['precision']:.3f} "
            f"recall {at['galaxy']['recall']:.3f}"
        )
    return rows


def run(out_dir: Path, quick: bool) -> dict:
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    n_scenes = 3 if quick else 16
    summary: dict = {"held_out_seeds_from": EVAL_SEED, "scenes_per_mode": n_scenes, "scene_size": 512}

    residual = _evaluate("residual", out_dir, n_scenes)
    net_recall = residual["network_recall_at_precision_0.9"]
    sep5 = residual["baselines"]["SEP 5σ"]
    summary["residual_mode"] = {
        "n_targets": residual["n_targets"],
        "network_recall_at_precision_0.9": net_recall,
        "network_threshold_at_precision_0.9": residual["network_threshold_at_precision_0.9"],
        "network_at_operating_threshold": residual["network_at_operating_threshold"],
        "baselines": residual["baselines"],
        "recall_ratio_to_sep5": residual.get("recall_ratio_to_sep5_at_precision_0.9"),
        "target_ratio": 2.0,
    }
    print(f"residual mode: {residual['n_targets']} recoverable missed sources in {n_scenes} scenes")
    print(f"  network recall at purity >= 0.9: {net_recall:.3f}")
    for name, point in residual["baselines"].items():
        print(f"  {name:24s} recall {point['recall']:.3f} purity {point['precision']:.3f}")
    ratio = summary["residual_mode"]["recall_ratio_to_sep5"]
    print(
        f"  ratio network / SEP 5σ recall: {ratio if ratio is None else round(ratio, 2)} (target >= 2; "
        f"SEP 5σ purity {sep5['precision']:.3f})"
    )

    image = _evaluate("image", out_dir, n_scenes)
    star_p = image["precision_at_80_recall"].get("star")
    galaxy_p = image["precision_at_80_recall"].get("galaxy")
    summary["image_mode"] = {
        "n_targets": image["n_targets"],
        "n_targets_per_class": image["n_targets_per_class"],
        "star_precision_at_80_recall": star_p,
        "galaxy_precision_at_80_recall": galaxy_p,
        "max_recall_per_class": image["max_recall_per_class"],
        "targets": {"star": 0.92, "galaxy": 0.98},
        "first_pass_peaks": image["baselines"].get("first-pass peaks"),
        "network_recall_at_precision_0.9": image["network_recall_at_precision_0.9"],
    }
    print(f"image mode: {image['n_targets']} recoverable sources {image['n_targets_per_class']}")
    print(f"  star precision at 80% recall: {star_p} (target 0.92); galaxy: {galaxy_p} (target 0.98)")
    summary["image_mode"]["classification"] = _classification_table(image)
    # Compact galaxies are where classification from morphology fails first (issue 11's variant).
    compact = _evaluate("image", out_dir, n_scenes, variant="compact")
    print(f"image mode, compact galaxies: {compact['n_targets']} sources {compact['n_targets_per_class']}")
    summary["image_mode"]["classification_compact_galaxies"] = _classification_table(compact)
    fp = image["baselines"].get("first-pass peaks")
    if fp:
        print(
            f"  first-pass peaks: recall {fp['recall']:.3f} purity {fp['precision']:.3f}; network recall at "
            f"purity >= 0.9: {image['network_recall_at_precision_0.9']:.3f}"
        )

    size = 1024 if quick else 4096
    child = subprocess.run(
        [sys.executable, "-m", "bench.network", "--patch", str(size), "--batch-size", "4"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if child.returncode != 0:
        raise RuntimeError(f"patch inference failed:\n{child.stderr[-3000:]}")
    patch = json.loads(child.stdout.strip().splitlines()[-1])
    patch["memory_limit_gb"] = 4.0
    summary["patch_inference_cpu"] = patch
    print(
        f"patch {size}x{size}x6 on CPU: {patch['seconds']} s, {patch['detections']} detections, peak memory "
        f"{patch['peak_rss_gb']} GB (inputs {patch['input_arrays_gb']} GB; limit 4 GB)"
    )

    latency = {"cpu": _tile_latency("cpu", 3 if quick else 5)}
    if torch.cuda.is_available():
        latency["cuda"] = _tile_latency("cuda", 20)
    summary["tile_512_latency"] = latency
    for device, value in latency.items():
        print(f"one 512² tile on {device}: {value['median_ms']} ms (Burke's GPU anchor: <= 100 ms)")
    if "cuda" not in latency:
        print("no GPU here: the GPU tile latency was not measured")
    else:
        gpu = _precision_runs("cuda", 1024 if quick else 4096, 16, 20)
        summary["gpu_precisions"] = gpu
        print(f"GPU, {gpu['size']}² patch and batches of {gpu['batch_size']} 512² tiles:")
        for precision, row in gpu["precisions"].items():
            print(
                f"  {precision:<9} {row['tile_ms']:>7.2f} ms/tile  patch {row['patch_seconds']:>6.2f} s  "
                f"{row['detections']} detections, {row['float32_detections_found_again']} of float32's "
                f"{row['float32_detections']} found again"
            )

    (out_dir / "network.json").write_text(json.dumps(summary, indent=2, default=str))
    _plot(summary, out_dir / "residual_vs_baselines.png")
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="child process of bench.network")
    parser.add_argument("--patch", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    _patch_child(args.patch, args.batch_size)
