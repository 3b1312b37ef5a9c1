"""``residual-detectron demo``: the whole chain in an embedded Butler repository.

Creates a SQLite Butler repository under ``--out``, registers a sky map
(one tract, ``--patches-x`` × ``--patches-y`` patches) and the six bands,
simulates every patch (six-band coadds with PSFs and truth; the last one
with coadd artefacts and their mask planes, ``--artefacts``), ingests the
model package, runs ``pipetask run`` on ``pipelines/demo.yaml`` (first-pass
detection and deblending, residual detection, second pass), then prints a
per-patch summary and writes one PNG per patch plus ``summary.json``.

Running it again is safe: the repository and its inputs are reused, and the
pipeline resumes its newest output run (what is missing there is computed;
finished work is skipped); ``--fresh`` starts a new output run beside the old
one instead. The repository records the parameters its inputs were made
from: other ``--seed``, ``--depth``, ``--model``, ``--patch-size``, ``--artefacts`` or grid
are refused (use another ``--out``), so results are never mixed or stale.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

_log = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the chain end to end in an embedded Butler repository (what `make demo` runs)",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--out", default="demo_output", help="output directory (default demo_output)")
    parser.add_argument(
        "--seed", type=int, default=1, help="random seed of the simulated patches (default 1)"
    )
    parser.add_argument("--patch-size", type=int, default=256, help="patch side in pixels (default 256)")
    parser.add_argument("--patches-x", type=int, default=2, help="patch columns (default 2)")
    parser.add_argument("--patches-y", type=int, default=2, help="patch rows (default 2)")
    parser.add_argument("--depth", choices=("10yr", "1yr"), default="10yr", help="coadd depth (default 10yr)")
    parser.add_argument("--model", help="model package zip (default: the shipped residual-mode package)")
    parser.add_argument("-j", "--processes", type=int, default=1, help="pipetask processes (default 1)")
    parser.add_argument("--fresh", action="store_true", help="start a new output run instead of resuming")
    parser.add_argument(
        "--artefacts",
        choices=("none", "last", "all"),
        default="last",
        help="patches simulated with coadd artefacts: saturated bright stars, trails, gaps, cosmic rays "
        "(default last)",
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> None:
    from ..configs import make_config
    from ..tasks.demo import (
        OUTPUT,
        DemoConfig,
        build_demo_repo,
        latest_output_collections,
        missing_outputs,
        plot_patch,
        quiet_optional_import_warnings,
        run_pipeline,
        summarize_patch,
    )
    from .main import CommandError, input_files

    quiet_optional_import_warnings()

    config = make_config(
        DemoConfig,
        "demo",
        patch_size=args.patch_size,
        patches_x=args.patches_x,
        patches_y=args.patches_y,
        seed=args.seed,
        depth=args.depth,
        model=args.model,
        processes=args.processes,
        fresh=args.fresh,
        artefacts=args.artefacts,
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, not a directory.")
    with input_files():  # the shipped package, when --model is not given
        model_path = config.model_path()
    if not model_path.is_file():
        raise CommandError(f"Model package {model_path} does not exist.")
    out.mkdir(parents=True, exist_ok=True)
    root = out / "repo"
    start = time.perf_counter()
    # Refuses (DemoParametersError) a repository made from other parameters.
    inputs = build_demo_repo(root, config)
    skymap = config.skymap()
    with_artefacts = ", ".join(map(str, config.artefact_patches())) or "none"
    where = (
        f"{config.patches_x}x{config.patches_y} patches of {config.patch_size} px, seed {config.seed}, "
        f"depth {config.depth}, artefacts in patch(es) {with_artefacts}"
    )
    if inputs.simulated:
        print(
            f"Repository {root}: {len(inputs.simulated)} patches simulated and ingested ({where}).",
            flush=True,
        )
    if inputs.reused:
        print(f"Repository {root}: reusing the inputs of {len(inputs.reused)} patches ({where}).", flush=True)
    try:
        run_pipeline(root, processes=config.processes, fresh=config.fresh, log_file=out / "pipetask.log")
    except FileNotFoundError as err:  # no pipetask executable
        raise CommandError(str(err)) from None
    except RuntimeError as err:
        raise CommandError(f"{err}\n(full log: {out / 'pipetask.log'})") from None

    from lsst.daf.butler import Butler

    data_ids = [
        {"skymap": skymap.name, "tract": skymap.tract, "patch": geometry.id} for geometry in skymap.patches()
    ]
    with Butler.from_config(str(root)) as reader:
        collections = latest_output_collections(reader)
        run = collections[0]
        missing = missing_outputs(reader, run, data_ids)
    if missing:
        what = "; ".join(f"patch {patch}: {', '.join(names)}" for patch, names in sorted(missing.items()))
        raise CommandError(
            f"The output run {run} lacks {what} (see {out / 'pipetask.log'}); run the demo again to "
            "complete it."
        )
    summaries = []
    with Butler.from_config(str(root), collections=collections) as butler:
        for data_id in data_ids:
            summary = summarize_patch(butler, data_id, config.bands)
            plot_patch(butler, data_id, config.bands, out / f"patch_{data_id['patch']}.png", summary)
            summaries.append(summary)
    _print_table(summaries)
    report = {
        "repository": str(root),
        "output_collection": OUTPUT,
        "output_run": run,
        "pipeline": "pipelines/demo.yaml",
        "parameters": inputs.parameters,
        "patches": [s.as_dict() for s in summaries],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(f"Wrote {out}/summary.json, patch_*.png and pipetask.log; Butler outputs in {root} run {run}.")


def _print_table(summaries) -> None:
    # Column meanings: true sources in the simulated patch; first-pass sources;
    # network detections kept as new, and how many of them match a true source;
    # sources after the second pass; blends re-fitted; new isolated footprints;
    # true sources matched by a first-pass / final source; final sources flagged near a bright star or
    # mostly masked in a band.
    header = (
        f"{'patch':>5} {'true':>5} {'1st pass':>8} {'new det':>7} {'on truth':>8} {'final':>6} "
        f"{'refit blends':>12} {'new footprints':>14} {'true found 1st->final':>22} {'flagged':>7}"
    )
    print(header)
    for s in summaries:
        found = (
            "-" if s.true_found_first_pass is None else f"{s.true_found_first_pass} -> {s.true_found_final}"
        )
        true = "-" if s.true_sources is None else str(s.true_sources)
        on_truth = "-" if s.new_detections_on_true_sources is None else str(s.new_detections_on_true_sources)
        print(
            f"{s.patch:>5} {true:>5} {s.first_pass_sources:>8} {s.new_detections:>7} {on_truth:>8} "
            f"{s.final_sources:>6} {s.refitted_blends:>12} {s.new_isolated:>14} {found:>22} "
            f"{s.flagged_sources:>7}"
        )
