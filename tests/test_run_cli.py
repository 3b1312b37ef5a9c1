"""``residual-detectron run``: the chain on a scene file without a Butler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _tasks_helpers import make_tiny_package, tiny_scene
from astropy.io import fits
from astropy.table import Table
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.cli.outputs import BatchFolder, check_output_folder
from lsst.meas.extensions.residual.cli.run import RUN_OUTPUTS as RUN_FILES
from lsst.meas.extensions.residual.deblending import read_scarlet_model
from lsst.meas.extensions.residual.network import read_source_detections
from lsst.meas.extensions.residual.scene import write_scene


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    scene = tiny_scene(22)
    write_scene(scene, tmp / "scene.fits")
    return tmp, make_tiny_package(tmp / "tiny.zip"), scene


def test_run_writes_catalog_with_pass_column_cubes_models_and_figure(files, capsys):
    tmp, package, scene = files
    out = tmp / "out"
    assert (
        main(["run", str(tmp / "scene.fits"), "--out", str(out), "--model", str(package), "--device", "cpu"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    catalog = Table.read(out / "catalog.fits")
    assert set(catalog["found_by"]) == {"first_pass", "residual"}
    residual_rows = catalog[catalog["found_by"] == "residual"]
    assert len(residual_rows) == summary["new_sources"] > 0
    assert set(residual_rows["class"]) <= {"star", "galaxy"} and np.all(residual_rows["score"] >= 0)
    first_scores = np.ma.filled(
        catalog[catalog["found_by"] == "first_pass"]["score"], np.nan
    )  # NaN reads as masked
    assert np.all(np.isnan(first_scores))
    assert summary["final_sources"] == len(catalog) == summary["first_pass_peaks"] + summary["new_sources"]
    new = read_source_detections(out / "new_sources.fits")
    np.testing.assert_array_equal(np.sort(new.table["id"]), np.sort(residual_rows["id"]))
    for name in ("residual_before.fits", "residual_after.fits"):
        with fits.open(out / name) as hdul:
            assert hdul["RESIDUAL"].data.shape == scene.image.shape
            assert hdul[0].header["BANDS"] == ",".join(scene.bands)
    before = fits.getdata(out / "residual_before.fits", "RESIDUAL")
    after = fits.getdata(out / "residual_after.fits", "RESIDUAL")
    assert not np.array_equal(before, after)
    assert len(read_scarlet_model(out / "second_pass.scarlet").blends) >= len(
        read_scarlet_model(out / "first_pass.scarlet").blends
    )
    assert (out / "run.png").stat().st_size > 10_000
    # Existing outputs are not replaced without --overwrite.
    assert main(["run", str(tmp / "scene.fits"), "--out", str(out), "--model", str(package)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_run_refuses_a_scene_without_the_package_bands(files, tmp_path, capsys):
    tmp, package, scene = files
    write_scene(scene.band_subset(("g", "r", "i")), tmp_path / "gri.fits")
    assert (
        main(["run", str(tmp_path / "gri.fits"), "--out", str(tmp_path / "out"), "--model", str(package)])
        == 2
    )
    err = capsys.readouterr().err
    assert "missing u,z,y" in err and "the shipped 'residual_v2'" in err  # names what takes such data
    assert not (tmp_path / "out").exists()
    assert (
        main(["run", str(tmp_path / "nope.fits"), "--out", str(tmp_path / "out"), "--model", str(package)])
        == 2
    )


def test_run_refuses_pixels_the_package_was_not_trained_on_unless_told(files, tmp_path, capsys):
    import dataclasses

    tmp, package, scene = files
    decam = dataclasses.replace(scene, metadata={**scene.metadata, "PIXSCALE": 0.262})
    write_scene(decam, tmp_path / "decam.fits")
    argv = ["run", str(tmp_path / "decam.fits"), "--model", str(package), "--no-plot"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert 'trained on pixels of 0.2"; the data has 0.262" pixels' in err and "--pixel-scale-tolerance" in err
    assert not (tmp_path / "out").exists()
    # Told to, it runs the model on the coarser pixels.
    assert main([*argv, "--out", str(tmp_path / "told"), "--pixel-scale-tolerance", "0.35"]) == 0
    assert (tmp_path / "told" / "catalog.fits").exists()


def test_run_on_a_band_subset_with_a_package_that_takes_them(files, tmp_path):
    tmp, _, scene = files
    subsets = make_tiny_package(tmp_path / "subsets.zip", recipe="residual+model+bad", band_subsets=True)
    for bands in (("g", "r", "i", "z", "y"), ("g", "r", "i"), ("i",)):
        name = "".join(bands)
        write_scene(scene.band_subset(bands), tmp_path / f"{name}.fits")
        out = tmp_path / f"out_{name}"
        assert main(["run", str(tmp_path / f"{name}.fits"), "--out", str(out), "--model", str(subsets)]) == 0
        catalog = Table.read(out / "catalog.fits")
        assert f"{bands[0]}_flux" in catalog.colnames and "u_flux" not in catalog.colnames
        assert json.loads((out / "summary.json").read_text())["bands"] == list(bands)


def _run(tmp, package, out, *extra):
    return main(["run", str(tmp / "scene.fits"), "--out", str(out), "--model", str(package), *extra])


def test_run_outputs_follow_the_butler_schema_and_list_themselves(files):
    from lsst.meas.extensions.residual.chain import PARENT_BIT

    tmp, package, scene = files
    out = tmp / "schema"
    assert _run(tmp, package, out, "--no-plot") == 0
    catalog = Table.read(out / "catalog.fits")
    # Patch 0 of tract 0: source ids are the local ones, parents carry the parent bit.
    assert np.all(np.asarray(catalog["parent"]) & PARENT_BIT)
    assert {f"{b}_flux" for b in scene.bands} <= set(catalog.colnames) and "ra" not in catalog.colnames
    new = read_source_detections(out / "new_sources.fits").table
    assert {"parent", "flag_in_parent", "flag_bad_pixels"} <= set(new.colnames)
    summary = check_output_folder(out)
    assert set(summary["outputs"]) == {p.name for p in out.iterdir()} - {"summary.json"}
    assert "run.png" not in summary["outputs"]


def test_interrupted_overwrite_leaves_the_previous_run_whole(files, monkeypatch, capsys):
    import lsst.meas.extensions.residual.cli.run as run_command

    tmp, package, _ = files
    out = tmp / "interrupted"
    assert _run(tmp, package, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(path, scene, model, name="RESIDUAL"):
        path.write_bytes(b"half a cube")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_command, "write_residual", interrupted)
    assert _run(tmp, package, out, "--overwrite", "--no-plot") == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".interrupted")] == []


def test_overwrite_without_the_figure_leaves_no_stale_figure(files):
    tmp, package, _ = files
    out = tmp / "stale"
    assert _run(tmp, package, out) == 0 and (out / "run.png").exists()
    assert _run(tmp, package, out, "--overwrite", "--no-plot") == 0
    assert not (out / "run.png").exists()
    assert "run.png" not in json.loads((out / "summary.json").read_text())["outputs"]


def test_without_the_figure_the_run_writes_with_one_model_cube_held_at_a_time(files, monkeypatch):
    import lsst.meas.extensions.residual.cli.run as run_command
    from lsst.meas.extensions.residual.deblending import DeblendResult

    tmp, package, _ = files
    events = []
    write_residual = run_command.write_residual
    release_model = DeblendResult.release_model

    def recording_write(path, scene, model, name="RESIDUAL"):
        events.append(path.name)
        write_residual(path, scene, model, name)

    def recording_release(result):
        # The second pass's result has the new sources' rows.
        events.append("release " + ("second" if "residual" in set(result.catalog["found_by"]) else "first"))
        release_model(result)

    monkeypatch.setattr(run_command, "write_residual", recording_write)
    monkeypatch.setattr(DeblendResult, "release_model", recording_release)
    assert _run(tmp, package, tmp / "one_cube", "--no-plot") == 0
    written = events[events.index("residual_after.fits") :]
    assert written[:3] == ["residual_after.fits", "release second", "residual_before.fits"]
    assert written[3] == "release first"


@pytest.mark.parametrize(
    "option, message",
    [
        (["--score-threshold", "1.5"], "score_threshold"),
        (["--score-threshold", "-1"], "score_threshold"),
        (["--tile-size", "33"], "tile_size"),
        (["--match-radius", "-1"], "match_radius"),
        (["--threshold", "0"], "threshold"),
        (["--device", "tpu"], "tpu"),
    ],
)
def test_bad_options_are_refused_before_any_work(files, monkeypatch, capsys, option, message):
    import lsst.meas.extensions.residual.chain as chain

    tmp, package, _ = files

    def no_work(*args, **kwargs):
        raise AssertionError("the chain ran despite a bad option")

    monkeypatch.setattr(chain, "run_chain", no_work)
    assert _run(tmp, package, tmp / "bad", *option) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp / "bad").exists()


@pytest.mark.parametrize("where", ["existing file", "under a file", "unwritable"])
def test_an_unusable_out_is_refused_before_any_work(files, monkeypatch, capsys, where):
    import lsst.meas.extensions.residual.chain as chain

    tmp, package, _ = files
    (tmp / "a_file").write_text("not a folder")
    out = {
        "existing file": tmp / "a_file",
        "under a file": tmp / "a_file" / "out",
        "unwritable": Path("/proc/residual-detectron-test/out"),
    }[where]

    def no_work(*args, **kwargs):
        raise AssertionError("the chain ran before --out was checked")

    monkeypatch.setattr(chain, "run_chain", no_work)
    assert _run(tmp, package, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("residual-detectron run: error: --out")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_batch_run_loads_the_model_once_and_one_bad_scene_does_not_stop_the_others(
    files, tmp_path, monkeypatch, capsys
):
    from lsst.meas.extensions.residual.network import inference

    tmp, package, scene = files
    write_scene(scene.band_subset(("g", "r", "i")), tmp_path / "gri.fits")  # lacks the package's bands
    (tmp_path / "broken.fits").write_bytes(b"not a FITS file")
    write_scene(tiny_scene(23), tmp_path / "other.fits")
    scenes = [tmp / "scene.fits", tmp_path / "gri.fits", tmp_path / "broken.fits", tmp_path / "other.fits"]
    loads = []
    original = inference.Detector.__init__

    def counting(self, *args, **kwargs):
        loads.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(inference.Detector, "__init__", counting)
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package), "--no-plot"]
    assert main(argv) == 1  # some scenes failed
    assert len(loads) == 1
    summary = check_output_folder(out)
    by_folder = {entry["folder"]: entry for entry in summary["scenes"]}
    assert [e["status"] for e in summary["scenes"]] == ["ok", "failed", "failed", "ok"]
    assert "missing u,z,y" in by_folder["gri"]["error"] and by_folder["broken"]["error"]
    assert (summary["succeeded"], summary["failed"]) == (2, 2)
    for good in ("scene", "other"):
        single = check_output_folder(out / good)  # the layout and manifest of a single run
        assert set(single["outputs"]) == {n for n in RUN_FILES if n not in ("run.png", "summary.json")}
        assert by_folder[good]["final_sources"] == single["final_sources"] > 0
    assert not (out / "gri").exists() and not (out / "broken").exists()
    # The single-scene outputs equal a single run's.
    assert _run(tmp, package, tmp_path / "single", "--no-plot") == 0
    np.testing.assert_array_equal(
        Table.read(tmp_path / "single" / "catalog.fits")["g_flux"],
        Table.read(out / "scene" / "catalog.fits")["g_flux"],
    )
    # Shared among worker processes whose torch has this one's threads: the same entries in the
    # same order, the same outputs.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    shared = tmp_path / "shared"
    argv = ["run", *map(str, scenes), "--out", str(shared), "--model", str(package), "--no-plot"]
    assert main([*argv, "--workers", "2"]) == 1
    parallel = check_output_folder(shared)
    assert parallel["workers"] == 2 and summary["workers"] == 1
    assert parallel["torch_threads_per_worker"] == str(torch.get_num_threads())  # OMP_NUM_THREADS's
    for serial_entry, parallel_entry in zip(summary["scenes"], parallel["scenes"], strict=True):
        for key in ("scene", "folder", "status", "error", "final_sources", "new_sources"):
            assert parallel_entry.get(key) == serial_entry.get(key), key
    for good in ("scene", "other"):
        made, expected = shared / good, out / good
        assert set(check_output_folder(made)["outputs"]) == set(check_output_folder(expected)["outputs"])
        np.testing.assert_array_equal(
            Table.read(made / "catalog.fits")["g_flux"], Table.read(expected / "catalog.fits")["g_flux"]
        )


def test_batch_scenes_with_the_same_stem_are_refused(files, tmp_path, capsys):
    tmp, package, _ = files
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "scene.fits").write_bytes((tmp / "scene.fits").read_bytes())
    argv = ["run", str(tmp / "scene.fits"), str(tmp_path / "a" / "scene.fits"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--model", str(package)]) == 2
    assert "would both write" in capsys.readouterr().err


def _scene_files(folder: Path, prefix: str, seeds) -> list[Path]:
    """Tiny scenes written as ``folder/<prefix><seed>.fits``."""
    paths = [folder / f"{prefix}{seed}.fits" for seed in seeds]
    for path, seed in zip(paths, seeds, strict=True):
        write_scene(tiny_scene(seed), path)
    return paths


def _child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_batch_goes_on_when_a_worker_process_is_killed_under_a_scene(files, tmp_path):
    """A worker killed while it writes a scene's outputs (as the out-of-memory killer would):
    the scenes it and the other worker were running run again alone, every scene gets its outputs,
    and the killed writer's temporary folder does not reach the outputs."""
    tmp, package, _ = files
    scenes = _scene_files(tmp_path, "s", (31, 32, 33))
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package)]
    batch = subprocess.Popen(
        **_batch_process(argv, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 240
    # A scene's temporary output folder (inside the batch's own) appears when its worker writes.
    while killed is None and batch.poll() is None and time.monotonic() < deadline:
        if any(out.glob(".*.partial-*")):
            for pid in _child_pids(batch.pid):  # the pool's workers (and multiprocessing's tracker)
                if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
        time.sleep(0.005)
    stdout, stderr = batch.communicate(timeout=300)
    assert killed is not None, "no worker was seen writing a scene"
    assert "A worker process died" in stderr
    assert batch.returncode == 0, stderr[-3000:]
    summary = check_output_folder(out)
    assert [entry["status"] for entry in summary["scenes"]] == ["ok"] * 3
    assert not any(".partial-" in name for name in summary["outputs"])
    assert not list(out.glob(".*"))
    for scene in scenes:
        single = check_output_folder(out / scene.stem)
        assert set(single["outputs"]) == {n for n in RUN_FILES if n != "summary.json"}


def test_a_killed_batch_keeps_what_it_finished_and_skip_existing_does_the_rest(files, tmp_path, capsys):
    """The batch process killed outright (a cluster's time limit) after its first scene: that scene's
    outputs are in place and the summary says the batch is incomplete; run again with
    --skip-existing, the batch keeps them untouched and runs only the others."""
    tmp, package, _ = files
    scenes = _scene_files(tmp_path, "k", (41, 42, 43))
    out = tmp_path / "batch"
    argv = [
        "run",
        *map(str, scenes),
        "--out",
        str(out),
        "--model",
        str(package),
        "--no-plot",
        "--device",
        "cpu",
    ]
    script = Path(sys.executable).parent / "residual-detectron"
    batch = subprocess.Popen(
        [str(script), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = out / "k41" / "summary.json"
    deadline = time.monotonic() + 240
    while not first.exists() and batch.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    batch.send_signal(signal.SIGKILL)
    batch.communicate(timeout=60)
    assert batch.returncode == -signal.SIGKILL, "the batch ended before it could be killed"
    killed = json.loads((out / "summary.json").read_text())
    assert killed["complete"] is False and "outputs" not in killed
    assert killed["scenes"][-1]["status"] == "pending"
    kept = {p.name: os.stat(p).st_mtime_ns for p in (out / "k41").iterdir()}
    check_output_folder(out / "k41")

    # Without a flag the folder is not touched, nor with two that contradict each other.
    assert main(argv) == 2
    assert "--skip-existing" in capsys.readouterr().err
    assert main([*argv, "--skip-existing", "--overwrite"]) == 2
    assert "choose one" in capsys.readouterr().err
    assert {p.name: os.stat(p).st_mtime_ns for p in (out / "k41").iterdir()} == kept

    assert main([*argv, "--skip-existing"]) == 0
    summary = check_output_folder(out)
    assert summary["complete"] is True
    assert [entry.get("reused", False) for entry in summary["scenes"]] == [True, False, False]
    assert summary["reused"] == 1 and summary["succeeded"] == 3
    assert not list(out.glob(".*"))  # what the killed batch left of its temporary files is gone
    assert {p.name: os.stat(p).st_mtime_ns for p in (out / "k41").iterdir()} == kept
    assert summary["scenes"][0]["final_sources"] == json.loads(first.read_text())["final_sources"]
    for scene in scenes[1:]:
        assert check_output_folder(out / scene.stem)["inputs"]["scene_sha256"]

    # Other options: nothing is kept, every scene runs again.
    assert main([*argv, "--skip-existing", "--score-threshold", "0.9"]) == 0
    again = check_output_folder(out)
    assert again["reused"] == 0 and again["succeeded"] == 3
    assert {p.name: os.stat(p).st_mtime_ns for p in (out / "k41").iterdir()} != kept


def _batch_process(argv: list[str], workers: int) -> dict:
    """``args`` and ``env`` of a process running the command line ``argv`` on the CPU with
    ``workers`` workers, one torch thread each."""
    script = Path(sys.executable).parent / "residual-detectron"
    return {
        "args": [str(script), *argv, "--device", "cpu", "--workers", str(workers)],
        "env": {**os.environ, "OMP_NUM_THREADS": "1"},
    }


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_sent_sigterm_stops_cleanly_and_skip_existing_does_the_rest(files, tmp_path, workers):
    """SIGTERM (a batch system's time limit, scancel) to the batch process alone, after its first
    scene: it stops its scenes, workers included, removes their temporary folders, writes a summary
    that says what it finished, and exits with 143; --skip-existing then does the rest."""
    tmp, package, _ = files
    scenes = _scene_files(tmp_path, "t", (51, 52, 53, 54, 55, 56))
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package), "--no-plot"]
    batch = subprocess.Popen(
        **_batch_process(argv, workers), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = out / "t51" / "summary.json"
    deadline = time.monotonic() + 240
    while not first.exists() and batch.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # for the batch to record the scene: its folder is moved in before
    spawned = [
        pid
        for pid in _child_pids(batch.pid)
        if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    batch.send_signal(signal.SIGTERM)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 143, stderr[-3000:]
    assert "terminated (SIGTERM)" in stderr and "--skip-existing" in stderr
    assert "leaked semaphore" not in stderr
    assert len(spawned) == (workers if workers > 1 else 0)
    assert not any(_alive(pid) for pid in spawned)  # stopped with the batch, not left running
    stopped = json.loads((out / "summary.json").read_text())
    statuses = [entry["status"] for entry in stopped["scenes"]]
    assert stopped["complete"] is False and statuses[0] == "ok" and statuses[-1] == "pending"
    assert set(statuses) == {"ok", "pending"}
    assert not list(out.glob(".*"))  # no temporary folder, summary or probe left
    # Every scene folder is whole: those the summary lists as done, and one that a worker may have
    # moved in as the signal came, before the batch recorded it (--skip-existing keeps it too).
    folders = {path.name for path in out.iterdir() if path.is_dir()}
    assert {entry["folder"] for entry in stopped["scenes"] if entry["status"] == "ok"} <= folders
    for name in folders:
        check_output_folder(out / name)

    assert main([*argv, "--skip-existing"]) == 0
    summary = check_output_folder(out)
    assert summary["succeeded"] == len(scenes) and summary["reused"] == len(folders)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_stops_when_the_machine_refuses_its_writes(files, tmp_path, workers):
    """A full disk or a quota would fail every later scene after its work: the batch stops at the
    first refused write, in one line, keeps what it finished, and --skip-existing does the rest.

    The refusal is real: a file-size limit (``ulimit -f``) that the 192² scene's residual cubes
    exceed and the 64² scenes' files do not. astropy's FITS writer then keeps no errno, as on a full disk.
    """
    import resource

    tmp, package, _ = files
    scenes = [tmp_path / "f1.fits", tmp_path / "f2.fits", tmp_path / "f3.fits"]
    for path, seed, size in zip(scenes, (71, 72, 73), (64, 192, 64), strict=True):
        write_scene(tiny_scene(seed, size), path)
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package), "--no-plot"]
    # A 192² six-band residual cube is 864 KiB; the 64² scenes' files and numba's caches are < 250 KiB.
    limit = 600 << 10

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    batch = subprocess.run(
        **_batch_process(argv, workers),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_file_size,
        timeout=300,
    )
    assert batch.returncode == 2, batch.stderr[-3000:]
    lines = batch.stderr.splitlines()
    assert "Stopped with 1 of 3 scenes done" in batch.stderr and "--skip-existing" in batch.stderr
    assert lines[-1].startswith("residual-detectron run: error: writing the outputs failed (a write was cut")
    assert str(out / "f2") in lines[-1]
    assert "internal error" not in batch.stderr and "leaked semaphore" not in batch.stderr
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["complete"] is False
    assert [entry["status"] for entry in stopped["scenes"]] == ["ok", "pending", "pending"]
    assert not list(out.glob(".*"))  # no temporary folder left
    # f3 may have been done by the other worker before f2 failed: whole, and kept below.
    folders = {path.name for path in out.iterdir() if path.is_dir()}
    assert "f1" in folders and "f2" not in folders
    for name in folders:
        check_output_folder(out / name)

    assert main([*argv, "--skip-existing"]) == 0
    summary = check_output_folder(out)
    assert summary["succeeded"] == 3 and summary["reused"] == len(folders)


def test_a_second_batch_into_a_folder_a_batch_is_writing_is_refused(files, tmp_path, capsys):
    tmp, package, _ = files
    scenes = _scene_files(tmp_path, "c", (61, 62))
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package), "--no-plot"]
    with BatchFolder(out, ["c61", "c62"]) as running:
        running.start({"scenes": []})
        (out / ".c61.partial-running").mkdir()
        assert main([*argv, "--skip-existing"]) == 2
        assert "being written by another batch" in capsys.readouterr().err
        assert sorted(os.listdir(out)) == [".c61.partial-running", "summary.json"]
    (out / ".c61.partial-running").rmdir()
    assert main([*argv, "--skip-existing"]) == 0


def test_a_single_run_with_skip_existing_keeps_matching_outputs(files, tmp_path, capsys):

    tmp, package, _ = files
    out = tmp_path / "single"
    argv = ["run", str(tmp / "scene.fits"), "--out", str(out), "--model", str(package), "--no-plot"]
    assert main(argv) == 0
    written = (out / "catalog.fits").stat().st_mtime_ns
    capsys.readouterr()
    assert main([*argv, "--skip-existing"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "catalog.fits").stat().st_mtime_ns == written
    # A changed output file no longer matches its manifest: the run is done again.
    with open(out / "catalog.fits", "ab") as stream:
        stream.write(b"\0")
    assert main([*argv, "--skip-existing"]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    check_output_folder(out)


def test_skip_existing_batch_with_a_missing_scene_file_records_it_and_runs_the_others(files, tmp_path):
    tmp, package, _ = files
    out = tmp_path / "batch"
    argv = ["run", str(tmp / "scene.fits"), str(tmp_path / "gone.fits"), "--out", str(out)]
    assert main([*argv, "--model", str(package), "--no-plot", "--skip-existing"]) == 1
    summary = check_output_folder(out)
    assert [entry["status"] for entry in summary["scenes"]] == ["ok", "failed"]
    assert "gone.fits" in summary["scenes"][1]["error"]


@pytest.mark.parametrize(
    "refusal, recorded",
    [
        (
            PermissionError(13, "Permission denied", "/cache/index.nbi"),
            "[Errno 13] Permission denied: '/cache/index.nbi'",
        ),
        (
            MemoryError("Unable to allocate 96.0 MiB for an array"),
            "out of memory: Unable to allocate 96.0 MiB for an array",
        ),
    ],
)
def test_a_scene_the_machine_refuses_fails_alone_and_is_not_called_a_bug(
    files, tmp_path, monkeypatch, refusal, recorded
):
    """A refusal met while a scene runs, outside its outputs (memory under ``ulimit -v``, a cache
    the disk cannot take): that scene fails with what the system said, the batch goes on."""
    from lsst.meas.extensions.residual import chain

    tmp, package, _ = files
    scenes = _scene_files(tmp_path, "m", (81, 82))
    real_chain = chain.run_chain

    def refused_on_the_first(scene, *args, **kwargs):
        if not refused:
            refused.append(True)
            raise refusal
        return real_chain(scene, *args, **kwargs)

    refused = []
    monkeypatch.setattr(chain, "run_chain", refused_on_the_first)
    out = tmp_path / "batch"
    argv = ["run", *map(str, scenes), "--out", str(out), "--model", str(package), "--no-plot"]
    assert main(argv) == 1
    summary = check_output_folder(out)
    assert [entry["status"] for entry in summary["scenes"]] == ["failed", "ok"]
    assert summary["scenes"][0]["error"].startswith(recorded)
