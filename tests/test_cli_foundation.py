"""``residual-detectron simulate`` / ``detect-peaks``: outputs and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.detection import read_detections
from lsst.meas.extensions.residual.scene import read_scene


def test_simulate_then_detect(tmp_path):
    scene_path, peaks_path = tmp_path / "scene.fits", tmp_path / "peaks.fits"
    assert main(["simulate", "--seed", "4", "--size", "64", "--bands", "gri", "--out", str(scene_path)]) == 0
    scene = read_scene(scene_path)
    assert scene.bands == ("g", "r", "i") and scene.shape == (64, 64)
    assert main(["detect-peaks", str(scene_path), "--out", str(peaks_path)]) == 0
    detections = read_detections(peaks_path)
    assert detections.footprints.shape == (64, 64)
    assert np.all(
        detections.footprints[detections.peaks["y"].astype(int), detections.peaks["x"].astype(int)] > 0
    )


def test_refuses_to_clobber(tmp_path, capsys):
    out = tmp_path / "scene.fits"
    out.write_bytes(b"precious")
    assert main(["simulate", "--seed", "1", "--size", "32", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--seed", "1", "--bands", "ugrizq"], "Unknown band"),
        (["simulate", "--seed", "1", "--size", "-8"], "height: Input should be greater than 0"),
        (["simulate", "--seed", "1", "--bands", "gg"], "more than once"),
    ],
)
def test_simulate_bad_input(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "x.fits")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err
    assert not (tmp_path / "x.fits").exists()


def test_detect_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits at all" * 50)
    assert main(["detect-peaks", str(bad), "--out", str(tmp_path / "p.fits")]) == 2
    assert "not a readable FITS" in capsys.readouterr().err
    assert main(["detect-peaks", str(tmp_path / "nope.fits"), "--out", str(tmp_path / "p.fits")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_installed(tmp_path):
    """The pip entry point runs (what users type)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "residual-detectron"
    out = tmp_path / "s.fits"
    result = subprocess.run(
        [str(script), "simulate", "--seed", "2", "--size", "40", "--bands", "r", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert read_scene(out).bands == ("r",)
    bad = subprocess.run(
        [str(script), "simulate", "--seed", "2", "--bands", "x", "--out", str(tmp_path / "b.fits")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Unknown band" in bad.stderr
