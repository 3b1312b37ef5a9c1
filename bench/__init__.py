"""Benchmarks (``make bench`` / ``python -m bench``).

Each module here with a ``run(out_dir: pathlib.Path, quick: bool) -> dict``
function is one benchmark: it measures speed or quality against baselines
measured in the same run, prints a short report, writes JSON (and PNG plots)
under ``out_dir``, and returns its summary.
"""

import os

#: Processes that prepare the held-out scenes of the evaluations (`evaluate_package`'s ``workers``):
#: one per core. The figures do not depend on it; nothing timed runs beside them.
WORKERS = os.cpu_count() or 1
