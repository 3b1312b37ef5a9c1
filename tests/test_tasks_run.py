"""The PipelineTasks' ``run`` methods (no Butler I/O): the chain, its bookkeeping and bad inputs."""

from __future__ import annotations

import lsst.pipe.base as pipeBase
import numpy as np
import pytest
from _tasks_helpers import make_tiny_package, tiny_scene
from lsst.meas.extensions.residual.chain import IdMap, PatchPlacement, model_data_to_patch, source_ids
from lsst.meas.extensions.residual.deblending import (
    ScarletModelDataError,
    parent_footprints,
    render_model_data,
)
from lsst.meas.extensions.residual.network import ModelPackageError, load_model_package
from lsst.meas.extensions.residual.scene import SceneFormatError
from lsst.meas.extensions.residual.tasks import (
    FirstPassDeblendConfig,
    FirstPassDeblendTask,
    FirstPassDetectionConfig,
    FirstPassDetectionTask,
    ResidualDeblendConfig,
    ResidualDeblendTask,
    ResidualDetectionConfig,
    ResidualDetectionTask,
)
from lsst.meas.extensions.residual.tasks.coadds import scene_to_cell_coadds
from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

SKYMAP = DemoSkyMap(patch_size=64, patch_nx=2, patch_ny=2)
TRACT, PATCH = 0, 3


def _deblend_config(config):
    config.deblend.maxIter = 30
    return config


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return load_model_package(make_tiny_package(tmp_path_factory.mktemp("package") / "tiny.zip"))


@pytest.fixture(scope="module")
def scene():
    return tiny_scene(22)  # three blends: one gains sources, two do not; new sources outside them too


@pytest.fixture(scope="module")
def coadds(scene):
    return scene_to_cell_coadds(scene, SKYMAP, PATCH)


@pytest.fixture(scope="module")
def chain(coadds, package):
    """The four tasks run one after the other, as the pipeline runs them."""
    detection = FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(coadds, TRACT, PATCH)
    first = FirstPassDeblendTask(config=_deblend_config(FirstPassDeblendConfig())).run(
        coadds, detection.catalog, detection.footprints, TRACT, PATCH
    )
    residual = ResidualDetectionTask(config=ResidualDetectionConfig()).run(
        coadds, first.deblendCatalog, first.scarletModels, package, TRACT, PATCH
    )
    second = ResidualDeblendTask(config=_deblend_config(ResidualDeblendConfig())).run(
        coadds,
        detection.catalog,
        detection.footprints,
        first.deblendCatalog,
        first.scarletModels,
        residual.newSources,
        TRACT,
        PATCH,
    )
    return detection, first, residual, second


def test_first_pass_outputs_are_in_tract_pixels_with_global_ids(chain):
    detection, first, _, _ = chain
    geometry = SKYMAP.patch(PATCH)
    assert len(detection.catalog) >= 3
    assert (
        detection.footprints.bbox.x.start == geometry.x0 and detection.footprints.bbox.y.start == geometry.y0
    )
    catalog = first.deblendCatalog
    np.testing.assert_array_equal(np.sort(catalog["id"]), np.sort(detection.catalog["id"]))
    assert set(catalog["found_by"]) == {"first_pass"}
    assert np.all(catalog["x"] >= geometry.x0) and np.all(catalog["x"] < geometry.x0 + 64)
    models = first.scarletModels
    blend_and_isolated = set(models.blends) | set(models.isolated)
    assert blend_and_isolated == set(np.asarray(catalog["parent"]).tolist())
    for blend in models.blends.values():
        for child in blend.children.values():
            assert child.origin[0] >= geometry.y0 - 32 and child.origin[1] >= geometry.x0 - 32


def test_butler_model_data_renders_the_first_pass_model(chain, scene):
    _, first, _, _ = chain
    catalog = first.deblendCatalog
    id_map = IdMap(TRACT, PATCH, sources=catalog["id"], parents=catalog["parent"])
    geometry = SKYMAP.patch(PATCH)
    local = model_data_to_patch(
        first.scarletModels, PatchPlacement(TRACT, PATCH, geometry.x0, geometry.y0), id_map
    )
    model = render_model_data(local, scene.shape, bands=scene.bands, image=scene.clean_image())
    np.testing.assert_allclose(model, first.result.model, rtol=1e-5, atol=1e-6 * float(np.abs(model).max()))
    labels = parent_footprints(local, scene.shape)
    np.testing.assert_array_equal(labels > 0, first.result.detections.footprints > 0)


def test_residual_detections_are_new_and_numbered_after_the_first_pass(chain):
    detection, first, residual, _ = chain
    new = residual.newSources
    assert len(new) > 0  # an untrained net at score threshold 0 always proposes something
    for column in (
        "id",
        "parent",
        "x",
        "y",
        "ra",
        "dec",
        "class",
        "score",
        "bbox_x0",
        "bbox_y1",
        "flag_edge",
    ):
        assert column in new.colnames
    old_xy = np.column_stack([first.deblendCatalog["x"], first.deblendCatalog["y"]])
    new_xy = np.column_stack([new["x"], new["y"]])
    distance = np.sqrt(((new_xy[:, None] - old_xy[None]) ** 2).sum(-1)).min(axis=1)
    assert np.all(distance > 2.0)
    n_first = len(detection.catalog)
    np.testing.assert_array_equal(
        new["id"], source_ids(np.arange(n_first + 1, n_first + 1 + len(new)), 0, PATCH)
    )
    assert set(new["class"]) <= {"star", "galaxy"}
    np.testing.assert_array_equal(residual.newFootprints.table["id"], new["id"])
    assert residual.newFootprints.metadata["X0"] == SKYMAP.patch(PATCH).x0
    assert np.all(new["bbox_x0"] <= new["x"]) and np.all(new["x"] <= new["bbox_x1"])
    # Parent: the first-pass footprint under the centroid, 0 outside any.
    assert set(np.asarray(new["parent"]).tolist()) <= set(first.deblendCatalog["parent"]) | {0}
    np.testing.assert_array_equal(new["flag_in_parent"], np.asarray(new["parent"]) != 0)


def test_second_pass_keeps_every_source_and_says_which_pass_found_it(chain):
    _, first, residual, second = chain
    catalog = second.outputCatalog
    assert set(first.deblendCatalog["id"]) <= set(catalog["id"])
    from_residual = np.asarray(catalog["found_by"]) == "residual"
    assert from_residual.sum() == len(residual.newSources)
    np.testing.assert_array_equal(np.sort(catalog["id"][from_residual]), np.sort(residual.newSources["id"]))
    # A new source keeps its id and carries the network's class and score.
    by_id = {int(i): k for k, i in enumerate(residual.newSources["id"])}
    for row in catalog[from_residual]:
        new = residual.newSources[by_id[int(row["id"])]]
        assert row["class"] == new["class"] and row["score"] == new["score"]
    assert set(catalog["class"][~from_residual]) == {""} and np.all(
        np.isnan(catalog["score"][~from_residual])
    )
    # Blends that gained no source are copied unchanged, arrays and all.
    touched = set(np.asarray(catalog["parent"][from_residual]).tolist())
    untouched = set(first.scarletModels.blends) - touched
    assert (
        untouched and touched & set(first.scarletModels.blends) and touched - set(first.scarletModels.blends)
    )
    for key in untouched:
        assert second.outputModels.blends[key] is not None
        old = list(first.scarletModels.blends[key].children.values())[0]
        new = list(second.outputModels.blends[key].children.values())[0]
        assert old.origin == new.origin
        for source_id, source in old.sources.items():
            np.testing.assert_array_equal(
                source.components[0].morph, new.sources[source_id].components[0].morph
            )
    first_rows = catalog[~from_residual]
    kept = first.deblendCatalog[np.isin(first.deblendCatalog["parent"], list(untouched))]
    assert len(kept)
    for row in kept:
        match = first_rows[first_rows["id"] == row["id"]][0]
        assert match["r_flux"] == row["r_flux"]


def test_empty_patch_is_no_work_found(coadds, package, chain):
    _, first, _, _ = chain
    saved = {band: coadd.mask.array.copy() for band, coadd in coadds.items()}
    try:
        for coadd in coadds.values():
            coadd.mask.set("NO_DATA", np.ones((64, 64), dtype=bool))
        with pytest.raises(pipeBase.NoWorkFound, match="no usable pixel"):
            FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(coadds, TRACT, PATCH)
        with pytest.raises(pipeBase.NoWorkFound):
            ResidualDetectionTask(config=ResidualDetectionConfig()).run(
                coadds, first.deblendCatalog, first.scarletModels, package, TRACT, PATCH
            )
    finally:
        for band, coadd in coadds.items():
            coadd.mask.array = saved[band]


def test_missing_band_for_a_patch_is_a_clear_error(coadds, package, chain):
    _, first, _, _ = chain
    five = {band: coadd for band, coadd in coadds.items() if band != "z"}
    with pytest.raises(SceneFormatError, match=r"tract 0 patch 3: no coadd in band\(s\) z"):
        ResidualDetectionTask(config=ResidualDetectionConfig()).run(
            five, first.deblendCatalog, first.scarletModels, package, TRACT, PATCH
        )


def test_model_package_bands_must_be_in_the_data_and_the_model_data(coadds, package, chain):
    _, first, _, _ = chain
    config = ResidualDetectionConfig()
    config.bands = ["g", "r", "i"]
    with pytest.raises(ModelPackageError, match="needs bands u,g,r,i,z,y.*missing u,z,y"):
        ResidualDetectionTask(config=config).run(
            coadds, first.deblendCatalog, first.scarletModels, package, 0, PATCH
        )
    # A first pass run on five bands cannot give the six-band model the package needs.
    five = {band: coadd for band, coadd in coadds.items() if band != "u"}
    detection = FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(five, TRACT, PATCH)
    first5 = FirstPassDeblendTask(config=_deblend_config(FirstPassDeblendConfig())).run(
        five, detection.catalog, detection.footprints, TRACT, PATCH
    )
    with pytest.raises(ScarletModelDataError, match="u"):
        ResidualDetectionTask(config=ResidualDetectionConfig()).run(
            coadds, first5.deblendCatalog, first5.scarletModels, package, TRACT, PATCH
        )


def test_a_package_taking_band_subsets_runs_on_a_patch_without_u(coadds, tmp_path):
    path = make_tiny_package(tmp_path / "subsets.zip", recipe="residual+model+bad", band_subsets=True)
    subsets = load_model_package(path)
    five = {band: coadd for band, coadd in coadds.items() if band != "u"}
    detection = FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(five, TRACT, PATCH)
    first = FirstPassDeblendTask(config=_deblend_config(FirstPassDeblendConfig())).run(
        five, detection.catalog, detection.footprints, TRACT, PATCH
    )
    # No bands configured: the package's that the patch has (grizy).
    residual = ResidualDetectionTask(config=ResidualDetectionConfig()).run(
        five, first.deblendCatalog, first.scarletModels, subsets, TRACT, PATCH
    )
    assert residual.patch_images.scene.bands == ("g", "r", "i", "z", "y")
    assert len(residual.newSources) > 0 and "u_flux" not in residual.newSources.colnames


def test_band_lists_out_of_order_are_refused_by_config_validation():
    for config_class in (FirstPassDetectionConfig, FirstPassDeblendConfig, ResidualDetectionConfig):
        config = config_class()
        config.bands = ["r", "g"]
        with pytest.raises(ValueError, match="not in LSST wavelength order"):
            config.validate()
    config = ResidualDetectionConfig()
    config.find.inference.tileSize = 100
    with pytest.raises(ValueError, match="multiple of 32"):
        config.validate()


def test_nan_and_masked_regions_give_finite_outputs_and_no_peaks_there(scene, package):
    coadds = scene_to_cell_coadds(scene, SKYMAP, PATCH)
    coadds["r"].image.array[40:52, 5:20] = np.nan
    masked = np.zeros((64, 64), dtype=bool)
    masked[5:15, 40:60] = True
    for coadd in coadds.values():
        coadd.mask.set("NO_DATA", masked)
    detection = FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(coadds, TRACT, PATCH)
    first = FirstPassDeblendTask(config=_deblend_config(FirstPassDeblendConfig())).run(
        coadds, detection.catalog, detection.footprints, TRACT, PATCH
    )
    residual = ResidualDetectionTask(config=ResidualDetectionConfig()).run(
        coadds, first.deblendCatalog, first.scarletModels, package, TRACT, PATCH
    )
    geometry = SKYMAP.patch(PATCH)
    x = np.asarray(first.deblendCatalog["x"]) - geometry.x0
    y = np.asarray(first.deblendCatalog["y"]) - geometry.y0
    assert not np.any((y >= 5) & (y < 15) & (x >= 40) & (x < 60))
    scene = residual.patch_images.scene
    network_residual = np.where(scene.good, scene.image - residual.model, np.float32(0))
    assert np.isfinite(first.result.model).all() and np.isfinite(network_residual).all()
    assert np.all(network_residual[:, 5:15, 40:60] == 0)
    for column in ("x", "y", "score", "ra", "dec"):
        assert np.isfinite(np.asarray(residual.newSources[column], dtype=float)).all()
    touches_bad = []
    bad = ~residual.patch_images.scene.good.all(axis=0)
    for footprint in residual.newFootprints.footprints:
        sy, sx = footprint.slices
        touches_bad.append(bool(bad[sy, sx][footprint.mask].any()))
    np.testing.assert_array_equal(residual.newSources["flag_bad_pixels"], touches_bad)
