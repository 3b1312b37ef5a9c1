"""Run the benchmarks: ``python -m bench [--out DIR] [--only NAME ...] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import bench


def main(argv=None) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", default="bench_output", help="directory for JSON reports and plots")
    parser.add_argument("--only", nargs="*", choices=names, help="run only these benchmarks")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.only or names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        result = module.run(out / name, quick=args.quick)
        result["bench_wall_seconds"] = round(time.perf_counter() - start, 2)
        summary[name] = result
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nReports in {out}/ (summary.json and one folder per benchmark).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
