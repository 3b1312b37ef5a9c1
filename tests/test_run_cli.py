"""``residual-detectron run``: the chain on a scene file without a Butler."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tasks_helpers import make_tiny_package, tiny_scene
from astropy.io import fits
from astropy.table import Table
from lsst.meas.extensions.residual.cli.main import main
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
    assert "missing u,z,y" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert (
        main(["run", str(tmp_path / "nope.fits"), "--out", str(tmp_path / "out"), "--model", str(package)])
        == 2
    )
