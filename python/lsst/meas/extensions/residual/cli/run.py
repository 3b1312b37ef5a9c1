"""``residual-detectron run``: the whole chain on a scene file, without a Butler.

First-pass detection, first-pass deblending, the network on the residuals,
and a second deblending pass with the new sources
(`lsst.meas.extensions.residual.chain.run_chain`, the same steps and output
tables as the PipelineTasks).

Outputs in ``--out`` (the scene is patch 0 of tract 0 at the tract origin:
positions are scene pixels, ids are packed as in a Butler repository, see
`lsst.meas.extensions.residual.chain.catalogs`):

``catalog.fits``
    Final catalog, one row per source (``object_residual_deblend``'s
    columns, without ``ra``/``dec``: scene files carry no WCS).
``new_sources.fits``
    The new sources with their footprints (``object_residual_detection``'s
    columns in the network's ``sources.fits`` layout).
``residual_before.fits``, ``residual_after.fits``
    (nbands, H, W) residual cubes (image − model) of the first and second
    pass; header ``BANDS``.
``first_pass.scarlet``, ``second_pass.scarlet``
    Scarlet model data (LSST's ``.scarlet`` container).
``run.png``, ``summary.json``
    Figure (image, first-pass model, residual before and after) and
    counts/timings; ``summary.json`` is written last and lists every other
    file with its SHA-256.

Everything is written into a temporary folder beside ``--out`` and moved
into place only when all of it succeeded. ``summary.json``'s ``inputs`` holds
the SHA-256 of the scene file, the model package and the options
(`run_inputs`): with ``--skip-existing``, outputs that match their manifest
and those inputs are kept, and the run is not done again.

Several scenes (``run a.fits b.fits ... --out DIR``) run in one process with
the model loaded once: each scene's outputs go to ``DIR/<file stem>/`` (the
layout and manifest above), moved in as soon as that scene is done, and
``DIR/summary.json`` lists every scene with its status; a scene that fails
gets its error there and the others go on (exit status 1 if any failed).
The summary is rewritten as scenes end, with ``complete`` false and the
scenes not yet run ``pending``; only the finished batch's has ``complete``
true and the ``outputs`` manifest of the whole folder
(`~lsst.meas.extensions.residual.cli.outputs.BatchFolder`). So a batch
killed outright (a cluster's time limit, say) keeps the scenes it finished,
and the same command with ``--skip-existing`` keeps those (``reused`` in the
summary) and runs the rest; ``--overwrite`` removes the earlier outputs when
the batch starts instead. With ``--workers N`` the scenes are shared
among N processes (`~lsst.meas.extensions.residual.workers.ordered_map`),
each loading the model once and running torch on 1/N of the cores, or on
``OMP_NUM_THREADS`` threads where that is set; the summary lists the scenes
in the order given. The outputs are those of one process whose torch has
as many threads: torch's convolutions sum in an order that depends on the
thread count, and that round-off can move a fit with near-equal optima (2
of the 1581 sources of 24 scenes of 256² changed by up to 45% in i, between
one and two threads). ``OMP_NUM_THREADS=1`` gives every process one thread
and outputs that do not depend on ``--workers``.

A worker process killed under a scene (by the system's out-of-memory killer,
say) takes with it the scenes the other workers were running: each of them
runs again alone in a fresh process, and one that kills that too is
recorded with status ``worker died``; the batch goes on. (In one process,
a kill ends the batch: ``--skip-existing`` then goes on from there.)

SIGTERM (a batch system's time limit, ``scancel``, ``kill``) and Ctrl-C stop
a batch cleanly: the scenes running, in worker processes too, are stopped,
their temporary folders removed, the summary written at once with the
scenes finished (the others ``pending``), and the command exits with status
143 (130 for Ctrl-C); ``--skip-existing`` goes on from there. While a batch
runs, its ``--out`` is locked: a second batch into it (the same job
submitted twice) is refused, where each would otherwise remove the other's
temporary folders as a killed batch's.

A write the machine refuses (a full disk, a quota, a file-size limit, a
read-only or failing disk: `~lsst.meas.extensions.residual.errors.OutputWriteError`)
stops a batch the same way, at the first scene it hits, where every later
scene would fail the same way after its work: the message names the folder
and what the system said, the exit status is 2, and ``--skip-existing`` goes
on once there is room. A summary the full disk cannot take stays the earlier
one, and the message says that the scene folders say what is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..chain.new_sources import NewSourcesConfig
from ..chain.run import ChainConfig
from ..deblending.config import DeblendConfig
from ..detection.detect import DetectionConfig
from ..errors import OutputWriteError, ResidualDetectronError
from .options import (
    MODEL_HELP,
    add_inference_options,
    add_model_options,
    add_workers_option,
    model_from_args,
)

_log = logging.getLogger(__name__)

#: What ``run`` writes into ``--out`` (``summary.json`` last).
RUN_OUTPUTS = (
    "catalog.fits",
    "new_sources.fits",
    "residual_before.fits",
    "residual_after.fits",
    "first_pass.scarlet",
    "second_pass.scarlet",
    "run.png",
    "summary.json",
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the whole chain (detect, deblend, find missed sources, deblend again) on a scene file",
        description=__doc__.split("\n\n")[1]
        + " Writes catalog.fits, new_sources.fits, residual cubes, model data, run.png and summary.json "
        "into --out.",
    )
    parser.add_argument(
        "scene",
        nargs="+",
        help="scene FITS file(s); with several, each gets --out/<file stem>/ and --out/summary.json "
        "covers all (the model is loaded once)",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--model",
        default=None,
        help=MODEL_HELP,
    )
    add_model_options(parser.add_argument_group("new sources"), NewSourcesConfig)
    add_model_options(parser.add_argument_group("first-pass detection"), DetectionConfig)
    add_model_options(
        parser.add_argument_group("deblender (both passes)"), DeblendConfig, exclude=["show_progress"]
    )
    add_inference_options(parser, figure="run.png")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep the outputs in --out (of each scene of a batch) that match their manifest and were "
        "made from the same scene file, model and options, and run only the rest: a killed batch "
        "run again goes on where it stopped",
    )
    add_workers_option(
        parser,
        "share the scenes of a batch, each loading the model once and running torch on its share of "
        "the cores",
        "the outputs are those of one process with as many torch threads; with OMP_NUM_THREADS=1 they "
        "do not depend on it",
    )
    parser.set_defaults(handler=main)


def write_residual(path: Path, scene, model, name: str = "RESIDUAL") -> None:
    """`patch_residual` of ``scene`` and ``model`` as FITS: the cube in a ``name`` extension, the band
    names in the primary header (``BANDS``).

    Made straight into the big-endian cube FITS stores: on a full patch, no native-order copy is
    held besides.
    """
    import numpy as np
    from astropy.io import fits

    from ..deblending.deblend import patch_residual

    cube = patch_residual(scene, model, out=np.empty(scene.image.shape, dtype=">f4"))
    primary = fits.PrimaryHDU()
    primary.header["BANDS"] = ",".join(scene.bands)
    fits.HDUList([primary, fits.ImageHDU(cube, name=name)]).writeto(path)


def write_run(folder: Path, scene, result, plot: bool, truth_xy=None) -> None:
    """Write the outputs of `run_chain` (all but ``summary.json``) into ``folder``.

    ``truth_xy`` ((N, 2) true positions, x and y) are marked on the figure;
    default: the scene's truth, if it has one.
    """
    import numpy as np

    from ..chain.plots import flagged_rows, plot_patch_chain
    from ..deblending import write_scarlet_model

    outputs = result.outputs
    outputs.catalog.write(folder / "catalog.fits")
    outputs.new_sources.write(folder / "new_sources.fits")
    write_residual(folder / "residual_after.fits", scene, result.second_pass.model)
    if not plot:
        # Each model cube is patch-sized: without the figure, which shows both, the second pass's
        # goes before the first pass's is rendered again (on a 4096² patch the peak of the run was
        # here, 0.4 GB higher, with both cubes held).
        result.second_pass.release_model()
    # The chain released the first-pass model cube: rendered again for its residual, and released
    # again unless the figure needs it.
    write_residual(folder / "residual_before.fits", scene, result.first_pass.deblend.model)
    if not plot:
        result.first_pass.deblend.release_model()
    write_scarlet_model(folder / "first_pass.scarlet", outputs.first_pass_models)
    write_scarlet_model(folder / "second_pass.scarlet", outputs.models)
    if plot:
        first, final = result.first_pass.deblend.catalog, result.second_pass.catalog
        flagged = flagged_rows(final, scene.bands)
        plot_patch_chain(
            scene,
            result.first_pass.deblend.model,
            result.second_pass.model,
            np.column_stack([first["x"], first["y"]]),
            result.new_sources.xy,
            folder / "run.png",
            f"{len(first)} first-pass sources, {len(result.new_sources)} new, "
            f"{len(result.second_pass.catalog)} after the second pass",
            truth_xy=truth_xy if truth_xy is not None or scene.truth is None else scene.truth.xy,
            flagged_xy=np.column_stack([final["x"][flagged], final["y"][flagged]]),
        )


def run_summary(scene_path, model, device: str, result) -> dict:
    """Counts and timings of one `run_chain` result (``summary.json`` less its manifest).

    Besides the counts of sources: ``skipped_sources`` (final catalog rows
    the deblender did not fit), ``skipped_footprints`` (for each reason of
    `~lsst.meas.extensions.residual.deblending.SKIP_REASONS`, the footprints
    with sources skipped for it) and ``split_footprints`` (footprints beyond
    the deblender's limits that were cut into sub-blends).
    """
    import numpy as np

    from ..deblending import SKIP_REASONS

    catalog = result.outputs.catalog
    new_parents = {int(p) for p in catalog["parent"][catalog["found_by"] == "residual"]}
    parents = np.asarray(catalog["parent"])
    split = np.asarray(catalog["n_blend_peaks"]) < np.asarray(catalog["n_peaks"])
    return {
        "scene": str(scene_path),
        "model": str(model),
        "device": device,
        "bands": list(result.second_pass.bands),
        "first_pass_peaks": len(result.first_pass.detections.peaks),
        "first_pass_footprints": int(result.first_pass.detections.footprints.max(initial=0)),
        "new_sources": len(result.new_sources),
        "dropped_on_existing_peaks": result.new_sources.n_matched,
        "dropped_on_masked_pixels": result.new_sources.n_masked,
        "new_artefacts": int(np.sum(~result.new_sources.peaks)),
        "blends_with_new_sources": len(new_parents),
        "final_sources": len(catalog),
        "skipped_sources": int(np.sum(catalog["skipped"])),
        "skipped_footprints": {
            reason: len(np.unique(parents[np.asarray(catalog[f"skipped_{reason}"])]))
            for reason in SKIP_REASONS
        },
        "split_footprints": len(np.unique(parents[split])),
        "seconds": {k: round(v, 2) for k, v in result.timing.items()},
    }


def run_inputs(scene_path, package_path, config: ChainConfig) -> dict:
    """What a run's outputs are made from (``summary.json``'s ``inputs``): SHA-256 of the scene file,
    of the model package and of the chain's parameters. ``--skip-existing`` keeps outputs whose
    ``inputs`` are these."""
    import hashlib

    from .outputs import file_sha256

    return {
        "scene_sha256": file_sha256(scene_path),
        "model_sha256": file_sha256(package_path),
        "config_sha256": hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
    }


def _run_scene(
    scene_path, detector, metadata, config, folder, plot: bool, start: float, progress: bool = True
) -> dict:
    """Run the chain on one scene file and write its outputs through ``folder``; its summary."""
    from ..chain import run_chain
    from ..scene import read_scene

    # The chain needs no truth; the figure needs its positions only. Its per-source stamps are not
    # kept (not even read without a figure): on a simulated 4k patch they are as large as the image.
    scene = read_scene(scene_path, truth=plot)
    metadata.check_data(scene.bands, has_model=True)
    truth_xy = None if scene.truth is None else scene.truth.xy
    scene.truth = None
    result = run_chain(scene, detector, config, progress=progress)
    with folder.staging() as staged:
        write_run(staged.path, scene, result, plot=plot, truth_xy=truth_xy)
        staged.summary.update(run_summary(scene_path, detector.package.path, detector.device, result))
        staged.summary["inputs"] = run_inputs(scene_path, detector.package.path, config)
        staged.summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    return {k: v for k, v in staged.summary.items() if k != "outputs"}


@dataclasses.dataclass(frozen=True)
class _BatchScene:
    """One scene of a batch ``run``: what the process that runs it needs."""

    scene: str
    folder: str
    """Its sub-folder's name (`_scene_folders`)."""
    out: Path
    """The batch's folder (`BatchFolder`), into which the sub-folder is moved when it is complete."""
    package: Path
    device: str
    config: ChainConfig
    plot: bool
    worker: dict | None = None
    """In a worker process: its log level and torch threads (None: torch's choice); None in this one."""


#: A batch's worker process loads the model once, for the scenes it runs: (package, device) -> Detector.
_WORKER_DETECTORS: dict = {}


def _set_up_worker(worker: dict) -> None:
    """A spawned worker's logging (the command line's level and format) and torch threads."""
    import torch

    from .main import LOG_FORMAT

    logging.basicConfig(level=worker["log_level"], format=LOG_FORMAT)
    if worker["torch_threads"] is not None:
        torch.set_num_threads(worker["torch_threads"])


def _run_batch_scene(job: _BatchScene, detector=None) -> dict:
    """One scene of a batch: its summary entry, with its status and any error.

    It raises only `OutputWriteError` (the machine refused to write into the batch's folder: every
    later scene would fail the same way, after its work), and what stops a process.

    ``detector``: the batch's, in the process that runs the batch; a worker process loads its own.
    """
    from ..network import Detector
    from .outputs import OutputFolder
    from .refusals import machine_refusal

    start = time.perf_counter()
    entry = {"scene": job.scene, "folder": job.folder}
    try:
        if detector is None:
            key = (str(job.package), job.device)
            if key not in _WORKER_DETECTORS:  # the worker's first scene
                _set_up_worker(job.worker)
                _WORKER_DETECTORS[key] = Detector(job.package, job.device)
            detector = _WORKER_DETECTORS[key]
        # The batch emptied its folder of earlier outputs but those it keeps, so a sub-folder there
        # can only be this scene's, moved in by a worker killed before it reported.
        scene_folder = OutputFolder(job.out / job.folder, overwrite=True)
        entry.update(
            _run_scene(
                job.scene,
                detector,
                detector.metadata,
                job.config,
                scene_folder,
                job.plot,
                start,
                progress=job.worker is None,
            )
        )
        entry["status"] = "ok"
    except OutputWriteError:  # the batch's folder, not the scene: the batch stops
        raise
    except ResidualDetectronError as err:  # the scene's own problem: the others go on
        entry.update(status="failed", error=f"{type(err).__name__}: {err}")
        _log.error("%s: %s", job.scene, err)
    except Exception as err:
        reason = machine_refusal(err)
        if reason is not None:  # the machine's, not a bug: memory under a limit, a full cache disk
            entry.update(status="failed", error=reason)
            _log.error("%s: %s", job.scene, reason)
        else:  # a bug on this scene: recorded with its traceback, the others go on
            entry.update(status="internal error", error=f"{type(err).__name__}: {err}")
            _log.exception("%s: internal error (a bug; please report it)", job.scene)
    return entry


def _lost_scene(job: _BatchScene) -> dict:
    """The summary entry of a scene whose worker process died under it, also when it ran alone."""
    _log.error("%s: its worker process died, also when the scene ran alone", job.scene)
    return {
        "scene": job.scene,
        "folder": job.folder,
        "status": "worker died",
        "error": (
            "WorkerDiedError: the worker process running this scene died, also when the scene ran "
            "alone in a fresh process: killed by the system (out of memory, for instance; see the "
            "system log) or a crash in compiled code."
        ),
    }


def _scene_folders(scenes: list[str]) -> dict[str, str]:
    """Sub-folder name (the file stem) of each scene of a batch.

    Raises
    ------
    CommandError
        If two scenes have the same stem (their outputs would collide).
    """
    from .main import CommandError

    folders: dict[str, str] = {}
    for scene in scenes:
        stem = Path(scene).name.removesuffix(".gz").rsplit(".", 1)[0] or Path(scene).name
        if stem in folders.values():
            other = next(s for s, f in folders.items() if f == stem)
            raise CommandError(f"Scenes {other} and {scene} would both write --out/{stem}/; rename one.")
        folders[scene] = stem
    return folders


def main(args: argparse.Namespace) -> int:
    from ..network import Detector, model_path, read_model_metadata, select_device
    from .main import CommandError, input_files
    from .options import inference_config_from_args
    from .outputs import BatchFolder, OutputFolder, matching_outputs

    start = time.perf_counter()
    # Everything that can be wrong with the arguments is found before any work.
    if args.overwrite and args.skip_existing:
        raise CommandError(
            "--overwrite replaces earlier outputs and --skip-existing keeps those that match; choose one."
        )
    config = ChainConfig(
        detection=model_from_args(DetectionConfig, args, "detection options"),
        deblend=model_from_args(DeblendConfig, args, "deblend options"),
        inference=inference_config_from_args(args),
        new_sources=model_from_args(NewSourcesConfig, args, "new-source options"),
    )
    device = select_device(args.device)
    batch = len(args.scene) > 1
    folders = _scene_folders(args.scene) if batch else {}
    with input_files():
        package_path = model_path(args.model)
        metadata = read_model_metadata(package_path)
    if batch:
        # Locked against another batch into it until this one ends.
        with BatchFolder(
            args.out, folders.values(), overwrite=args.overwrite, skip_existing=args.skip_existing
        ) as out:
            return _run_batch(args, config, device, package_path, folders, out, start)
    out = OutputFolder(args.out, overwrite=args.overwrite or args.skip_existing, output_names=RUN_OUTPUTS)
    if args.skip_existing:
        with input_files():  # a missing scene file is the user's error, in one line
            inputs = run_inputs(args.scene[0], package_path, config)
        if matching_outputs(out.path, inputs) is not None:
            print(f"{out.path} holds this run's outputs already (--skip-existing); nothing to do.")
            return 0
    detector = Detector(package_path, device)
    summary = _run_scene(args.scene[0], detector, metadata, config, out, not args.no_plot, start)
    print(json.dumps(summary, indent=2))
    print(f"Wrote {', '.join(out.written)} in {out.path}.")
    return 0


def _kept_outputs(out, folder: str, scene, package_path, config: ChainConfig) -> dict | None:
    """The summary of a batch scene's earlier outputs that ``--skip-existing`` keeps, else None.

    A scene file that cannot be read keeps nothing: the scene then runs, and fails with its error.
    """
    if not (out.path / folder / "summary.json").is_file():
        return None
    try:
        inputs = run_inputs(scene, package_path, config)
    except OSError:
        return None
    return out.reusable(folder, inputs)


def _run_batch(args, config, device, package_path, folders, out, start) -> int:
    """``run`` on several scenes (`BatchFolder` ``out``); the exit status."""
    from tqdm.auto import tqdm

    from ..network import Detector
    from ..workers import ordered_map

    workers = min(args.workers, len(args.scene))
    # Each worker runs torch on its share of the cores (the deblender uses one), unless
    # OMP_NUM_THREADS says how many threads (torch then takes it, in every process).
    torch_threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // workers)
    worker = (
        None
        if workers == 1
        else {"log_level": logging.getLogger().getEffectiveLevel(), "torch_threads": torch_threads}
    )
    entries = [{"scene": str(scene), "folder": folders[scene], "status": "pending"} for scene in args.scene]
    jobs = []
    for index, scene in enumerate(args.scene):
        kept = args.skip_existing and _kept_outputs(out, folders[scene], scene, package_path, config)
        if kept:
            entries[index] = {
                **{k: v for k, v in kept.items() if k != "outputs"},
                "scene": str(scene),
                "folder": folders[scene],
                "status": "ok",
                "reused": True,
            }
            continue
        jobs.append(
            (
                index,
                _BatchScene(
                    scene=str(scene),
                    folder=folders[scene],
                    out=out.path,
                    package=package_path,
                    device=device,
                    config=config,
                    plot=not args.no_plot,
                    worker=worker,
                ),
            )
        )

    def summary() -> dict:
        failed = sum(entry["status"] not in ("ok", "pending") for entry in entries)
        return {
            "model": str(package_path),
            "device": device,
            "workers": workers,
            # What the workers' torch ran on: their share of the cores, or OMP_NUM_THREADS.
            "torch_threads_per_worker": None
            if worker is None
            else torch_threads or os.environ["OMP_NUM_THREADS"],
            "scenes": entries,
            "succeeded": sum(entry["status"] == "ok" for entry in entries),
            "failed": failed,
            "reused": sum(bool(entry.get("reused")) for entry in entries),
            "wall_seconds": round(time.perf_counter() - start, 2),
        }

    # Loaded once for every scene (by each worker process for its scenes, with several), and before
    # the folder is emptied of earlier outputs: a package that cannot be loaded leaves them.
    detector = Detector(package_path, device) if workers == 1 and jobs else None
    out.start(summary(), keep=[entry["folder"] for entry in entries if entry.get("reused")])
    run_one = functools.partial(_run_batch_scene, detector=detector)
    done = ordered_map(run_one, [job for _, job in jobs], workers, on_lost=_lost_scene)
    try:
        for (index, job), entry in zip(
            jobs, tqdm(done, total=len(jobs), desc="scenes", unit="scene"), strict=True
        ):
            entries[index] = entry
            if entry["status"] != "ok":
                out.discard(job.folder)  # what its worker left, if it was killed while moving it in
            out.update(summary())
    except BaseException:
        # Ctrl-C, SIGTERM (a time limit), a folder the machine no longer writes (a full disk) or an
        # error of the batch itself: the workers' scenes are stopped first, then what they left is
        # removed and the summary says what was done.
        done.close()
        stopped = summary()
        see = (
            f"see {out.path / 'summary.json'}"
            if out.stop(stopped)
            else f"its summary.json is an earlier one: the scene folders in {out.path} say which"
        )
        print(
            f"Stopped with {stopped['succeeded']} of {len(entries)} scenes done; the same command with "
            f"--skip-existing keeps them and runs the rest ({see}).",
            file=sys.stderr,
        )
        raise
    final = summary()
    out.finish(final)
    print(
        f"{final['succeeded']} of {len(entries)} scenes done"
        + (f" ({final['reused']} kept from an earlier batch)" if final["reused"] else "")
        + f"; see {out.path / 'summary.json'}."
    )
    for entry in entries:
        if entry["status"] != "ok":
            print(f"  {entry['scene']}: {entry['error']}")
    return 1 if final["failed"] else 0
