#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`), from the repository root, with `device/kit` carried:
#
#   bash device/run.sh cli  ARGS...   # residual-detectron ARGS... (e.g. train ... --device cuda)
#   bash device/run.sh bench ARGS...  # python -m bench ARGS... (e.g. --only network)
#
# It unpacks device/kit/ (`make device-kit`: what the machine's image lacks) into a scratch
# site, puts it and python/ on PYTHONPATH for the image's python3, writes what the machine has to
# $OUT/environment.json, then runs the command with its log in $OUT/log.txt. A benchmark's
# reports (folders deeper than the two levels that come back) are packed into $OUT/bench.tar.gz.
# Outside the device tool, OUT defaults to device_output/ and PY to python3.
set -euo pipefail
PY=${PY:-python3}
OUT=${OUT:-device_output}
shopt -s nullglob
kit=(device/kit/*.zip)
if [ ${#kit[@]} -eq 0 ]; then
  echo "error: device/kit/ is empty: run 'make device-kit' here and name device/kit in carry" >&2
  exit 2
fi
SITE=${SITE:-$(mktemp -d)/site}
mkdir -p "$OUT" "$SITE"
for zip in "${kit[@]}"; do $PY -m zipfile -e "$zip" "$SITE"; done
export PYTHONPATH="$PWD/python:$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
$PY - >"$OUT/environment.json" <<'PYTHON'
import json, os, platform, sys
import astropy, galsim, numba, numpy, photutils, pydantic, scipy, sep, torch, torchvision
import lsst.meas.extensions.residual as package
cuda = torch.cuda.is_available()
print(json.dumps({
    "python": platform.python_version(),
    "cores": os.cpu_count(),
    "versions": {m.__name__: m.__version__ for m in (
        numpy, scipy, numba, torch, torchvision, astropy, galsim, photutils, pydantic, sep)},
    "package": package.__file__,
    "cuda": cuda,
    "gpu": torch.cuda.get_device_name(0) if cuda else None,
}, indent=2))
PYTHON
cat "$OUT/environment.json"
job=${1:?usage: device/run.sh cli|bench ARGS...}
shift
case "$job" in
  cli) $PY -m lsst.meas.extensions.residual.cli.main "$@" 2>&1 | tee "$OUT/log.txt" ;;
  bench)
    reports=$(mktemp -d)/bench
    $PY -m bench --out "$reports" "$@" 2>&1 | tee "$OUT/log.txt"
    cp "$reports/summary.json" "$OUT/bench_summary.json"
    tar czf "$OUT/bench.tar.gz" -C "$(dirname "$reports")" bench
    ;;
  *) echo "error: unknown job '$job' (cli or bench)" >&2; exit 2 ;;
esac
