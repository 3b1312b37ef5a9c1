"""The Butler chain (``pipetask run`` on pipelines/demo.yaml) against the same chain in-process.

Baseline in the same run: `lsst.meas.extensions.residual.chain.run_chain`
on the very scenes the demo repository holds (same detection, deblending and
network settings). The ratio of wall times is what the Butler, pipetask and
dataset I/O cost on top of the science; the final source counts per patch
must be equal (the two paths compute the same thing).

The network is the shipped residual-mode package when it exists, else a tiny
untrained one (then the network's share of the time is not representative;
the result says which).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path


def _tiny_package(path: Path) -> Path:
    import torch
    from lsst.meas.extensions.residual.network import (
        InferenceConfig,
        ModelConfig,
        ModelMetadata,
        build_model,
        channel_names,
        save_model_package,
    )

    bands = ("u", "g", "r", "i", "z", "y")
    small = {
        "slim_widths": [8, 8, 16, 16],
        "slim_blocks": [1, 1, 1, 1],
        "fpn_channels": 16,
        "box_head_size": 32,
        "mask_head_layers": [16],
        "box_detections_per_img": 50,
    }
    meta = ModelMetadata(
        name="bench-tiny",
        mode="residual",
        recipe="residual+model",
        bands=bands,
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=len(channel_names("residual+model", bands)), **small),
        inference=InferenceConfig(tile_size=128, tile_overlap=16, score_threshold=0.5),
    )
    torch.manual_seed(0)
    return save_model_package(path, meta, build_model(meta.model, input_size=128).state_dict())


def run(out_dir: Path, quick: bool = False) -> dict:
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.chain import ChainConfig, run_chain
    from lsst.meas.extensions.residual.network import Detector, default_model_path
    from lsst.meas.extensions.residual.simulation import simulate_scene
    from lsst.meas.extensions.residual.tasks.demo import (
        OUTPUT,
        DemoConfig,
        build_demo_repo,
        quiet_optional_import_warnings,
        run_pipeline,
    )

    logging.getLogger("lsst.meas.extensions.residual").setLevel(logging.WARNING)
    quiet_optional_import_warnings()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        model, model_kind = default_model_path("residual"), "shipped"
    except FileNotFoundError:
        model, model_kind = _tiny_package(out_dir / "tiny.zip"), "tiny untrained (no shipped package yet)"
    config = DemoConfig(
        patch_size=128 if quick else 256, patches_x=2, patches_y=1 if quick else 2, seed=3, model=str(model)
    )
    root = out_dir / "repo"
    shutil.rmtree(root, ignore_errors=True)

    start = time.perf_counter()
    build_demo_repo(root, config, progress=False)
    setup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run_pipeline(root, log_file=out_dir / "pipetask.log", echo=False)
    pipetask_seconds = time.perf_counter() - start

    skymap = config.skymap()
    detector = Detector(model, "cpu")
    in_process_seconds = 0.0
    patches = []
    with Butler.from_config(str(root), collections=[OUTPUT]) as butler:
        for geometry in skymap.patches():
            # The demo repository's own scene of the patch: the last one has coadd artefacts.
            scene = simulate_scene(config.seed * 1000 + geometry.id, config.simulation(geometry.id))
            start = time.perf_counter()
            result = run_chain(scene, detector, ChainConfig())
            in_process_seconds += time.perf_counter() - start
            data_id = {"skymap": skymap.name, "tract": skymap.tract, "patch": geometry.id}
            butler_final = len(butler.get("object_residual_deblend", data_id))
            patches.append(
                {
                    "patch": geometry.id,
                    "in_process_final_sources": len(result.second_pass.catalog),
                    "butler_final_sources": butler_final,
                    "in_process_new_sources": len(result.new_sources),
                    "butler_new_sources": len(butler.get("object_residual_detection", data_id)),
                }
            )
    identical = all(
        p["in_process_final_sources"] == p["butler_final_sources"]
        and p["in_process_new_sources"] == p["butler_new_sources"]
        for p in patches
    )
    ratio = pipetask_seconds / in_process_seconds if in_process_seconds > 0 else float("nan")
    summary = {
        "patches": len(patches),
        "patch_size": config.patch_size,
        "model": model_kind,
        "repo_setup_seconds": round(setup_seconds, 1),
        "pipetask_seconds": round(pipetask_seconds, 1),
        "in_process_seconds": round(in_process_seconds, 1),
        "pipetask_over_in_process": round(ratio, 2),
        "same_results": identical,
        "per_patch": patches,
    }
    print(
        f"pipetask run {pipetask_seconds:.1f} s vs in-process chain {in_process_seconds:.1f} s "
        f"(ratio {ratio:.2f}) on {len(patches)} patches of {config.patch_size}^2; "
        f"same results: {identical}; repo set-up {setup_seconds:.1f} s; model: {model_kind}"
    )
    (out_dir / "pipeline.json").write_text(json.dumps(summary, indent=2))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = ["in-process chain", "pipetask run", "repo set-up"]
    ax.bar(labels, [in_process_seconds, pipetask_seconds, setup_seconds])
    ax.set_ylabel("seconds")
    ax.set_title(f"{len(patches)} patches of {config.patch_size}² (2 cores)")
    fig.tight_layout()
    fig.savefig(out_dir / "pipeline.png", dpi=100)
    plt.close(fig)
    return summary
