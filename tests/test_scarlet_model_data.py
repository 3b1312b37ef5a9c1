"""Scarlet model data: LSST's schema, the .scarlet container, the v29 fixture, rendering."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from lsst.meas.extensions.residual.deblending import (
    MODEL_DATA_VERSION,
    BlendData,
    CubeComponentData,
    FactorizedComponentData,
    HierarchicalBlendData,
    IsolatedSourceData,
    ScarletModelData,
    ScarletModelDataError,
    SourceData,
    integrated_gaussian_psf,
    read_model_data,
    read_scarlet_model,
    render_blend,
    render_model_data,
    write_scarlet_model,
)


def _psfs(nbands=2, size=11, sigma=1.6):
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    psf = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return np.repeat((psf / psf.sum())[None], nbands, axis=0).astype(np.float32)


def _model_data():
    rng = np.random.default_rng(0)
    morph = rng.random((6, 7)).astype(np.float32)
    factorized = FactorizedComponentData(
        origin=(10, 12), peak=(12.0, 15.0), spectrum=np.array([2.0, 3.0], np.float32), morph=morph
    )
    cube = CubeComponentData(
        origin=(11, 13), peak=(12.0, 15.0), cube=rng.random((2, 3, 4)).astype(np.float32)
    )
    child = BlendData(
        origin=(10, 12),
        shape=(8, 9),
        sources={7: SourceData([factorized, cube], metadata={"peak_id": 7, "id": 7})},
    )
    blend = HierarchicalBlendData(
        children={3: child}, metadata={"spans": np.ones((8, 9), dtype=bool), "origin": (10, 12)}
    )
    isolated = IsolatedSourceData(
        origin=(30, 2),
        peak=(32.0, 4.0),
        span_array=np.eye(5, dtype=np.float32),
        metadata={"peak_id": 9, "id": 9},
    )
    metadata = {
        "model_psf": integrated_gaussian_psf(0.8, 15).astype(np.float32),
        "psf": _psfs(),
        "bands": ("g", "r"),
        "patch_shape": [48, 40],
    }
    return ScarletModelData(blends={3: blend}, isolated={4: isolated}, metadata=metadata)


def _assert_same(a: ScarletModelData, b: ScarletModelData):
    assert set(a.blends) == set(b.blends) and set(a.isolated) == set(b.isolated)
    assert a.bands == b.bands
    np.testing.assert_array_equal(a.metadata["model_psf"], b.metadata["model_psf"])
    np.testing.assert_array_equal(a.metadata["psf"], b.metadata["psf"])
    for key in a.blends:
        children = zip(a.blends[key].children.items(), b.blends[key].children.items(), strict=True)
        for (ka, ca), (kb, cb) in children:
            assert ka == kb and ca.origin == cb.origin and ca.shape == cb.shape
            for (sa_id, sa), (sb_id, sb) in zip(ca.sources.items(), cb.sources.items(), strict=True):
                assert sa_id == sb_id and sa.metadata == sb.metadata
                for comp_a, comp_b in zip(sa.components, sb.components, strict=True):
                    assert type(comp_a) is type(comp_b) and comp_a.origin == comp_b.origin
                    np.testing.assert_array_equal(comp_a.model(), comp_b.model())
    for key in a.isolated:
        np.testing.assert_array_equal(a.isolated[key].span_array, b.isolated[key].span_array)
        assert a.isolated[key].origin == b.isolated[key].origin


def test_dict_round_trip_keeps_every_array_and_the_lsst_layout():
    data = _model_data()
    encoded = json.loads(json.dumps(data.as_dict()))
    assert encoded["version"] == MODEL_DATA_VERSION == "1.0.1"
    assert encoded["model_type"] == "lsst"
    assert set(encoded["metadata"]["array_keys"]) == {"model_psf", "psf"}
    assert encoded["metadata"]["psf_shape"] == [2, 11, 11]
    blend = encoded["blends"]["3"]
    assert blend["blend_type"] == "hierarchical"
    source = blend["children"]["3"]["sources"]["7"]
    assert [c["component_type"] for c in source["components"]] == ["factorized", "component"]
    assert len(source["components"][0]["morph"]) == 42
    assert encoded["isolated"]["4"]["source_type"] == "isolated"
    _assert_same(data, ScarletModelData.from_dict(encoded))


def test_scarlet_zip_container_round_trip(tmp_path):
    data = _model_data()
    path = tmp_path / "models.scarlet"
    write_scarlet_model(path, data)
    with zipfile.ZipFile(path) as archive:
        assert set(archive.namelist()) == {"3", "4", "metadata", "version"}
        assert json.loads(archive.read("version")) == "1.0.1"
    _assert_same(data, read_scarlet_model(path))
    _assert_same(data, read_model_data(path))
    only = read_scarlet_model(path, blend_ids=[3])
    assert set(only.blends) == {3} and not only.isolated
    with pytest.raises(ScarletModelDataError, match="no blend"):
        read_scarlet_model(path, blend_ids=[99])


def test_rendering_matches_a_direct_convolution_and_isolated_sources_need_the_image():
    from lsst.meas.extensions.residual.deblending import difference_kernels
    from scipy.signal import fftconvolve

    data = _model_data()
    blend = data.blends[3]
    frame, origin = render_blend(blend, data, convolve=False)
    assert frame.shape == (2, 8, 9) and origin == (10, 12)
    # The factorised component sits at the blend origin, the cube one pixel in.
    expected = np.zeros((2, 8, 9))
    source = blend.children[3].sources[7]
    expected[:, :6, :7] += source.components[0].model()
    expected[:, 1:4, 1:5] += source.components[1].model()
    np.testing.assert_allclose(frame, expected, rtol=1e-6)
    observed, origin = render_blend(blend, data, clip_negative=False)
    kernels = difference_kernels(data.metadata["psf"], data.metadata["model_psf"])
    direct = np.stack([fftconvolve(expected[b], kernels[b], mode="full") for b in range(2)])
    assert origin == (5, 7)
    np.testing.assert_allclose(observed, direct, atol=1e-6)
    with pytest.raises(ScarletModelDataError, match="isolated"):
        render_model_data(data)
    image = np.ones((2, 48, 40), dtype=np.float32)
    patch = render_model_data(data, image=image)
    assert patch.shape == (2, 48, 40)
    np.testing.assert_allclose(patch[:, 30:35, 2:7], np.eye(5)[None] * np.ones((2, 1, 1)), atol=1e-6)
    no_isolated = render_model_data(data, include_isolated=False)
    assert np.all(no_isolated[:, 30:35, 2:7] == 0)
    with pytest.raises(ScarletModelDataError, match="band"):
        render_model_data(data, include_isolated=False, bands=("g", "i"))


def test_psf_band_count_mismatch_is_reported():
    data = _model_data()
    data.metadata["psf"] = _psfs(nbands=3)
    data.metadata["bands"] = ("g", "r", "i")
    with pytest.raises(ScarletModelDataError, match="3 bands"):
        render_blend(data.blends[3], data)


def test_v29_fixture_is_read_and_rendered(shared_fixtures):
    path = shared_fixtures / "scarlet" / "v29_models.json"
    data = read_model_data(path)
    assert set(data.blends) == {3495976385350991873, 3495976385350991874}
    assert data.metadata["model_psf"].shape == (15, 15)
    assert data.bands == ("g", "i", "r", "y", "z")
    raw = json.loads(path.read_text())
    for blend_id, blend in data.blends.items():
        stored = raw["blends"][str(blend_id)]
        assert blend.metadata["psf"].shape == tuple(stored["psf_shape"]) == (5, 25, 25)
        (source,) = blend.sources.values()
        assert source.metadata["peak_id"] == stored["sources"][next(iter(stored["sources"]))]["peak_id"]
        frame, origin = render_blend(blend, data, convolve=False)
        assert frame.shape == (5, *stored["shape"]) and origin == tuple(stored["origin"])
        observed, observed_origin = render_blend(blend, data)
        assert observed.shape == (5, stored["shape"][0] + 24, stored["shape"][1] + 24)
        assert observed_origin == (stored["origin"][0] - 12, stored["origin"][1] - 12)
        assert np.all(np.isfinite(observed)) and observed.min() >= 0
        # Convolution keeps the flux, up to the (clipped) ringing of the difference kernel.
        np.testing.assert_allclose(observed.sum(axis=(1, 2)), frame.sum(axis=(1, 2)), rtol=0.07)
        assert frame.sum() > 0
        cropped, cropped_origin = render_blend(blend, data, crop=True)
        assert cropped.shape == frame.shape and cropped_origin == tuple(stored["origin"])
        assert np.all(np.isfinite(cropped)) and cropped.min() >= 0
    patch = render_model_data(data)
    assert patch.ndim == 3 and patch.shape[0] == 5
    assert np.all(np.isfinite(patch)) and patch.min() >= 0
    reordered = render_model_data(data, bands=("g", "r", "i", "z", "y"))
    np.testing.assert_array_equal(reordered[2], patch[1])


def test_v29_fixture_survives_a_trip_through_the_container(shared_fixtures, tmp_path):
    data = read_model_data(shared_fixtures / "scarlet" / "v29_models.json")
    write_scarlet_model(tmp_path / "v29.scarlet", data)
    again = read_model_data(tmp_path / "v29.scarlet")
    for blend_id in data.blends:
        np.testing.assert_allclose(
            render_blend(again.blends[blend_id], again)[0], render_blend(data.blends[blend_id], data)[0]
        )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(version="2.0.0"), "Unknown scarlet model data schema version '2.0.0'"),
        (lambda d: d["blends"]["3"].update(version="9.9"), "Unknown hierarchical blend schema version"),
        (lambda d: d["blends"]["3"].update(blend_type="tree"), "Unknown blend type 'tree'"),
        (
            lambda d: d["blends"]["3"]["children"]["3"]["sources"]["7"]["components"][0].update(
                component_type="x"
            ),
            "Unknown component type 'x'",
        ),
        (lambda d: d.update(model_type="other"), "Unknown scarlet model type"),
        (lambda d: d["isolated"]["4"].pop("span_array"), "missing 'span_array'"),
    ],
)
def test_unknown_versions_and_types_are_clear_errors(change, message):
    encoded = json.loads(json.dumps(_model_data().as_dict()))
    change(encoded)
    with pytest.raises(ScarletModelDataError, match=message):
        ScarletModelData.from_dict(encoded)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_model_data(tmp_path / "missing.scarlet")
    garbage = tmp_path / "garbage.scarlet"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ScarletModelDataError):
        read_model_data(garbage)
    text = tmp_path / "text.json"
    text.write_text("{ not json")
    with pytest.raises(ScarletModelDataError, match="neither"):
        read_model_data(text)
    bad_version = tmp_path / "bad.scarlet"
    with zipfile.ZipFile(bad_version, "w") as archive:
        archive.writestr("version", json.dumps("7.0.0"))
        archive.writestr("metadata", json.dumps({}))
    with pytest.raises(ScarletModelDataError, match="7.0.0"):
        read_scarlet_model(bad_version)


def test_type_registries_refuse_an_unknown_type_naming_it_and_the_known_ones():
    from lsst.meas.extensions.residual.deblending.model_data.registries import (
        BLEND_TYPES,
        COMPONENT_TYPES,
        SOURCE_TYPES,
    )

    assert BLEND_TYPES.lookup({}) is BlendData and COMPONENT_TYPES.lookup({}) is FactorizedComponentData
    assert COMPONENT_TYPES.lookup({"component_type": "cube"}) is CubeComponentData
    with pytest.raises(
        ScarletModelDataError, match="Unknown blend type 'tree'; known types: 'blend', 'hierarchical'"
    ):
        BLEND_TYPES.lookup({"blend_type": "tree"})
    with pytest.raises(
        ScarletModelDataError, match="Unknown component type 'x'; known types: 'component', 'cube'"
    ):
        COMPONENT_TYPES.from_dict({"component_type": "x"}, np.float32)
    with pytest.raises(
        ScarletModelDataError, match="Unknown source type 'star'; known types: 'isolated', 'source'"
    ):
        SOURCE_TYPES.lookup({"source_type": "star"})
    with pytest.raises(ScarletModelDataError, match="must be a JSON object, not list"):
        BLEND_TYPES.lookup([1, 2])
    with pytest.raises(ValueError, match="'factorized' is already registered"):
        COMPONENT_TYPES.register(type("Impostor", (), {"component_type": "factorized"}))
    # A registered type in the wrong place is refused too: a blend holds only deblended sources.
    encoded = json.loads(json.dumps(_model_data().as_dict()))
    encoded["blends"]["3"]["children"]["3"]["sources"]["7"] = encoded["isolated"]["4"]
    with pytest.raises(
        ScarletModelDataError, match="Blend 3: A blend holds 'source' sources, not 'isolated'"
    ):
        ScarletModelData.from_dict(encoded)


def test_unknown_schema_versions_are_refused_naming_them_and_the_known_ones():
    from lsst.meas.extensions.residual.deblending.model_data.registries import MIGRATIONS

    with pytest.raises(ScarletModelDataError) as error:
        MIGRATIONS.migrate(ScarletModelData.kind, {"version": "0.5"})
    assert str(error.value) == (
        "Unknown scarlet model data schema version '0.5'; "
        "this reader knows 1.0.0, 1.0.1 and the pre-schema layout."
    )
    encoded = json.loads(json.dumps(_model_data().as_dict()))
    encoded["blends"]["3"]["children"]["3"]["sources"]["7"]["version"] = "1.1.0"
    with pytest.raises(
        ScarletModelDataError, match="Blend 3: Unknown source schema version '1.1.0'; .* knows 1.0.0 "
    ):
        ScarletModelData.from_dict(encoded)


def test_a_migration_chain_is_applied_step_by_step_in_order(monkeypatch):
    from lsst.meas.extensions.residual.deblending.model_data.registries import MIGRATIONS, migration

    # Registrations go to a copy of the steps that monkeypatch swaps back afterwards.
    monkeypatch.setattr(MIGRATIONS, "steps", dict(MIGRATIONS.steps))
    applied = []

    @migration(BlendData.kind, "0.8.0", "0.9.0")
    def _rename_yx0(data):
        applied.append((data["version"], "0.9.0"))
        data["corner"] = data.pop("yx0")
        return data

    @migration(BlendData.kind, "0.9.0", "1.0.0")
    def _rename_corner(data):
        applied.append((data["version"], "1.0.0"))
        data["origin"] = data.pop("corner")
        return data

    stored = {"blend_type": "blend", "version": "0.8.0", "yx0": [4, 5], "shape": [2, 3], "sources": {}}
    blend = BlendData.from_dict(stored)
    assert applied == [("0.8.0", "0.9.0"), ("0.9.0", "1.0.0")]
    assert blend.origin == (4, 5) and blend.shape == (2, 3)
    assert stored["version"] == "0.8.0" and "yx0" in stored  # the caller's dict is left as it was
    assert MIGRATIONS.known_versions(BlendData.kind) == ["0.8.0", "0.9.0", "1.0.0"]
    with pytest.raises(ValueError, match="from version '0.8.0' is already registered"):
        MIGRATIONS.register(BlendData.kind, "0.8.0", "1.0.0", _rename_corner)
    monkeypatch.undo()
    with pytest.raises(ScarletModelDataError, match="Unknown blend schema version '0.8.0'"):
        BlendData.from_dict(stored)


def _migrate_v29(raw: dict) -> dict:
    """The v29 model data with every object migrated, by the registry alone, to the current layout."""
    from lsst.meas.extensions.residual.deblending.model_data.registries import MIGRATIONS

    data = MIGRATIONS.migrate(ScarletModelData.kind, raw)
    blends = {}
    for key, stored in data["blends"].items():
        blend = MIGRATIONS.migrate(BlendData.kind, stored)
        sources = {}
        for source_id, source in blend["sources"].items():
            source = MIGRATIONS.migrate(SourceData.kind, source)
            kind = FactorizedComponentData.kind
            source["components"] = [MIGRATIONS.migrate(kind, c) for c in source["components"]]
            sources[source_id] = source
        blends[key] = {**blend, "sources": sources}
    return {**data, "blends": blends}


def test_a_pre_schema_v29_dict_migrates_to_what_the_current_reader_expects(shared_fixtures, monkeypatch):
    from lsst.meas.extensions.residual.deblending.model_data.registries import MIGRATIONS, PRE_SCHEMA

    raw = json.loads((shared_fixtures / "scarlet" / "v29_models.json").read_text())
    untouched = json.dumps(raw)
    migrated = _migrate_v29(raw)
    assert json.dumps(raw) == untouched
    assert migrated["version"] == MODEL_DATA_VERSION
    assert migrated["metadata"]["array_keys"] == ["model_psf"]
    assert migrated["metadata"]["model_psf_shape"] == raw["psfShape"] == [15, 15]
    for key, blend in migrated["blends"].items():
        stored = raw["blends"][key]
        assert blend["version"] == "1.0.0"
        assert blend["metadata"]["psf_shape"] == stored["psf_shape"] and blend["metadata"]["array_keys"] == [
            "psf"
        ]
        assert blend["metadata"]["bands"] == tuple(stored["bands"])
        for source_id, source in blend["sources"].items():
            old = stored["sources"][source_id]
            assert source["metadata"] == {"peak_id": old["peak_id"]}
            assert len(source["components"]) == len(old["components"]) + len(old["factorized"]) > 0
            assert "factorized" not in source
    expected = ScarletModelData.from_dict(raw).as_dict()
    # Without any pre-schema step the reader reads the migrated dict as the v29 file.
    current_only = {key: step for key, step in MIGRATIONS.steps.items() if key[1] != PRE_SCHEMA}
    monkeypatch.setattr(MIGRATIONS, "steps", current_only)
    assert ScarletModelData.from_dict(migrated).as_dict() == expected
    with pytest.raises(ScarletModelDataError, match="Unknown scarlet model data schema version '0.0.0'"):
        ScarletModelData.from_dict(raw)


def test_a_patch_is_rendered_blend_by_blend_into_one_float32_cube():
    import tracemalloc

    # 144 small blends over a 2-band 384² patch: the rendering may hold the output cube and one
    # blend's cube at a time, not a float64 patch, a list of every blend's cube, or a copy of the image.
    rng = np.random.default_rng(1)
    shape = (384, 384)
    metadata = {
        "model_psf": integrated_gaussian_psf(0.8, 15).astype(np.float32),
        "psf": _psfs(),
        "bands": ("g", "r"),
        "patch_shape": list(shape),
    }
    blends, isolated = {}, {}
    for index, (y0, x0) in enumerate((y, x) for y in range(4, 370, 32) for x in range(4, 370, 32)):
        component = FactorizedComponentData(
            origin=(y0, x0),
            peak=(y0 + 4.0, x0 + 4.0),
            spectrum=rng.random(2).astype(np.float32) + 1,
            morph=rng.random((9, 9)).astype(np.float32),
        )
        child = BlendData(origin=(y0, x0), shape=(9, 9), sources={index: SourceData([component])})
        blends[index + 1] = HierarchicalBlendData(children={index: child})
        isolated[1000 + index] = IsolatedSourceData(
            origin=(y0 + 16, x0 + 16), peak=(y0 + 17.0, x0 + 17.0), span_array=np.ones((3, 3), np.float32)
        )
    data = ScarletModelData(blends=blends, isolated=isolated, metadata=metadata)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    cube_bytes = image.nbytes
    tracemalloc.start()
    try:
        patch = render_model_data(data, image=image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert patch.dtype == np.float32 and patch.shape == image.shape
    assert peak < 1.5 * cube_bytes, f"rendering peaked at {peak / cube_bytes:.2f} patch cubes"
    # Streaming changes nothing: the same as summing each blend's own rendering.
    pad = 16  # the PSF wings of the blends at the edge reach beyond the patch
    expected = np.zeros((2, shape[0] + 2 * pad, shape[1] + 2 * pad))
    for blend in blends.values():
        cube, (y0, x0) = render_blend(blend, data)
        expected[:, pad + y0 : pad + y0 + cube.shape[1], pad + x0 : pad + x0 + cube.shape[2]] += cube
    for source in isolated.values():
        y0, x0 = source.origin
        expected[:, pad + y0 : pad + y0 + 3, pad + x0 : pad + x0 + 3] += image[:, y0 : y0 + 3, x0 : x0 + 3]
    np.testing.assert_allclose(patch, expected[:, pad:-pad, pad:-pad], rtol=1e-6, atol=1e-6)
