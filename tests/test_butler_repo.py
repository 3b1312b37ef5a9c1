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


@pytest.fixture(scope="module")
def formatter_butler(repo, small_scene):
    """A Butler writing to run ``formatter-test``; first-pass model data with blends and isolated sources."""
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.deblending import DeblendConfig, deblend
    from lsst.meas.extensions.residual.detection import detect_peaks
    from lsst.meas.extensions.residual.tasks.repo import register_dataset_type

    root, _, _ = repo
    butler = Butler.from_config(str(root), writeable=True, run="formatter-test")
    register_dataset_type(butler, "object_scarlet_models", "ResidualScarletModelData", ())
    # Single-peak footprints kept as footprints: isolated sources in the model data.
    config = DeblendConfig(max_iter=20, isolated="footprint", show_progress=False)
    result = deblend(small_scene, detect_peaks(small_scene), config)
    butler.put(result.model_data, "object_scarlet_models", {})
    return butler, result.model_data


def test_scarlet_models_round_trip_through_their_formatter(formatter_butler, tmp_path):
    from lsst.meas.extensions.residual.deblending import read_scarlet_model

    butler, model_data = formatter_butler
    models = butler.get("object_scarlet_models", {})
    assert set(models.blends) == set(model_data.blends) and set(models.isolated) == set(model_data.isolated)
    assert models.bands == model_data.bands
    uri = butler.getURI("object_scarlet_models", {})
    assert uri.getExtension() == ".scarlet"
    # The stored file is the container write_scarlet_model writes: the same members, byte for byte
    # (zip member dates aside), and the file readers read it.
    import zipfile

    from lsst.meas.extensions.residual.deblending import write_scarlet_model

    write_scarlet_model(tmp_path / "direct.scarlet", model_data)
    with zipfile.ZipFile(uri.ospath) as stored, zipfile.ZipFile(tmp_path / "direct.scarlet") as direct:
        assert [(i.filename, i.CRC, i.compress_size) for i in stored.infolist()] == [
            (i.filename, i.CRC, i.compress_size) for i in direct.infolist()
        ]
    assert set(read_scarlet_model(uri.ospath).blends) == set(model_data.blends)


def test_blend_id_reads_only_the_asked_blends_and_refuses_unknown_ids(formatter_butler):
    butler, model_data = formatter_butler
    blend_ids = sorted(model_data.blends)
    isolated = sorted(model_data.isolated)
    assert blend_ids and len(isolated) >= 2
    one = butler.get("object_scarlet_models", {}, parameters={"blend_id": blend_ids[0]})
    assert set(one.blends) == {blend_ids[0]} and not one.isolated
    some = butler.get("object_scarlet_models", {}, parameters={"blend_id": [blend_ids[0], isolated[-1]]})
    assert set(some.blends) == {blend_ids[0]} and set(some.isolated) == {isolated[-1]}
    assert some.blends[blend_ids[0]].as_dict() == model_data.blends[blend_ids[0]].as_dict()
    np.testing.assert_array_equal(some.metadata["psf"], model_data.metadata["psf"])
    unknown = max(blend_ids + sorted(model_data.isolated)) + 1000
    with pytest.raises(ValueError, match=rf"no blend\(s\) \[{unknown}\]"):
        butler.get("object_scarlet_models", {}, parameters={"blend_id": [blend_ids[0], unknown]})
    with pytest.raises(ValueError, match="blend_id must be an integer id"):
        butler.get("object_scarlet_models", {}, parameters={"blend_id": "all"})
    with pytest.raises(KeyError, match="Parameter"):
        butler.get("object_scarlet_models", {}, parameters={"blend": blend_ids[0]})


def test_blend_id_on_model_data_in_memory():
    from lsst.meas.extensions.residual.deblending import ScarletModelData, ScarletModelDataError
    from lsst.meas.extensions.residual.tasks.formatters import ScarletModelDataDelegate

    data = ScarletModelData(blends={3: "blend 3", 5: "blend 5"}, isolated={8: "isolated 8"}, metadata={})
    from lsst.daf.butler import StorageClassFactory

    delegate = ScarletModelDataDelegate(StorageClassFactory().getStorageClass("StructuredDataDict"))
    picked = delegate.handleParameters(data, {"blend_id": [5, 8]})
    assert picked.blends == {5: "blend 5"} and picked.isolated == {8: "isolated 8"}
    assert delegate.handleParameters(data, {}) is data
    with pytest.raises(ScarletModelDataError, match=r"id\(s\) \[4\]"):
        delegate.handleParameters(data, {"blend_id": 4})


def test_footprints_round_trip_through_their_formatter(formatter_butler):
    from astropy.table import Table
    from lsst.meas.extensions.residual.network import Footprint, SourceDetections
    from lsst.meas.extensions.residual.tasks.repo import register_dataset_type

    butler, _ = formatter_butler
    register_dataset_type(butler, "object_residual_footprints", "ResidualSourceFootprints", ())
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
    assert (back.footprints[1].y0, back.footprints[1].x0) == (1, 1)
    assert list(back.table["class"]) == ["star", "galaxy"] and back.shape == (8, 8)
    assert back.metadata["X0"] == 64 and back.metadata["PATCH"] == 1 and back.metadata["BANDS"] == "g,r"


def test_model_package_put_and_get_through_its_formatter(formatter_butler, package):
    import torch
    from lsst.meas.extensions.residual.network import load_model_package
    from lsst.meas.extensions.residual.tasks.repo import register_dataset_type

    butler, _ = formatter_butler
    register_dataset_type(butler, "put_model_package", "ResidualModelPackage", ())
    original = load_model_package(package)
    butler.put(original, "put_model_package", {})
    assert butler.get("put_model_package.metadata", {}) == original.metadata
    back = butler.get("put_model_package", {})
    assert back.metadata == original.metadata and set(back.state_dict) == set(original.state_dict)
    for key, value in original.state_dict.items():
        assert torch.equal(back.state_dict[key], value), key


def test_dataset_types_of_the_demo_set_up_are_those_its_connections_declare(tmp_path, package):
    """Each dataset type the demo repository registers has its connection's storage class and dimensions."""
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.tasks.deblend import FirstPassDeblendTask, ResidualDeblendTask
    from lsst.meas.extensions.residual.tasks.demo import PARAMETERS, DemoConfig, build_demo_repo
    from lsst.meas.extensions.residual.tasks.detection import FirstPassDetectionTask
    from lsst.meas.extensions.residual.tasks.repo import SIM_TRUTH
    from lsst.meas.extensions.residual.tasks.residual_detection import ResidualDetectionTask

    config = DemoConfig(patch_size=32, patches_x=1, patches_y=1, model=str(package))
    build_demo_repo(tmp_path / "repo", config, progress=False)
    declared = {}
    for task in (FirstPassDetectionTask, FirstPassDeblendTask, ResidualDetectionTask, ResidualDeblendTask):
        connections = task.ConfigClass.ConnectionsClass(config=task.ConfigClass())
        for name in connections.allConnections:
            connection = getattr(connections, name)
            declared.setdefault(connection.name, set()).add(
                (connection.storageClass, frozenset(connection.dimensions))
            )
    with Butler.from_config(str(tmp_path / "repo")) as butler:
        registered = {t.name: t for t in butler.registry.queryDatasetTypes() if not t.isComponent()}
    assert set(registered) == set(declared) | {SIM_TRUTH, PARAMETERS}
    for name, definitions in declared.items():
        assert definitions == {
            (registered[name].storageClass_name, frozenset(registered[name].dimensions.names))
        }, name
    assert registered["object_residual_footprints"].storageClass_name == "ResidualSourceFootprints"
    assert registered["residual_model_package"].dimensions.names == set()
