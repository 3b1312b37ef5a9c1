"""Scaling of ``residual-detectron run`` with patch size: seconds per stage and peak resident memory.

For each side N (512, 1024, 2048, 4096; quick: 512 and 1024) a six-band
10-year scene of N² pixels is simulated and the whole chain is run on it
(detection and first pass, network, second pass) in a child process under
``/usr/bin/time -v``, with the shipped residual-mode model on the CPU and no
figure. The stage seconds come from the run's ``summary.json`` (``first_pass``
includes detection), the peak RSS from ``time``'s "Maximum resident set
size". Targets (issue 9): peak RSS within 2 GB at 2048² and 4 GB at 4096²;
at 2048², second pass / first pass ≤ 0.25 and network / first pass ≤ 0.15.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SEED = 1_300_000
SIZES = (512, 1024, 2048, 4096)
QUICK_SIZES = (512, 1024)
STAGES = ("first_pass", "network", "second_pass")
#: Peak RSS targets (GB, 10⁹ bytes) by patch side.
RSS_TARGETS_GB = {2048: 2.0, 4096: 4.0}
#: The crowded scene: seed, side, sources per arcmin² (``simulate --density``), and its wall-time target.
CROWDED = {"seed": 3, "size": 256, "density": 1500}
CROWDED_TARGET_SECONDS = 60.0
#: Stage-time ratio targets, checked at 2048².
RATIO_TARGETS = {"second_over_first": 0.25, "network_over_first": 0.15}
RATIO_SIZE = 2048
TIME = "/usr/bin/time"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lsst.meas.extensions.residual.cli.main", *args]


def _peak_rss_gb(time_output: str) -> float:
    """Peak RSS in GB from ``/usr/bin/time -v`` output (it reports kibibytes)."""
    match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", time_output)
    if match is None:
        raise RuntimeError(f"No peak RSS in the output of {TIME} -v:\n{time_output[-2000:]}")
    return int(match.group(1)) * 1024 / 1e9


def measure(size: int, out_dir: Path, seed: int = SEED, density: float | None = None) -> dict:
    """Simulate an N² scene and time ``run`` on it under ``/usr/bin/time -v``; one table row."""
    name = f"{size}" if density is None else f"{size}_density{density:g}"
    scene_path = out_dir / f"scene_{name}.fits"
    run_dir = out_dir / f"run_{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    if not scene_path.exists():
        start = time.perf_counter()
        extra = [] if density is None else ["--density", f"{density:g}"]
        subprocess.run(
            _command("simulate", "--seed", str(seed), "--size", str(size), *extra, "--out", str(scene_path)),
            check=True,
            capture_output=True,
        )
        print(f"  simulated {size}² in {time.perf_counter() - start:.1f} s", flush=True)
    start = time.perf_counter()
    completed = subprocess.run(
        [
            TIME,
            "-v",
            *_command("run", str(scene_path), "--out", str(run_dir), "--no-plot", "--device", "cpu"),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"run on the {size}² scene failed:\n{completed.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    seconds = {stage: float(summary["seconds"][stage]) for stage in STAGES}
    first = seconds["first_pass"]
    row = {
        "size": size,
        "density": density,
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "peak_rss_gb": round(_peak_rss_gb(completed.stderr), 3),
        "first_pass_peaks": summary["first_pass_peaks"],
        "new_sources": summary["new_sources"],
        "blends_with_new_sources": summary["blends_with_new_sources"],
        "skipped_footprints": summary["skipped_footprints"],
        "split_footprints": summary["split_footprints"],
        "skipped_sources": summary["skipped_sources"],
        "second_over_first": round(seconds["second_pass"] / first, 3) if first > 0 else None,
        "network_over_first": round(seconds["network"] / first, 3) if first > 0 else None,
    }
    shutil.rmtree(run_dir, ignore_errors=True)
    return row


def _table(rows: list[dict]) -> str:
    lines = [
        f"{'size':>6} {'peaks':>6} {'new':>5} {'first s':>8} {'network s':>9} {'second s':>8} "
        f"{'2nd/1st':>7} {'net/1st':>7} {'wall s':>7} {'peak RSS GB':>11}"
    ]
    for row in rows:
        s = row["seconds"]
        lines.append(
            f"{row['size']:>5}² {row['first_pass_peaks']:>6} {row['new_sources']:>5} "
            f"{s['first_pass']:>8.1f} {s['network']:>9.1f} {s['second_pass']:>8.1f} "
            f"{row['second_over_first']:>7.3f} {row['network_over_first']:>7.3f} "
            f"{row['wall_seconds']:>7.1f} {row['peak_rss_gb']:>11.2f}"
        )
    return "\n".join(lines)


def _checks(rows: list[dict], crowded: dict | None) -> dict:
    """Each target of issue 9 that the measured sizes reach: its value, limit and whether it is met."""
    by_size = {row["size"]: row for row in rows}
    checks = {}
    if crowded is not None:
        value = crowded["wall_seconds"]
        checks["crowded_wall_seconds"] = {
            "value": value,
            "limit": CROWDED_TARGET_SECONDS,
            "met": value <= CROWDED_TARGET_SECONDS,
        }
    for size, limit in RSS_TARGETS_GB.items():
        if size in by_size:
            value = by_size[size]["peak_rss_gb"]
            checks[f"peak_rss_gb_{size}"] = {"value": value, "limit": limit, "met": value <= limit}
    if RATIO_SIZE in by_size:
        for name, limit in RATIO_TARGETS.items():
            value = by_size[RATIO_SIZE][name]
            checks[f"{name}_{RATIO_SIZE}"] = {"value": value, "limit": limit, "met": value <= limit}
    return checks


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["size"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in STAGES:
        left.plot(sizes, [row["seconds"][stage] for row in rows], "o-", label=stage.replace("_", " "))
    left.set(
        xscale="log", yscale="log", xlabel="patch side (pixels)", ylabel="seconds", title="Time per stage"
    )
    left.set_xticks(sizes, [str(s) for s in sizes])
    left.minorticks_off()
    left.legend()
    right.plot(sizes, [row["peak_rss_gb"] for row in rows], "o-", label="measured")
    targets = sorted(RSS_TARGETS_GB.items())
    right.plot([s for s, _ in targets], [t for _, t in targets], "k_", markersize=20, label="target")
    right.set(xscale="log", xlabel="patch side (pixels)", ylabel="peak RSS (GB)", title="Peak memory")
    right.set_xticks(sizes, [str(s) for s in sizes])
    right.minorticks_off()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    out_dir: Path, quick: bool = False, sizes: tuple[int, ...] | None = None, crowded: bool = True
) -> dict:
    if not Path(TIME).exists():
        raise RuntimeError(f"{TIME} is needed to measure peak memory (Debian package 'time').")
    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:
        print(f"{size}²:", flush=True)
        rows.append(measure(size, out_dir))
        print(_table(rows[-1:]).splitlines()[-1], flush=True)
    crowded_row = None
    if crowded:
        print(f"crowded {CROWDED['size']}² (density {CROWDED['density']}):", flush=True)
        crowded_row = measure(CROWDED["size"], out_dir, CROWDED["seed"], CROWDED["density"])
    checks = _checks(rows, crowded_row)
    result = {"rows": rows, "crowded": crowded_row, "targets": checks}
    (out_dir / "report.json").write_text(json.dumps(result, indent=2))
    _plot(rows, out_dir / "scaling.png")
    print(_table(rows))
    if crowded_row is not None:
        print(f"crowded scene (density {CROWDED['density']}, seed {CROWDED['seed']}):")
        print(_table([crowded_row]).splitlines()[-1])
        print(
            f"  footprints split {crowded_row['split_footprints']}, skipped "
            f"{crowded_row['skipped_footprints']}, sources in skipped footprints "
            f"{crowded_row['skipped_sources']}"
        )
    for name, check in checks.items():
        print(f"{name}: {check['value']} (target ≤ {check['limit']}) {'met' if check['met'] else 'NOT met'}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench_output/scaling")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", help="patch sides (default 512 1024 2048 4096)")
    parser.add_argument("--no-crowded", action="store_true", help="skip the crowded scene")
    args = parser.parse_args()
    run(
        Path(args.out),
        quick=args.quick,
        sizes=tuple(args.sizes) if args.sizes else None,
        crowded=not args.no_crowded,
    )
