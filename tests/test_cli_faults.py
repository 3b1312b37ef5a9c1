"""The command line's fault list (issue 8): each fault a new user hit, and what it does now.

Outputs are checked before any work, replaced whole or not at all; bad input
gives one line; a bug gives an internal error with its traceback.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _tasks_helpers import make_tiny_package, tiny_scene
from astropy.io import fits
from astropy.table import Table
from lsst.meas.extensions.residual import deblending, detection, scene, simulation
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.cli.outputs import (
    BatchFolder,
    OutputFile,
    OutputFolder,
    check_output_folder,
)
from lsst.meas.extensions.residual.cli.refusals import refused_memory, refused_write
from lsst.meas.extensions.residual.deblending import io as deblend_io
from lsst.meas.extensions.residual.detection import detect_peaks, write_detections
from lsst.meas.extensions.residual.errors import MissingInputError, OutputError, OutputWriteError
from lsst.meas.extensions.residual.scene import Scene, SceneFormatError, read_scene, write_scene

UNWRITABLE = "/proc/residual-detectron-test/out"  # nobody, not even root, creates files in /proc


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 64-pixel six-band scene file and its peaks file."""
    folder = tmp_path_factory.mktemp("inputs")
    tiny = tiny_scene(3)
    write_scene(tiny, folder / "scene.fits")
    write_detections(detect_peaks(tiny), folder / "peaks.fits")
    return folder / "scene.fits", folder / "peaks.fits"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    pytest.importorskip("torch")
    return make_tiny_package(tmp_path_factory.mktemp("package") / "tiny.zip")


@pytest.fixture
def no_work(monkeypatch):
    """Make the first piece of real work of every command fail the test if it is reached."""

    def reached(*args, **kwargs):
        raise AssertionError("the command started working before refusing its --out")

    # Modules that bind these names at import must be imported before the patch, or they would
    # keep the patched function for the rest of the session.
    import lsst.meas.extensions.residual.evaluation.evaluate  # noqa: F401
    import lsst.meas.extensions.residual.groundtruth.scenes  # noqa: F401

    monkeypatch.setattr(scene, "read_scene", reached)
    monkeypatch.setattr(simulation, "simulate_scene", reached)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"residual-detectron {command}: error: "), err
    return lines[0]


def _deblend_argv(inputs, out, *extra):
    scene_path, peaks_path = inputs
    return [
        "deblend",
        str(scene_path),
        "--peaks",
        str(peaks_path),
        "--out",
        str(out),
        "--max-iter",
        "20",
        *extra,
    ]


def _find_argv(inputs, package, out, *extra):
    return ["find", str(inputs[0]), "--model", str(package), "--out", str(out), "--device", "cpu", *extra]


def _leftovers(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


# --- --out checked before any work -------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--seed", "1", "--size", "64", "--out", "{folder}"], "is a folder"),
        (["detect-peaks", "{scene}", "--out", "{folder}"], "is a folder"),
        (["deblend", "{scene}", "--peaks", "{peaks}", "--out", "{file}"], "is an existing file"),
        (["find", "{scene}", "--out", "{file}", "--device", "cpu"], "is an existing file"),
        (["evaluate", "--scenes", "1", "--out", "{file}", "--device", "cpu"], "is an existing file"),
        (["simulate", "--seed", "1", "--size", "64", "--out", UNWRITABLE + ".fits"], "cannot write in /proc"),
        (["detect-peaks", "{scene}", "--out", UNWRITABLE + ".fits"], "cannot write in /proc"),
        (["deblend", "{scene}", "--peaks", "{peaks}", "--out", UNWRITABLE], "cannot write in /proc"),
        (["find", "{scene}", "--out", UNWRITABLE, "--device", "cpu"], "cannot write in /proc"),
        (["deblend", "{scene}", "--peaks", "{peaks}", "--out", "{file}/sub"], "is a file, not a folder"),
    ],
)
def test_bad_out_fails_at_once_with_one_line(inputs, tmp_path, capsys, no_work, argv, message):
    if "/proc" in message and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    existing_file = tmp_path / "existing.fits"
    existing_file.write_bytes(b"precious")
    (tmp_path / "folder").mkdir()
    names = {"scene": inputs[0], "peaks": inputs[1], "file": existing_file, "folder": tmp_path / "folder"}
    command = argv[0]
    assert main([arg.format(**names) for arg in argv]) == 2
    assert message in _one_line_error(capsys, command)
    assert existing_file.read_bytes() == b"precious"
    assert os.listdir(tmp_path / "folder") == []


def test_existing_outputs_are_named_and_kept(inputs, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "catalog.fits").write_bytes(b"old")
    assert main(_deblend_argv(inputs, out)) == 2
    line = _one_line_error(capsys, "deblend")
    assert "already holds catalog.fits" in line and "--overwrite" in line
    assert (out / "catalog.fits").read_bytes() == b"old"


def test_overwrite_refuses_a_folder_with_files_no_run_wrote(inputs, tmp_path, capsys, no_work):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    assert main(_deblend_argv(inputs, out, "--overwrite")) == 2
    assert "chapter1.tex, which this command does not write" in _one_line_error(capsys, "deblend")
    assert (out / "chapter1.tex").read_text() == "years of work"


# --- outputs replaced whole or not at all --------------------------------------------------------


def test_deblend_outputs_have_a_manifest_and_overwrite_leaves_no_stale_figure(inputs, tmp_path, capsys):
    out = tmp_path / "deblended"
    assert main(_deblend_argv(inputs, out, "--plot")) == 0
    first = check_output_folder(out)
    assert set(first["outputs"]) == {
        "catalog.fits",
        "model.fits",
        "residual.fits",
        "peaks.fits",
        "models.scarlet",
        "deblend.png",
    }
    assert first["n_sources"] > 0 and "config" in first  # the result's own summary is kept
    assert deblending.read_deblend_result(out).catalog is not None
    assert main(_deblend_argv(inputs, out, "--overwrite")) == 0
    second = check_output_folder(out)
    assert "deblend.png" not in second["outputs"] and not (out / "deblend.png").exists()
    assert _leftovers(tmp_path) == []


def _raised_while_handling(error: BaseException, context: BaseException) -> BaseException:
    """``error`` as raised in an ``except`` block of ``context`` (a writer wrapping what it met)."""
    try:
        try:
            raise context
        except BaseException:
            raise error  # noqa: B904 -- the implicit chain is what writers leave
    except BaseException as raised:
        return raised


# What a full disk leaves of its ENOSPC in astropy's FITS writer, seen on a full tmpfs: numpy's
# ``tofile`` reports the byte counts alone, and astropy raises a new OSError in its place.
CUT_SHORT = _raised_while_handling(
    OSError("393216 requested and 305760 written"), OSError("393216 requested and 305760 written")
)


@pytest.mark.parametrize(
    "interruption, status, message",
    [
        (KeyboardInterrupt(), 130, "residual-detectron deblend: interrupted."),
        (OSError(errno.ENOSPC, "No space left on device"), 2, "error: writing the outputs failed"),
        (CUT_SHORT, 2, "error: writing the outputs failed (a write was cut short: 393216 requested"),
        (
            _raised_while_handling(RuntimeError("unexpected pos 704 vs 598"), OSError(errno.EDQUOT, "Quota")),
            2,
            "error: writing the outputs failed (Quota: unexpected pos 704 vs 598)",
        ),
        (RuntimeError("a bug in a writer"), 1, "internal error"),
    ],
)
def test_interrupted_overwrite_leaves_the_previous_outputs(
    inputs, tmp_path, capsys, monkeypatch, interruption, status, message
):
    out = tmp_path / "deblended"
    assert main(_deblend_argv(inputs, out)) == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    def interrupted(*args, **kwargs):
        raise interruption

    # The catalog, model and residual are written by then: the interruption is mid-way.
    monkeypatch.setattr(deblend_io, "write_scarlet_model", interrupted)
    capsys.readouterr()
    assert main(_deblend_argv(inputs, out, "--overwrite", "--max-iter", "5")) == status
    assert message in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    check_output_folder(out)
    assert _leftovers(tmp_path) == []


def test_the_machines_refusal_to_write_is_read_through_the_writers_wrappers():
    no_space = OSError(errno.ENOSPC, "No space left on device")
    assert refused_write(no_space) == "[Errno 28] No space left on device"
    wrapped = _raised_while_handling(OSError("Not enough space on disk: requested 1572864"), no_space)
    assert refused_write(wrapped) == "No space left on device: Not enough space on disk: requested 1572864"
    # torch's writer, given a Python file, turns the file's error into a RuntimeError.
    over_quota = _raised_while_handling(
        RuntimeError("unexpected pos 704 vs 598"), OSError(errno.EDQUOT, "Disk quota exceeded")
    )
    assert refused_write(over_quota).startswith("Disk quota exceeded")
    assert refused_write(CUT_SHORT).startswith("a write was cut short: 393216 requested and 305760 written")
    # The program's own errors stay bugs; the first errno of a chain is the one that counts.
    assert refused_write(OSError(errno.ENOENT, "No such file or directory")) is None
    assert refused_write(OSError("File 'x.fits' already exists.")) is None
    assert refused_write(RuntimeError("a bug in a writer")) is None
    assert refused_write(_raised_while_handling(OSError(errno.EISDIR, "Is a directory"), no_space)) is None


def test_a_refused_write_outside_an_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """Say a training run's checkpoint on a full disk, met during the work (here the simulation's),
    before the outputs are staged: not a bug, so no traceback."""

    def full_disk(*args, **kwargs):
        raise _raised_while_handling(
            RuntimeError("unexpected pos 704 vs 598"), OSError(errno.ENOSPC, "No space left on device")
        )

    monkeypatch.setattr(simulation, "simulate_scene", full_disk)
    assert main(["simulate", "--seed", "1", "--size", "32", "--out", str(tmp_path / "s.fits")]) == 2
    err = capsys.readouterr().err
    assert "residual-detectron simulate: error: No space left on device: unexpected pos" in err
    assert "internal error" not in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_a_memory_limit_is_the_machines_refusal_and_names_the_limit(tmp_path, capsys, monkeypatch):
    """numpy under ``ulimit -v`` raises MemoryError (seen on a 2048² patch under a 4 GB limit):
    one line that says which limit, not an internal error."""
    import resource

    numpy_says = "Unable to allocate 96.0 MiB for an array with shape (6, 2048, 2048) and data type float32"
    assert refused_memory(RuntimeError("a bug")) is None
    assert refused_memory(OSError(errno.ENOSPC, "No space left on device")) is None
    wrapped = _raised_while_handling(RuntimeError("fit failed"), MemoryError(numpy_says))
    assert refused_memory(wrapped).startswith(f"out of memory: {numpy_says}")

    unlimited = resource.getrlimit

    def limited(which):  # ulimit -v 3906250
        return (4_000_000_000, resource.RLIM_INFINITY) if which == resource.RLIMIT_AS else unlimited(which)

    monkeypatch.setattr(resource, "getrlimit", limited)

    def out_of_memory(scene_, path, overwrite=False):
        raise MemoryError(numpy_says)

    monkeypatch.setattr(scene, "write_scene", out_of_memory)
    assert main(["simulate", "--seed", "1", "--size", "32", "--out", str(tmp_path / "s.fits")]) == 2
    err = capsys.readouterr().err
    assert (
        f"simulate: error: out of memory: {numpy_says}; this process may use at most 4.0 GB (ulimit -v)"
        in err
    )
    assert "internal error" not in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_interrupted_single_file_overwrite_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "scene.fits"
    assert main(["simulate", "--seed", "1", "--size", "32", "--bands", "r", "--out", str(out)]) == 0
    before = out.read_bytes()

    def half_written(scene_, path, overwrite=False):
        Path(path).write_bytes(b"SIMPLE  =                    T" + b" " * 50)  # a truncated FITS file
        raise KeyboardInterrupt

    monkeypatch.setattr(scene, "write_scene", half_written)
    assert main(["simulate", "--seed", "2", "--size", "32", "--out", str(out), "--overwrite"]) == 130
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["scene.fits"]


def test_find_overwrite_no_plot_leaves_no_stale_overlay(inputs, package, tmp_path, capsys):
    out = tmp_path / "found"
    assert main(_find_argv(inputs, package, out)) == 0
    assert "overlay.png" in check_output_folder(out)["outputs"]
    assert main(_find_argv(inputs, package, out, "--overwrite", "--no-plot")) == 0
    summary = check_output_folder(out)
    assert set(summary["outputs"]) == {"sources.fits", "sources.ecsv"}
    assert sorted(os.listdir(out)) == ["sources.ecsv", "sources.fits", "summary.json"]


def test_output_folder_api(tmp_path):
    target = tmp_path / "a" / "b"  # parents are made when the outputs are moved in
    folder = OutputFolder(target, output_names=["x.txt"])
    with folder.staging() as staged:
        (staged / "x.txt").write_text("x")
        (staged / "sub").mkdir()
        (staged / "sub" / "y.txt").write_text("y")
        staged.summary["answer"] = 42
    assert folder.written == ["sub/y.txt", "x.txt", "summary.json"]
    summary = check_output_folder(target)
    assert summary["answer"] == 42 and set(summary["outputs"]) == {"x.txt", "sub/y.txt"}
    (target / "x.txt").write_text("edited")
    (target / "extra").write_text("")
    with pytest.raises(OutputError, match="not listed extra; changed x.txt"):
        check_output_folder(target)
    with pytest.raises(OutputError, match="already holds"):
        OutputFolder(target)
    with pytest.raises(OutputError, match="is an existing file"):
        OutputFolder(target / "x.txt")
    with pytest.raises(OutputError, match="is a folder"):
        OutputFile(target)


def test_batch_folder_api(tmp_path):
    target = tmp_path / "batch"
    batch = BatchFolder(target, ["a", "b"])
    batch.start({"scenes": [{"folder": "a", "status": "pending"}, {"folder": "b", "status": "pending"}]})
    with OutputFolder(target / "a").staging() as staged:
        (staged / "x.txt").write_text("x")
        staged.summary["inputs"] = {"scene": 1}
    # Throttled: a second update right after is not written, unless forced.
    batch.update({"scenes": [{"folder": "a", "status": "ok"}]})
    assert json.loads((target / "summary.json").read_text())["scenes"][0]["status"] == "pending"
    batch.update({"scenes": [{"folder": "a", "status": "ok"}]}, force=True)
    written = json.loads((target / "summary.json").read_text())
    assert written["complete"] is False and written["scenes"][0]["status"] == "ok"
    (target / ".write-probe-killed").write_bytes(b"")  # a worker killed while it checked the folder
    batch.finish({"scenes": [{"folder": "a", "status": "ok"}]})
    summary = check_output_folder(target)
    assert summary["complete"] is True and set(summary["outputs"]) == {"a/x.txt", "a/summary.json"}
    with pytest.raises(OutputError, match="--skip-existing") as refused:
        BatchFolder(target, ["a", "b"])
    (target / "notes.txt").write_text("mine")
    # The refused batch holds no lock, although its error (and so the batch) is still referenced.
    with pytest.raises(OutputError, match="notes.txt"):
        BatchFolder(target, ["a", "b"], skip_existing=True)
    del refused
    (target / "notes.txt").unlink()
    (target / ".write-probe-killed").write_bytes(b"")  # the batch killed while it checked the folder
    again = BatchFolder(target, ["a", "b"], skip_existing=True)
    assert not (target / ".write-probe-killed").exists()
    assert again.reusable("a", {"scene": 1})["inputs"] == {"scene": 1}
    assert again.reusable("a", {"scene": 2}) is None and again.reusable("b", {"scene": 1}) is None
    (target / "a" / "x.txt").write_text("edited")
    assert again.reusable("a", {"scene": 1}) is None  # no longer matches its manifest
    # A killed batch's staging folder of a scene the next batch does not run is its own, not foreign.
    (target / ".b.partial-killed").mkdir()
    (target / "summary.json").write_text(json.dumps({"scenes": [{"folder": "a"}, {"folder": "b"}]}))
    again.close()  # the batch ends: another may start
    BatchFolder(target, ["a"], overwrite=True).start({"scenes": []})
    assert os.listdir(target) == ["summary.json"]


def test_a_batch_folder_is_locked_against_a_second_batch(tmp_path, caplog, monkeypatch):
    """Two batches into one folder (a job submitted again while the first runs) would each remove
    the other's temporary folders as a killed batch's: the second is refused while the first runs."""
    target = tmp_path / "batch"
    first = BatchFolder(target, ["a"])  # the folder does not exist yet: locked when it is made
    first.start({"scenes": []})
    (target / ".a.partial-running").mkdir()  # the first batch is writing scene a
    for options in ({"skip_existing": True}, {"overwrite": True}, {}):
        with pytest.raises(OutputError, match="being written by another batch"):
            BatchFolder(target, ["a"], **options)
    assert (target / ".a.partial-running").is_dir()  # untouched by the refused batches
    # A batch that checked the folder before it existed is refused when it makes it.
    late = BatchFolder(tmp_path / "new", ["a"])
    with BatchFolder(tmp_path / "new", ["a"]) as early:
        early.start({"scenes": []})
        with pytest.raises(OutputError, match="being written by another batch"):
            late.start({"scenes": []})
    late.start({"scenes": []})  # the `with` block released it
    late.close()
    first.stop({"scenes": []})  # stopped early: its temporary folders removed, the folder released
    assert os.listdir(target) == ["summary.json"]
    BatchFolder(target, ["a"], skip_existing=True).close()

    # A file system that does not lock: the batch runs, unguarded, and says so.
    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("lsst.meas.extensions.residual.cli.outputs.fcntl.flock", no_locks)
    with caplog.at_level("WARNING"):
        BatchFolder(target, ["a"], skip_existing=True).start({"scenes": []})
    assert "Could not lock" in caplog.text and "No locks available" in caplog.text


def test_a_batch_stopped_on_a_full_disk_keeps_its_earlier_summary_and_releases_its_folder(
    tmp_path, caplog, monkeypatch
):
    """`BatchFolder.stop` raises nothing of its own: the reason the batch stopped goes on."""
    target = tmp_path / "batch"
    batch = BatchFolder(target, ["a", "b"])
    batch.start({"scenes": ["a", "b"], "succeeded": 0})
    (target / ".b.partial-running").mkdir()
    earlier = (target / "summary.json").read_text()

    def full_disk(self, summary):
        raise OutputWriteError("writing the outputs failed ([Errno 28] No space left on device)")

    monkeypatch.setattr(BatchFolder, "_write", full_disk)
    with caplog.at_level("WARNING"):
        assert batch.stop({"scenes": ["a", "b"], "succeeded": 1}) is False
    assert "summary was not brought up to date" in caplog.text and "No space left" in caplog.text
    caplog.clear()
    assert (target / "summary.json").read_text() == earlier
    assert os.listdir(target) == ["summary.json"]  # b's temporary folder removed all the same
    BatchFolder(target, ["a", "b"], skip_existing=True).close()  # released

    # A file system turned read-only under the batch: its leftovers cannot be removed either.
    stopped = BatchFolder(target, ["a", "b"], skip_existing=True)
    (target / ".b.partial-running").mkdir()

    def read_only(self, items):
        raise OSError(errno.EROFS, "Read-only file system", str(target / ".b.partial-running"))

    monkeypatch.setattr(BatchFolder, "_remove_leftovers", read_only)
    with caplog.at_level("WARNING"):
        assert stopped.stop({"scenes": ["a", "b"], "succeeded": 1}) is False
    assert "Read-only file system" in caplog.text
    assert (target / "summary.json").read_text() == earlier
    monkeypatch.undo()
    BatchFolder(target, ["a", "b"], skip_existing=True).close()  # released, and tidied now
    assert os.listdir(target) == ["summary.json"]
    assert BatchFolder(target, ["a"], skip_existing=True).stop({"scenes": ["a"]}) is True


# --- bad input: one line, naming the problem -----------------------------------------------------


def _edit_scene_file(source: Path, path: Path, edit) -> Path:
    with fits.open(source) as hdul:
        hdus = fits.HDUList([hdu.copy() for hdu in hdul])
    edit(hdus)
    hdus.writeto(path)
    return path


def _other_truth_schema(hdus):
    other = Table({"x": [10.0, 20.0], "y": [5.0, 40.0], "class": ["star", "galaxy"], "flux_i": [1.0, 2.0]})
    truth = fits.table_to_hdu(other)
    truth.name = "TRUTH"
    hdus["TRUTH"] = truth
    del hdus["TRUTH_STAMPS"]


def test_truth_of_another_schema_is_ignored_with_a_warning(inputs, package, tmp_path, capsys, caplog):
    path = _edit_scene_file(inputs[0], tmp_path / "other_truth.fits", _other_truth_schema)
    with caplog.at_level("WARNING"):
        assert read_scene(path).truth is None
    assert "TRUTH ignored" in caplog.text and "no id, flux, mag" in caplog.text
    assert main(["detect-peaks", str(path), "--out", str(tmp_path / "peaks.fits")]) == 0
    peaks = tmp_path / "peaks.fits"
    argv = ["deblend", str(path), "--peaks", str(peaks), "--out", str(tmp_path / "d"), "--max-iter", "5"]
    assert main(argv) == 0
    assert main(_find_argv((path, peaks), package, tmp_path / "f", "--no-plot")) == 0


def test_truth_with_another_band_count_is_ignored(inputs, tmp_path, caplog):
    def drop_u(hdus):
        for name in ("IMAGE", "VARIANCE", "PSF"):
            hdus[name].data = hdus[name].data[1:]
        hdus[0].header["BANDS"] = "g,r,i,z,y"

    path = _edit_scene_file(inputs[0], tmp_path / "five.fits", drop_u)
    with caplog.at_level("WARNING"):
        assert read_scene(path).truth is None
    assert "6 band(s), the scene 5" in caplog.text


def test_bands_with_a_stray_comma(inputs, tmp_path, capsys):
    def trailing_comma(hdus):
        hdus[0].header["BANDS"] = "u,g,r,i,z,y,"

    path = _edit_scene_file(inputs[0], tmp_path / "comma.fits", trailing_comma)
    assert main(["detect-peaks", str(path), "--out", str(tmp_path / "p.fits")]) == 2
    line = _one_line_error(capsys, "detect-peaks")
    assert "empty band name at position 7" in line and "wavelength order" not in line


def _shifted_psf(psf: np.ndarray) -> np.ndarray:
    return np.roll(psf, 3, axis=-1)


def _negative_psf(psf: np.ndarray) -> np.ndarray:
    negative = psf.astype(np.float64)
    negative[:, 0, :3] = -0.05 * negative.max(axis=(1, 2))[:, None]  # 5% of the peak below zero
    return negative / negative.sum(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize(
    "change, message", [(_shifted_psf, "off centre"), (_negative_psf, "negative pixels")]
)
def test_bad_psf_is_refused(inputs, tmp_path, capsys, change, message):
    original = read_scene(inputs[0])
    with pytest.raises(SceneFormatError, match=message):
        Scene(original.image, original.variance, change(original.psf), original.bands)

    def bad_psf(hdus):
        hdus["PSF"].data = change(hdus["PSF"].data)

    path = _edit_scene_file(inputs[0], tmp_path / "psf.fits", bad_psf)
    assert main(["detect-peaks", str(path), "--out", str(tmp_path / "p.fits")]) == 2
    line = _one_line_error(capsys, "detect-peaks")
    assert message in line and "band u" in line


def test_psf_round_off_and_small_wings_pass(inputs):
    original = read_scene(inputs[0])
    psf = original.psf.astype(np.float64)
    size = psf.shape[-1]
    ring = np.hypot(*np.mgrid[:size, :size] - size // 2) > size // 2 - 2
    psf[:, ring] -= 2e-4 * psf.max()  # a slightly negative outer ring, as real PSF models have
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    psf[:, size // 2, size // 2 + 1] += 1e-7  # float32 round-off
    Scene(original.image, original.variance, psf, original.bands)


def test_real_hsc_psfs_are_accepted(shared_fixtures):
    for name in ("hsc_cosmos_35.npz", "hsc_cosmos.npz"):
        data = np.load(shared_fixtures / "real" / "hsc" / name)
        images = data["images"]
        variance = data["variance"] if "variance" in data else np.ones_like(images)
        Scene(images, variance, data["psfs"], tuple(str(b) for b in data["filters"]))


def test_unknown_device_is_one_line_before_any_work(inputs, tmp_path, capsys, no_work):
    pytest.importorskip("torch")
    assert main(["find", str(inputs[0]), "--out", str(tmp_path / "f"), "--device", "tpu"]) == 2
    assert "Unknown device 'tpu'" in _one_line_error(capsys, "find")


@pytest.mark.parametrize("value", ["-1", "1.5"])
def test_score_threshold_out_of_range(inputs, tmp_path, capsys, no_work, value):
    argv = ["find", str(inputs[0]), "--out", str(tmp_path / "f"), "--score-threshold", value]
    assert main(argv) == 2
    assert "score_threshold" in _one_line_error(capsys, "find")


def test_missing_inputs_are_one_line(inputs, package, tmp_path, capsys):
    missing = str(tmp_path / "nope.fits")
    cases = [
        (["detect-peaks", missing, "--out", str(tmp_path / "p.fits")], "detect-peaks"),
        (["deblend", str(inputs[0]), "--peaks", missing, "--out", str(tmp_path / "d")], "deblend"),
        (["find", str(inputs[0]), "--model", missing, "--out", str(tmp_path / "f")], "find"),
        (_find_argv(inputs, package, tmp_path / "g", "--first-pass-model", missing), "find"),
    ]
    for argv, command in cases:
        assert main(argv) == 2
        assert "does not exist" in _one_line_error(capsys, command)
    with pytest.raises(FileNotFoundError):  # still one, for callers that catch that
        read_scene(missing)
    assert issubclass(MissingInputError, FileNotFoundError)


def test_peaks_of_another_scene_are_one_line(inputs, tmp_path, capsys):
    other = tmp_path / "other.fits"
    assert main(["simulate", "--seed", "5", "--size", "48", "--out", str(other)]) == 0
    assert main(["deblend", str(other), "--peaks", str(inputs[1]), "--out", str(tmp_path / "d")]) == 2
    assert "is for a (64, 64) image" in _one_line_error(capsys, "deblend")


def test_a_bug_is_an_internal_error_with_its_traceback(inputs, tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(detection, "detect_peaks", bug)
    assert main(["detect-peaks", str(inputs[0]), "--out", str(tmp_path / "p.fits")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("residual-detectron detect-peaks: internal error (a bug; please report it):")
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert os.listdir(tmp_path) == []


def test_summary_is_valid_json_listing_everything(inputs, tmp_path):
    out = tmp_path / "d"
    assert main(_deblend_argv(inputs, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["outputs"]) | {"summary.json"} == set(os.listdir(out))
