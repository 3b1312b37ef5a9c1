"""Batch ``residual-detectron run``: per-scene overhead beyond compute, one process vs one per scene.

Baseline in the same run: the same scenes, one ``residual-detectron run``
process each (what a user did before batch runs). Overhead of a scene is its
share of wall time not spent in the chain's own steps (first pass, network,
second pass, as each scene's summary.json reports them): start-up, imports,
model loading, reading and writing files. Target (issue 9): ≤ 0.5 s per scene
in a batch. The finished batch then runs again with ``--skip-existing``:
what restarting a killed batch costs for the scenes it had done (each
scene's manifest and inputs checked, nothing run).

On a machine with several cores the batch also runs with ``--workers`` one
per core (`bench.WORKERS`): its wall time against the one-process batch's,
and how many sources' i-band fluxes differ from that batch's. Each worker's
torch has one thread where the one process's had one per core; the
summation order of its convolutions, and so the round-off, follows the
thread count, and a fit with near-equal optima can move with it (equal
thread counts give equal outputs: ``tests/test_run_cli.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

import bench

SEED = 1_200_000


def _compute_seconds(summary: dict) -> float:
    return float(sum(summary["seconds"].values()))


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lsst.meas.extensions.residual.cli.main", *args]


def run(out_dir: Path, quick: bool = False) -> dict:
    import shutil

    from lsst.meas.extensions.residual.scene import write_scene
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene
    from tqdm import tqdm

    n_scenes, size = (4, 128) if quick else (24, 256)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenes_dir = out_dir / "scenes"
    shutil.rmtree(scenes_dir, ignore_errors=True)
    scenes_dir.mkdir()
    paths = []
    for index in tqdm(range(n_scenes), desc="simulate", unit="scene"):
        path = scenes_dir / f"scene_{index:03d}.fits"
        write_scene(simulate_scene(SEED + index, SimulationConfig(height=size, width=size)), path)
        paths.append(path)

    separate_dir = out_dir / "separate"
    shutil.rmtree(separate_dir, ignore_errors=True)
    separate_wall, separate_compute = 0.0, 0.0
    for path in tqdm(paths, desc="one process per scene", unit="scene"):
        start = time.perf_counter()
        subprocess.run(
            _command(
                "run", str(path), "--out", str(separate_dir / path.stem), "--no-plot", "--device", "cpu"
            ),
            check=True,
            capture_output=True,
        )
        separate_wall += time.perf_counter() - start
        separate_compute += _compute_seconds(
            json.loads((separate_dir / path.stem / "summary.json").read_text())
        )

    batch_dir = out_dir / "batch"
    shutil.rmtree(batch_dir, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        _command("run", *map(str, paths), "--out", str(batch_dir), "--no-plot", "--device", "cpu"),
        check=True,
        capture_output=True,
    )
    batch_wall = time.perf_counter() - start
    batch_summary = json.loads((batch_dir / "summary.json").read_text())
    batch_compute = sum(_compute_seconds(entry) for entry in batch_summary["scenes"])

    result = {
        "scenes": n_scenes,
        "scene_size": size,
        "separate_processes": {
            "wall_seconds": round(separate_wall, 1),
            "compute_seconds": round(separate_compute, 1),
            "overhead_per_scene_seconds": round((separate_wall - separate_compute) / n_scenes, 2),
        },
        "batch": {
            "wall_seconds": round(batch_wall, 1),
            "compute_seconds": round(batch_compute, 1),
            "overhead_per_scene_seconds": round((batch_wall - batch_compute) / n_scenes, 2),
        },
        "target_overhead_per_scene_seconds": 0.5,
    }
    result["wall_ratio_batch_over_separate"] = round(batch_wall / separate_wall, 3)
    # The finished batch run again with --skip-existing: every scene is kept, after its manifest
    # and inputs are checked (what a killed batch's restart pays for the scenes it had done).
    start = time.perf_counter()
    subprocess.run(
        _command(
            "run",
            *map(str, paths),
            "--out",
            str(batch_dir),
            "--no-plot",
            "--device",
            "cpu",
            "--skip-existing",
        ),
        check=True,
        capture_output=True,
    )
    resume_wall = time.perf_counter() - start
    resumed = json.loads((batch_dir / "summary.json").read_text())
    result["skip_existing_rerun"] = {
        "wall_seconds": round(resume_wall, 1),
        "per_scene_seconds": round(resume_wall / n_scenes, 3),
        "reused": resumed["reused"],
    }
    print(
        f"  the finished batch again with --skip-existing: {resume_wall:.1f} s, "
        f"{resumed['reused']} of {n_scenes} scenes kept"
    )
    if bench.WORKERS > 1:
        shared_dir = out_dir / "batch_workers"
        shutil.rmtree(shared_dir, ignore_errors=True)
        start = time.perf_counter()
        options = ["--no-plot", "--device", "cpu", "--workers", str(bench.WORKERS)]
        command = _command("run", *map(str, paths), "--out", str(shared_dir), *options)
        subprocess.run(command, check=True, capture_output=True)
        shared_wall = time.perf_counter() - start
        differing, sources = 0, 0
        for path in paths:
            made = np.asarray(Table.read(shared_dir / path.stem / "catalog.fits")["i_flux"])
            expected = np.asarray(Table.read(batch_dir / path.stem / "catalog.fits")["i_flux"])
            sources += len(expected)
            if made.shape != expected.shape:
                differing += len(expected)
            else:
                differing += int(np.sum(~((made == expected) | (np.isnan(made) & np.isnan(expected)))))
        result["batch_workers"] = {
            "workers": bench.WORKERS,
            "wall_seconds": round(shared_wall, 1),
            "speed_up_over_one_process": round(batch_wall / shared_wall, 2),
            "sources": sources,
            "sources_whose_i_flux_differs": differing,
        }
        print(
            f"  the batch with --workers {bench.WORKERS}: {shared_wall:.1f} s "
            f"({batch_wall / shared_wall:.2f}x the one-process batch); {differing} of {sources} sources' "
            "i fluxes differ (torch's thread count: round-off)"
        )
    (out_dir / "report.json").write_text(json.dumps(result, indent=2))
    print(
        f"{n_scenes} scenes of {size}²: batch {batch_wall:.1f} s "
        f"(overhead {result['batch']['overhead_per_scene_seconds']:.2f} s/scene, target ≤ 0.5) vs one "
        f"process per scene {separate_wall:.1f} s "
        f"(overhead {result['separate_processes']['overhead_per_scene_seconds']:.2f} s/scene); "
        f"ratio {result['wall_ratio_batch_over_separate']:.2f}"
    )
    return result
