"""``ResidualDetectionTask`` on DRP-typed datasets (ExposureF, SourceCatalog, LsstScarletModelData).

Without afw: a repository is filled with files laid out as the DRP writes them (afw
MaskedImage FITS coadds, a FITS catalog with DRP's columns and ids, the
``.scarlet`` container), registered under DRP's storage classes. The task,
configured with ``inputFlavor = "drp"``, must read them by URI and find
exactly what it finds on the same data in the embedded flavour.
"""

from __future__ import annotations

import numpy as np
import pytest
from _tasks_helpers import make_tiny_package, tiny_scene, write_afw_masked_image
from astropy.table import Table
from lsst.meas.extensions.residual.deblending import transform_model_data, write_scarlet_model
from lsst.meas.extensions.residual.network import load_model_package
from lsst.meas.extensions.residual.tasks import (
    FirstPassDeblendConfig,
    FirstPassDeblendTask,
    FirstPassDetectionConfig,
    FirstPassDetectionTask,
    ResidualDetectionConfig,
    ResidualDetectionTask,
)
from lsst.meas.extensions.residual.tasks.coadds import scene_to_cell_coadds
from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

SKYMAP = DemoSkyMap(patch_size=64, patch_nx=2, patch_ny=1)
PATCH = 1
DRP_BASE = 7_000_000_000_000  # DRP packs ids its own way; anything but ours


def _drp_id(our_id: int, table: dict[int, int]) -> int:
    return table.setdefault(int(our_id), DRP_BASE + len(table) + 1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from lsst.daf.butler import DataCoordinate, DatasetRef, DatasetType, FileDataset
    from lsst.meas.extensions.residual.tasks.repo import (
        create_repo,
        ingest_model_package,
        register_bands,
        register_skymap,
    )

    tmp = tmp_path_factory.mktemp("drp")
    package_path = make_tiny_package(tmp / "tiny.zip")
    scene = tiny_scene(22)
    coadds = scene_to_cell_coadds(scene, SKYMAP, PATCH)
    config = FirstPassDeblendConfig()
    config.deblend.maxIter = 30
    detection = FirstPassDetectionTask(config=FirstPassDetectionConfig()).run(coadds, 0, PATCH)
    first = FirstPassDeblendTask(config=config).run(coadds, detection.catalog, detection.footprints, 0, PATCH)

    # The first pass as DRP would have written it: other ids, parent rows in the catalog.
    ids: dict[int, int] = {}
    catalog = first.deblendCatalog
    parents = sorted(set(np.asarray(catalog["parent"]).tolist()))
    rows = {
        "id": [_drp_id(p, ids) for p in parents] + [_drp_id(i, ids) for i in catalog["id"]],
        "parent": [0] * len(parents) + [ids[int(p)] for p in catalog["parent"]],
        "deblend_nChild": [int(np.sum(catalog["parent"] == p)) for p in parents] + [0] * len(catalog),
        "deblend_peak_center_x": [0.0] * len(parents) + list(np.asarray(catalog["x"])),
        "deblend_peak_center_y": [0.0] * len(parents) + list(np.asarray(catalog["y"])),
        "coord_ra": [0.0] * (len(parents) + len(catalog)),
    }
    drp_models = transform_model_data(
        first.scarletModels, source_id=lambda i: ids[i], parent_id=lambda i: ids[i], dy=0, dx=0
    )
    geometry = SKYMAP.patch(PATCH)
    files = {}
    for index, band in enumerate(scene.bands):
        path = tmp / f"deep_coadd_{band}.fits"
        planes = {"BAD": 0, "SAT": 1, "NO_DATA": 8}
        mask = np.zeros(scene.shape, dtype=np.int32)
        pixels = (scene.image[index], scene.variance[index], mask)
        write_afw_masked_image(path, *pixels, planes, geometry.x0, geometry.y0, SKYMAP.wcs())
        files[("deep_coadd", band)] = path
    Table(rows).write(tmp / "object_deblend.fits")
    files[("object_deblend", None)] = tmp / "object_deblend.fits"
    write_scarlet_model(tmp / "object_scarlet_models.scarlet", drp_models)
    files[("object_scarlet_models", None)] = tmp / "object_scarlet_models.scarlet"

    root = tmp / "repo"
    butler = create_repo(root)
    register_skymap(butler, SKYMAP)
    register_bands(butler)
    butler.registry.registerRun("drp")
    storage = {
        "deep_coadd": ("ExposureF", ("tract", "patch", "band", "skymap")),
        "object_deblend": ("SourceCatalog", ("tract", "patch", "skymap")),
        "object_scarlet_models": ("LsstScarletModelData", ("tract", "patch", "skymap")),
    }
    types = {}
    for name, (storage_class, dimensions) in storage.items():
        types[name] = DatasetType(name, dimensions, storage_class, universe=butler.dimensions)
        butler.registry.registerDatasetType(types[name])
    for (name, band), path in files.items():
        data_id = {"skymap": SKYMAP.name, "tract": 0, "patch": PATCH}
        if band:
            data_id["band"] = band
        coordinate = DataCoordinate.standardize(data_id, universe=butler.dimensions)
        ref = DatasetRef(types[name], coordinate, run="drp")
        butler.ingest(FileDataset(path=str(path), refs=[ref], formatter="_tasks_helpers.OpaqueFileFormatter"))
    ingest_model_package(butler, package_path, "models")
    return root, coadds, first, load_model_package(package_path), ids


def test_drp_flavour_sets_lazy_drp_storage_classes():
    config = ResidualDetectionConfig()
    config.inputFlavor = "drp"
    connections = config.ConnectionsClass(config=config)
    assert connections.coadds.storageClass == "ExposureF" and connections.coadds.deferLoad
    assert connections.deblendCatalog.storageClass == "SourceCatalog"
    assert connections.scarletModels.storageClass == "LsstScarletModelData"
    embedded = ResidualDetectionConfig().ConnectionsClass(config=ResidualDetectionConfig())
    assert embedded.coadds.storageClass == "CellCoadd" and not embedded.coadds.deferLoad


def test_drp_datasets_give_what_the_embedded_ones_give(setting):
    from lsst.pipe.base.simple_pipeline_executor import SimplePipelineExecutor

    root, coadds, first, package, ids = setting
    config = ResidualDetectionConfig()
    config.inputFlavor = "drp"
    butler = SimplePipelineExecutor.prep_butler(str(root), inputs=["drp", "models"], output="out")
    executor = SimplePipelineExecutor.from_task_class(ResidualDetectionTask, config=config, butler=butler)
    quanta = executor.run(register_dataset_types=True)
    assert len(quanta) == 1
    data_id = {"skymap": SKYMAP.name, "tract": 0, "patch": PATCH}
    drp = butler.get("object_residual_detection", data_id)

    embedded = ResidualDetectionTask(config=ResidualDetectionConfig()).run(
        coadds, first.deblendCatalog, first.scarletModels, package, 0, PATCH
    )
    ours = embedded.newSources
    assert len(drp) == len(ours) > 0
    np.testing.assert_allclose(drp["x"], ours["x"], atol=1e-6)
    np.testing.assert_allclose(drp["score"], ours["score"], rtol=1e-5)
    np.testing.assert_allclose(drp["ra"], ours["ra"], atol=1e-9)
    # Parents are the DRP parent ids; new ids do not collide with DRP's.
    drp_parents = {ids[int(p)] for p in first.deblendCatalog["parent"]}
    assert set(np.asarray(drp["parent"]).tolist()) <= drp_parents | {0}
    expected = [ids[int(p)] if p else 0 for p in ours["parent"]]
    np.testing.assert_array_equal(drp["parent"], expected)
    assert not set(np.asarray(drp["id"]).tolist()) & set(ids.values())
