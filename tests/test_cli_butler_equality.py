"""One chain: a patch through ``pipetask run`` and through ``residual-detectron run`` gives one output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tasks_helpers import make_repo, make_tiny_package
from astropy.io import fits
from astropy.table import Table

OUTPUT = "equality/output"


def _column(table: Table, name: str) -> np.ndarray:
    values = np.asarray(table[name])
    return values.astype(str) if values.dtype.kind in "SU" else values


def _assert_same_table(butler_table: Table, cli_table: Table, what: str) -> None:
    # The Butler's coadds carry a WCS, scene files do not: ra/dec are the only Butler-only columns.
    assert {"ra", "dec"} <= set(butler_table.colnames), what
    assert [c for c in butler_table.colnames if c not in ("ra", "dec")] == cli_table.colnames, what
    assert len(butler_table) == len(cli_table), what
    for name in cli_table.colnames:
        np.testing.assert_array_equal(_column(butler_table, name), _column(cli_table, name), err_msg=name)


@pytest.fixture(scope="module")
def both_doors(tmp_path_factory):
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.cli.main import main
    from lsst.meas.extensions.residual.scene import write_scene
    from lsst.meas.extensions.residual.tasks.coadds import DEFAULT_BAD_MASK_PLANES, read_patch
    from lsst.meas.extensions.residual.tasks.paths import PACKAGE_DIR_ENV, package_dir, package_file

    tmp = tmp_path_factory.mktemp("equality")
    package = make_tiny_package(tmp / "tiny.zip")
    # One 64-pixel patch at the tract origin: tract pixels are the scene's pixels.
    make_repo(tmp / "repo", package, patches=1, seed=22)
    pipetask = Path(sys.executable).parent / "pipetask"
    env = {**os.environ, PACKAGE_DIR_ENV: str(package_dir())}
    subprocess.run(
        [
            str(pipetask),
            "run",
            "-b",
            str(tmp / "repo"),
            "-p",
            str(package_file("pipelines/demo.yaml")),
            "-i",
            "demo/inputs,demo/models",
            "-o",
            OUTPUT,
            "--register-dataset-types",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    butler = Butler.from_config(str(tmp / "repo"), collections=[OUTPUT])
    data_id = {"skymap": "residual_demo", "tract": 0, "patch": 0}
    coadds = {
        ref.dataId["band"]: butler.get(ref)
        for ref in butler.query_datasets("deep_coadd", data_id=data_id, collections=["demo/inputs"])
    }
    # The scene file holds exactly the pixels and PSFs the tasks read.
    patch = read_patch(coadds, None, DEFAULT_BAD_MASK_PLANES, "patch 0")
    write_scene(patch.scene, tmp / "scene.fits")
    # pipetask runs tasks single-threaded (lsst.utils.threads.disable_implicit_threading); the
    # network's sums round differently on two threads, so run the command as pipetask runs tasks.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(tmp / "scene.fits"), "--out", str(tmp / "run"), "--model", str(package)]) == 0
    finally:
        torch.set_num_threads(threads)
    return butler, data_id, patch, tmp / "run"


def test_final_catalogs_are_identical(both_doors):
    butler, data_id, _, out = both_doors
    catalog = butler.get("object_residual_deblend", data_id)
    assert np.sum(np.asarray(catalog["found_by"]) == "residual") > 0  # the chain had work to do
    _assert_same_table(catalog, Table.read(out / "catalog.fits"), "final catalog")


def test_new_sources_and_their_footprints_are_identical(both_doors):
    from lsst.meas.extensions.residual.network import read_source_detections

    butler, data_id, _, out = both_doors
    cli = read_source_detections(out / "new_sources.fits")
    _assert_same_table(butler.get("object_residual_detection", data_id), cli.table, "new sources")
    stored = butler.get("object_residual_footprints", data_id)
    _assert_same_table(stored.table, cli.table, "footprint table")
    assert len(stored.footprints) == len(cli.footprints) > 0
    for a, b in zip(stored.footprints, cli.footprints, strict=True):
        assert (a.y0, a.x0) == (b.y0, b.x0)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_residuals_before_and_after_are_identical(both_doors):
    from lsst.meas.extensions.residual.chain import PatchPlacement, model_data_to_patch
    from lsst.meas.extensions.residual.deblending import render_model_data

    butler, data_id, patch, out = both_doors
    scene = patch.scene
    for models, catalog, cube in (
        ("object_scarlet_models", "object_deblend", "residual_before.fits"),
        ("object_residual_scarlet_models", "object_residual_deblend", "residual_after.fits"),
    ):
        table = butler.get(catalog, data_id)
        placement = PatchPlacement()
        id_map = placement.id_map(sources=table["id"], parents=table["parent"])
        local = model_data_to_patch(butler.get(models, data_id), placement, id_map)
        model = render_model_data(local, scene.shape, bands=scene.bands, image=scene.clean_image())
        residual = np.where(scene.good, scene.image - model, np.float32(0))
        np.testing.assert_array_equal(residual, fits.getdata(out / cube, "RESIDUAL"), err_msg=cube)
