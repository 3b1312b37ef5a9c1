"""``residual-detectron deblend``."""

from __future__ import annotations

import json

import numpy as np
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.deblending import read_deblend_result
from lsst.meas.extensions.residual.detection import detect_peaks, write_detections
from lsst.meas.extensions.residual.scene import write_scene


def test_deblend_command_writes_the_result_and_reports_user_errors(small_scene, tmp_path, capsys):
    scene_path, peaks_path, out = tmp_path / "scene.fits", tmp_path / "peaks.fits", tmp_path / "deblended"
    write_scene(small_scene, scene_path)
    detections = detect_peaks(small_scene)
    write_detections(detections, peaks_path)
    assert main(["deblend", str(scene_path), "--peaks", str(peaks_path), "--out", str(out), "--plot"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sources"] == len(detections.peaks)
    for name in (
        "catalog.fits",
        "model.fits",
        "residual.fits",
        "peaks.fits",
        "models.scarlet",
        "summary.json",
        "deblend.png",
    ):
        assert (out / name).stat().st_size > 0
    result = read_deblend_result(out)
    assert len(result.catalog) == len(detections.peaks)
    assert np.all(np.isfinite(result.residual))

    # Existing output without --overwrite, a missing peaks file, a file that is not a scene:
    # exit 2, no traceback.
    assert main(["deblend", str(scene_path), "--peaks", str(peaks_path), "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    nope, fresh = str(tmp_path / "nope.fits"), str(tmp_path / "y")
    assert main(["deblend", str(scene_path), "--peaks", nope, "--out", fresh]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["deblend", str(peaks_path), "--peaks", str(peaks_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a scene" in capsys.readouterr().err
