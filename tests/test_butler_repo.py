"""Embedded Butler repository: seed config, dimension records, ingestion, formatters."""

from __future__ import annotations

import numpy as np
import pytest
from _tasks_helpers import make_tiny_package, tiny_scene
from lsst.meas.extensions.residual.tasks.repo import (
    create_repo,
    ingest_model_package,
    ingest_scene,
    register_bands,
    register_skymap,
)
from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

SKYMAP = DemoSkyMap(patch_size=64, patch_nx=2, patch_ny=1)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_tiny_package(tmp_path_factory.mktemp("package") / "tiny.zip")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, package):
    root = tmp_path_factory.mktemp("repo") / "repo"
    butler = create_repo(root)
    register_skymap(butler, SKYMAP)
    register_bands(butler)
    scene = tiny_scene(3)
    written = ingest_scene(butler, scene, SKYMAP, 1, "inputs")
    ingest_model_package(butler, package, "models")
    return root, scene, written


def test_repo_holds_the_records_and_the_ingested_patch(repo):
    from lsst.daf.butler import Butler

    root, scene, written = repo
    assert written == [f"deep_coadd/{b}" for b in scene.bands] + ["residual_sim_truth"]
    butler = Butler.from_config(str(root), collections=["inputs"])
    assert {r.id for r in butler.registry.queryDimensionRecords("patch", skymap=SKYMAP.name)} == {0, 1}
    assert {r.name for r in butler.registry.queryDimensionRecords("band")} == set("ugrizy")
    data_id = {"skymap": SKYMAP.name, "tract": 0, "patch": 1}
    coadd = butler.get("deep_coadd", {**data_id, "band": "i"})
    np.testing.assert_array_equal(coadd.image.array, scene.image[3])
    assert (coadd.bbox.x.start, coadd.bbox.y.start) == (64, 0)
    psf = butler.get("deep_coadd.psf", {**data_id, "band": "i"})
    kernel = psf.compute_kernel_image(x=96, y=32).array
    np.testing.assert_allclose(kernel, scene.psf[3], atol=1e-7)
    truth = butler.get("residual_sim_truth", data_id)
    assert len(truth) == len(scene.truth)
    np.testing.assert_allclose(truth["x"], np.asarray(scene.truth.table["x"]) + 64)


def test_set_up_is_idempotent_and_refuses_another_geometry(repo, package):
    from lsst.daf.butler.registry import ConflictingDefinitionError

    root, scene, _ = repo
    butler = create_repo(root)  # opens the existing repository
    register_skymap(butler, SKYMAP)
    register_bands(butler)
    assert ingest_scene(butler, scene, SKYMAP, 1, "inputs") == []
    assert ingest_model_package(butler, package, "models") is False
    with pytest.raises(ConflictingDefinitionError):
        register_skymap(butler, DemoSkyMap(patch_size=32, patch_nx=2, patch_ny=1))


def test_model_package_prerequisite_and_metadata_component(repo, package):
    from lsst.daf.butler import Butler

    root, _, _ = repo
    butler = Butler.from_config(str(root), collections=["models"])
    metadata = butler.get("residual_model_package.metadata")
    assert metadata.bands == tuple("ugrizy") and metadata.name == "tiny-test"
    loaded = butler.get("residual_model_package")
    assert set(loaded.state_dict) and loaded.metadata.recipe == "residual+model"
    # Ingested byte for byte.
    assert butler.getURI("residual_model_package").read() == package.read_bytes()


def test_a_file_that_is_not_a_package_is_refused_before_ingestion(repo, tmp_path):
    from lsst.meas.extensions.residual.network import ModelPackageError

    root, _, _ = repo
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip")
    butler = create_repo(root)
    with pytest.raises(ModelPackageError, match="not a model package"):
        ingest_model_package(butler, bogus, "other-models")
    with pytest.raises(FileNotFoundError):
        ingest_model_package(butler, tmp_path / "missing.zip", "other-models")


def test_scarlet_models_and_footprints_round_trip_through_their_formatters(repo, small_scene):
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.deblending import DeblendConfig, deblend
    from lsst.meas.extensions.residual.detection import detect_peaks
    from lsst.meas.extensions.residual.network import Footprint, SourceDetections
    from lsst.meas.extensions.residual.tasks.repo import register_dataset_type

    root, _, _ = repo
    butler = Butler.from_config(str(root), writeable=True, run="formatter-test")
    register_dataset_type(butler, "object_scarlet_models", "ResidualScarletModelData", ())
    register_dataset_type(butler, "object_residual_footprints", "ResidualSourceFootprints", ())
    result = deblend(small_scene, detect_peaks(small_scene), DeblendConfig(max_iter=20, show_progress=False))
    butler.put(result.model_data, "object_scarlet_models", {})
    models = butler.get("object_scarlet_models", {})
    assert set(models.blends) == set(result.model_data.blends)
    assert butler.getURI("object_scarlet_models", {}).getExtension() == ".scarlet"

    from astropy.table import Table

    table = Table(
        {"id": [5, 9], "x": [1.0, 2.0], "y": [3.0, 4.0], "class": ["star", "galaxy"], "score": [0.9, 0.5]}
    )
    footprints = [Footprint(0, 0, np.ones((2, 3), bool)), Footprint(1, 1, np.eye(2, dtype=bool))]
    detections = SourceDetections(
        table, footprints, (8, 8), {"BANDS": "g,r", "X0": 64, "Y0": 0, "TRACT": 0, "PATCH": 1}
    )
    butler.put(detections, "object_residual_footprints", {})
    back = butler.get("object_residual_footprints", {})
    np.testing.assert_array_equal(back.footprints[1].mask, np.eye(2, dtype=bool))
    assert back.metadata["X0"] == 64 and back.metadata["PATCH"] == 1
