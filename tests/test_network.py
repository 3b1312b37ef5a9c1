"""Model builder, channel recipes, model packages, tiled inference and merging (CPU, tiny models)."""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsst.meas.extensions.residual.configs import validate_config  # noqa: E402
from lsst.meas.extensions.residual.errors import ConfigError, InputError  # noqa: E402
from lsst.meas.extensions.residual.network import (  # noqa: E402
    ChannelNormalisation,
    Detector,
    Footprint,
    InferenceConfig,
    ModelConfig,
    ModelMetadata,
    ModelPackageError,
    SourceDetections,
    band_noise,
    build_model,
    channel_names,
    default_model_path,
    find_sources,
    fitted_tile_size,
    load_model_package,
    make_channels,
    parse_recipe,
    read_model_metadata,
    read_source_detections,
    save_model_package,
    shipped_model_paths,
    tile_starts,
)

TINY = {
    "slim_widths": [8, 8, 16, 16],
    "slim_blocks": [1, 1, 1, 1],
    "fpn_channels": 16,
    "box_head_size": 32,
    "mask_head_layers": [16],
    "box_detections_per_img": 50,
}


def tiny_metadata(recipe="image", bands=("g", "r", "i"), tile=64, **kwargs) -> ModelMetadata:
    nchan = len(channel_names(recipe, bands))
    kwargs.setdefault("inference", InferenceConfig(tile_size=tile, tile_overlap=16, score_threshold=0.0))
    return ModelMetadata(
        name="tiny",
        mode=kwargs.pop("mode", "image" if recipe == "image" else "residual"),
        recipe=recipe,
        bands=bands,
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=nchan, **TINY),
        **kwargs,
    )


@pytest.fixture(scope="module")
def tiny_package_path(tmp_path_factory):
    torch.manual_seed(0)
    meta = tiny_metadata()
    model = build_model(meta.model, input_size=64)
    return save_model_package(tmp_path_factory.mktemp("pkg") / "tiny.zip", meta, model.state_dict())


# --- recipes -----------------------------------------------------------------------------------------


def test_parse_recipe_orders_and_rejects():
    assert parse_recipe("model+residual") == ("residual", "model")
    assert channel_names("residual+model", ("g", "r")) == ["residual_g", "residual_r", "model_g", "model_r"]
    with pytest.raises(ValueError, match="Unknown channel kind"):
        parse_recipe("residual+psf")
    with pytest.raises(ValueError, match="repeats"):
        parse_recipe("image+image")
    with pytest.raises(ValueError, match="Empty"):
        parse_recipe("")


def test_residual_channel_is_unit_noise_residual_and_bad_pixels_are_zero():
    rng = np.random.default_rng(1)
    variance = np.full((2, 20, 20), 4.0, dtype=np.float32)
    model = rng.uniform(0, 50, size=(2, 20, 20)).astype(np.float32)
    image = model + rng.normal(0, 2.0, size=model.shape).astype(np.float32)
    image[0, 3, 4] = np.nan
    variance[1, 5, 6] = 0.0
    channels = make_channels("residual+model", image, variance, model)
    assert channels.shape == (4, 20, 20)
    assert np.all(np.isfinite(channels))
    chi = (image[1] - model[1]) / 2.0
    small = np.abs(chi) < 2
    small[5, 6] = False
    # The residual channel is χ softly clipped at 10σ: c·asinh(χ/c), within 1% of χ for |χ| < 2.
    np.testing.assert_allclose(channels[1][small], 10 * np.arcsinh(chi[small] / 10), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(channels[1][small], chi[small], rtol=1e-2, atol=1e-6)
    assert channels[0, 3, 4] == 0 and channels[2, 3, 4] == 0
    assert channels[1, 5, 6] == 0 and channels[3, 5, 6] == 0
    # Model channel: asinh with softening = band noise (2).
    np.testing.assert_allclose(channels[2, 0, 0], np.arcsinh(model[0, 0, 0] / 2.0), rtol=1e-5)


def test_channels_of_a_cutout_equal_the_cutout_of_channels():
    rng = np.random.default_rng(2)
    image = rng.normal(0, 1, size=(3, 40, 50)).astype(np.float32) * 10
    variance = rng.uniform(50, 150, size=image.shape).astype(np.float32)
    noise = band_noise(variance)
    whole = make_channels("image", image, variance)
    part = make_channels("image", image[:, 10:30, 5:45], variance[:, 10:30, 5:45], noise=noise)
    np.testing.assert_allclose(part, whole[:, 10:30, 5:45], rtol=1e-6)


def test_recipe_errors_are_clear():
    image = np.ones((2, 8, 8), dtype=np.float32)
    variance = np.ones_like(image)
    with pytest.raises(ValueError, match="needs the first-pass model"):
        make_channels("residual", image, variance)
    model = image.copy()
    model[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite values at usable pixels"):
        make_channels("residual+model", image, variance, model)
    with pytest.raises(ValueError, match="asinh_softening"):
        ChannelNormalisation(asinh_softening=0)


# --- model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["slim", "resnet18"])
def test_model_takes_n_channels_and_returns_detections(backbone):
    config = ModelConfig(in_channels=5, backbone=backbone, **({} if backbone != "slim" else TINY))
    model = build_model(config, input_size=64).eval()
    with torch.no_grad():
        out = model([torch.randn(5, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}
    with pytest.raises(RuntimeError):  # the first convolution really takes 5 channels
        model([torch.randn(3, 64, 64)])


def test_model_config_validation():
    with pytest.raises(ConfigError, match="backbone: Input should be 'slim', 'resnet18'"):
        validate_config(ModelConfig, {"backbone": "vgg"})
    with pytest.raises(ConfigError, match="anchor_sizes: Tuple should have at least 5 items"):
        validate_config(ModelConfig, {"anchor_sizes": [4, 8]})
    with pytest.raises(ConfigError, match="widths: Extra inputs are not permitted"):
        validate_config(ModelConfig, {"widths": 3})
    with pytest.raises(ConfigError, match="multiples of group_norm_groups"):
        validate_config(ModelConfig, {"slim_widths": [30, 64, 96, 128]})
    config = ModelConfig(slim_widths=[16, 16, 32, 32])
    assert config.slim_widths == (16, 16, 32, 32)
    assert validate_config(ModelConfig, config.model_dump(mode="json")) == config


# --- packages ----------------------------------------------------------------------------------------


def test_package_round_trip(tiny_package_path, tmp_path):
    package = load_model_package(tiny_package_path)
    meta = read_model_metadata(tiny_package_path)
    assert meta == package.metadata
    assert meta.inference == InferenceConfig(
        tile_size=64,
        tile_overlap=16,
        score_threshold=0.0,
        merge_ios=0.5,
        class_nms_iou=0.7,
        pixel_scale_tolerance=0.05,
    )
    assert meta.pixel_scales == (0.2, 0.2)
    assert (meta.tile_size, meta.tile_overlap, meta.score_threshold) == (64, 16, 0.0)
    assert meta.bands == ("g", "r", "i") and meta.recipe == "image" and meta.classes == ("star", "galaxy")
    assert meta.channels == ["image_g", "image_r", "image_i"]
    assert "torch" in meta.provenance and "created" in meta.provenance
    # Written again (already float16-rounded) and reloaded: identical weights and identical outputs.
    again = save_model_package(tmp_path / "again.zip", package.metadata, package.state_dict)
    reloaded = load_model_package(again)
    for key, value in package.state_dict.items():
        assert torch.equal(value, reloaded.state_dict[key]), key
    x = [torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))]
    with torch.no_grad():
        a = package.build()(x)[0]
        b = reloaded.build()(x)[0]
    assert torch.equal(a["scores"], b["scores"]) and torch.equal(a["boxes"], b["boxes"])


def test_package_weights_are_float16_and_checked(tiny_package_path, tmp_path):
    with zipfile.ZipFile(tiny_package_path) as archive:
        data = json.loads(archive.read("metadata.json"))
        weights = archive.read("weights.pt")
    assert data["weights_dtype"] == "float16"
    # Tamper with the weights: metadata still readable, loading refuses.
    bad = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("metadata.json", json.dumps(data))
        archive.writestr("weights.pt", weights[:-10] + b"0123456789")
    assert read_model_metadata(bad).name == "tiny"
    with pytest.raises(ModelPackageError, match="checksum"):
        load_model_package(bad)


def test_package_errors(tmp_path):
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    with pytest.raises(ModelPackageError, match="not a model package"):
        load_model_package(not_zip)
    with pytest.raises(FileNotFoundError):
        read_model_metadata(tmp_path / "missing.zip")
    with pytest.raises(ValueError, match="makes 6"):
        ModelMetadata(
            name="x",
            mode="image",
            recipe="image",
            bands=("u", "g", "r", "i", "z", "y"),
            classes=("star", "galaxy"),
            model=ModelConfig(in_channels=12),
        )
    with pytest.raises(ValueError, match="wavelength order"):
        tiny_metadata(bands=("r", "g", "i"))
    with pytest.raises(ValueError, match="does not fix batch_size"):
        tiny_metadata(inference=InferenceConfig(batch_size=2))
    with pytest.raises(ValueError, match="rpn_post_nms_top_n_test"):
        tiny_metadata(inference=InferenceConfig(proposals_per_tile=100))
    # Weights of another architecture.
    meta = tiny_metadata()
    other = build_model(ModelConfig(in_channels=3, **{**TINY, "fpn_channels": 32}))
    path = save_model_package(tmp_path / "mismatch.zip", meta, other.state_dict())
    with pytest.raises(ModelPackageError, match="do not fit"):
        load_model_package(path)


def test_band_and_recipe_mismatch_errors(tiny_package_path):
    image = np.zeros((2, 64, 64), dtype=np.float32)
    with pytest.raises(ModelPackageError, match=r"needs bands g,r,i.*missing i"):
        find_sources(tiny_package_path, image, np.ones_like(image), ("g", "r"), device="cpu")
    residual_meta = tiny_metadata(recipe="residual+model")
    with pytest.raises(ModelPackageError, match="needs the first-pass"):
        residual_meta.check_data(("g", "r", "i"), has_model=False)
    # More bands than the model uses is fine: the model's are picked by name.
    assert tiny_metadata().check_data(("u", "g", "r", "i", "z"), has_model=False) == [1, 2, 3]


def test_the_bad_channel_marks_what_the_other_channels_lack():
    image = np.ones((2, 8, 8), np.float32)
    variance = np.ones_like(image)
    good = np.ones(image.shape, bool)
    good[1, :4] = False
    channels = make_channels("image+bad", image, variance, good=good)
    assert channels.shape == (4, 8, 8) and channel_names("image+bad", ("g", "r"))[2:] == ["bad_g", "bad_r"]
    np.testing.assert_array_equal(channels[3], ~good[1])
    assert not channels[2].any() and not channels[1, :4].any() and channels[1, 4:].all()


def test_a_package_taking_band_subsets_runs_on_any_of_its_bands(tmp_path):
    with pytest.raises(ValueError, match="needs the 'bad' channel"):
        tiny_metadata(recipe="image", band_subsets=True, mode="image")
    torch.manual_seed(0)
    meta = tiny_metadata(recipe="image+bad", bands=("g", "r", "i", "z"), band_subsets=True, mode="image")
    path = save_model_package(
        tmp_path / "subsets.zip", meta, build_model(meta.model, input_size=64).state_dict()
    )
    assert load_model_package(path).metadata.band_subsets
    assert meta.check_data(("r", "i", "y"), has_model=False) == [None, 0, 1, None]
    with pytest.raises(ModelPackageError, match="takes any of bands g,r,i,z.*none of them"):
        meta.check_data(("u", "y"), has_model=False)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(4, 64, 64)).astype(np.float32)
    image[:, 30:34, 30:34] += 50.0
    variance = np.ones_like(image)
    detector = Detector(path, "cpu")
    full = detector.find(image, variance, ("g", "r", "i", "z"))
    # Without g and z: the network is given those bands as zero image, bad everywhere.
    zeroed = image.copy()
    zeroed[[0, 3]] = 0.0
    bad = np.zeros(image.shape, bool)
    bad[[0, 3]] = True
    expected = detector.find(zeroed, variance, ("g", "r", "i", "z"), mask=bad)
    subset = detector.find(image[1:3], variance[1:3], ("r", "i"))
    assert len(subset) == len(expected) and len(full) > 0
    np.testing.assert_array_equal(subset.table["score"], expected.table["score"])
    np.testing.assert_array_equal(subset.xy, expected.xy)


def test_default_model_paths_are_shipped_packages():
    for mode in ("residual", "image"):
        path = default_model_path(mode)
        assert path.stat().st_size < 50 * 1024**2
        meta = read_model_metadata(path)
        assert meta.mode == mode and meta.bands == ("u", "g", "r", "i", "z", "y")
    with pytest.raises(ValueError, match="Unknown model mode"):
        default_model_path("psf")


def _edited_package(source, target, edit):
    """A copy of package ``source`` whose metadata.json is ``edit(metadata dict)``."""
    with zipfile.ZipFile(source) as archive:
        data = json.loads(archive.read("metadata.json"))
        weights = archive.read("weights.pt")
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("metadata.json", json.dumps(edit(data)))
        archive.writestr("weights.pt", weights)
    return target


def test_pixel_scales_outside_the_training_range_are_refused(tiny_package_path):
    meta = read_model_metadata(tiny_package_path)
    for scale in (0.2, 0.19, 0.2099):  # within 5% of the 0.2" it was trained on
        meta.check_pixel_scale(scale)
    for scale in (0.168, 0.262, 0.2101):
        with pytest.raises(ModelPackageError, match=r"trained on pixels of 0\.2\"; .*tolerance of 5%"):
            meta.check_pixel_scale(scale)
    meta.check_pixel_scale(0.262, tolerance=0.35)
    widened = meta.replace(pixel_scales=(0.17, 0.27))
    widened.check_pixel_scale(0.168)
    widened.check_pixel_scale(0.262)
    with pytest.raises(ModelPackageError, match=r'0\.17-0\.27"; the data has 0\.3" pixels'):
        widened.check_pixel_scale(0.3)
    with pytest.raises(ValueError, match="pixel_scales"):
        meta.replace(pixel_scales=(0.27, 0.17))


def _shipped(name: str) -> Path:
    return default_model_path("residual").parent / f"{name}.zip"


@pytest.mark.parametrize("name", ["residual_ugrizy", "image_ugrizy"])
def test_the_version_1_packages_load_and_their_metadata_round_trips(name):
    from lsst.meas.extensions.residual.network.package import _metadata_json

    path = _shipped(name)
    package = load_model_package(path)
    meta = package.metadata
    assert meta == read_model_metadata(path)
    # The shipped files (format version 1) predate class_nms_iou and pixel_scale_tolerance: they
    # take the package defaults.
    assert meta.inference.class_nms_iou == 0.7 and meta.inference.batch_size is None
    assert meta.inference.pixel_scale_tolerance == 0.05 and meta.pixel_scales == (0.2, 0.2)
    assert meta.inference.tile_size == 512 and 0 < meta.score_threshold < 1
    # Dumped to JSON and validated again: the same metadata.
    dumped = json.loads(json.dumps(meta.model_dump(mode="json")))
    assert validate_config(ModelMetadata, dumped) == meta
    # Written now, the metadata.json is the shipped one, key for key and in the same order, plus
    # the inference settings it lacked, in format version 3 (migrated: no band subsets, 0.2" pixels).
    with zipfile.ZipFile(path) as archive:
        shipped = json.loads(archive.read("metadata.json"))
    written = _metadata_json(meta, shipped["weights_dtype"], shipped["weights_sha256"])
    assert "class_nms_iou" not in shipped["inference"] and "band_subsets" not in shipped
    assert meta.score_calibration is None
    assert shipped["format_version"] == 1 and written["format_version"] == 3
    assert meta.band_subsets is False
    shipped["inference"].update(class_nms_iou=0.7, pixel_scale_tolerance=0.05)
    shipped["format_version"] = 3
    weights = {key: shipped.pop(key) for key in ("weights_dtype", "weights_sha256")}
    migrated = {"score_calibration": None, "band_subsets": False, "pixel_scales": [0.2, 0.2]}
    shipped = {**shipped, **migrated, **weights}
    assert written == shipped and list(written) == list(shipped)


def test_every_shipped_package_of_the_current_format_round_trips():
    from lsst.meas.extensions.residual.network.package import PACKAGE_FORMAT_VERSION, _metadata_json

    for mode in ("residual", "image"):
        for path in shipped_model_paths(mode).values():
            with zipfile.ZipFile(path) as archive:
                shipped = json.loads(archive.read("metadata.json"))
            if shipped["format_version"] != PACKAGE_FORMAT_VERSION:
                continue
            meta = load_model_package(path).metadata
            # Written now, its metadata.json is the shipped one, key for key and in order.
            assert _metadata_json(meta, shipped["weights_dtype"], shipped["weights_sha256"]) == shipped
            assert meta.mode == mode and meta.score_threshold > 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: {**d, "colour": "red"}, "colour: Extra inputs are not permitted"),
        (lambda d: {**d, "inference": {**d["inference"], "tiles": 3}}, "inference.tiles: Extra inputs"),
        (lambda d: {**d, "model": {**d["model"], "widths": 3}}, "model.widths: Extra inputs"),
        (lambda d: {**d, "stamp_size": "big"}, "stamp_size: Input should be a valid integer"),
        (lambda d: {**d, "inference": {**d["inference"], "tile_size": "x"}}, "inference.tile_size: Input"),
        (lambda d: {**d, "mode": "both"}, "mode: Input should be 'residual' or 'image'"),
        (lambda d: {**d, "channel_std": [1.0, -1.0, 1.0]}, r"channel_std.1: Input should be greater than 0"),
        (lambda d: {**d, "channels": ["image_g", "image_r", "image_z"]}, "channels .* differ from those"),
        (lambda d: {**d, "inference": {**d["inference"], "batch_size": 4}}, "does not fix batch_size"),
        (
            lambda d: {**d, "inference": {**d["inference"], "fit_tiles": False}},
            "fit_tiles is a choice of the run",
        ),
        (
            lambda d: {**d, "inference": {**d["inference"], "precision": "float16"}},
            "precision is a choice of the run",
        ),
        (lambda d: {k: v for k, v in d.items() if k != "recipe"}, "recipe: Field required"),
        (lambda d: {**d, "format": "other"}, "not a ResidualDetectron model package"),
        (lambda d: {**d, "format_version": 99}, "format version 99; this code reads versions 1 to 3"),
    ],
)
def test_bad_metadata_is_refused_naming_the_field(tiny_package_path, tmp_path, edit, message):
    path = _edited_package(tiny_package_path, tmp_path / "edited.zip", edit)
    with pytest.raises(ModelPackageError, match=message):
        read_model_metadata(path)
    assert issubclass(ModelPackageError, InputError)


def test_older_format_versions_are_migrated_in_order(tiny_package_path, tmp_path, monkeypatch):
    package_module = importlib.import_module("lsst.meas.extensions.residual.network.package")
    # Every version before the current one has its upgrade.
    assert set(package_module.MIGRATIONS) == set(range(1, package_module.PACKAGE_FORMAT_VERSION))
    # A hypothetical format version 5 where ``stamp_size`` became ``training_stamp_size`` (version 4)
    # and is back (version 5): a version-3 file goes through both steps, in order.
    steps = []

    def rename(old, new):
        def upgrade(data):
            steps.append((old, new))
            return {(new if key == old else key): value for key, value in data.items()}

        return upgrade

    monkeypatch.setattr(package_module, "PACKAGE_FORMAT_VERSION", 5)
    monkeypatch.setattr(
        package_module,
        "MIGRATIONS",
        {
            **package_module.MIGRATIONS,
            3: rename("stamp_size", "training_stamp_size"),
            4: rename("training_stamp_size", "stamp_size"),
        },
    )
    assert read_model_metadata(tiny_package_path).stamp_size == 128
    assert steps == [("stamp_size", "training_stamp_size"), ("training_stamp_size", "stamp_size")]
    steps.clear()
    current = _edited_package(tiny_package_path, tmp_path / "v5.zip", lambda d: {**d, "format_version": 5})
    assert read_model_metadata(current).stamp_size == 128 and steps == []
    # Version 1 (the shipped packages) had no band subsets; one claiming them is refused.
    monkeypatch.undo()
    old = _edited_package(
        tiny_package_path,
        tmp_path / "v1.zip",
        lambda d: (
            {k: v for k, v in d.items() if k not in ("band_subsets", "score_calibration", "pixel_scales")}
            | {"format_version": 1}
        ),
    )
    assert read_model_metadata(old).band_subsets is False
    claims = _edited_package(
        tiny_package_path,
        tmp_path / "v1b.zip",
        lambda d: {k: v for k, v in d.items() if k != "pixel_scales"} | {"format_version": 1},
    )
    with pytest.raises(ModelPackageError, match="version 1 package has no band_subsets"):
        read_model_metadata(claims)
    # Version 2 had no pixel scales: its models were trained on 0.2" pixels.
    v2 = _edited_package(
        tiny_package_path,
        tmp_path / "v2.zip",
        lambda d: {k: v for k, v in d.items() if k != "pixel_scales"} | {"format_version": 2},
    )
    assert read_model_metadata(v2).pixel_scales == (0.2, 0.2)
    claims = _edited_package(tiny_package_path, tmp_path / "v2b.zip", lambda d: {**d, "format_version": 2})
    with pytest.raises(ModelPackageError, match="version 2 package has no pixel_scales"):
        read_model_metadata(claims)


# --- tiling and merging ------------------------------------------------------------------------------


def test_tile_starts_cover_with_overlap():
    assert tile_starts(50, 64, 16) == [0]
    starts = tile_starts(200, 64, 16)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))


def test_fitted_tiles_cover_with_fewer_pixels_and_grow_by_at_most_the_overlap():
    def pixels(shape, side):
        return len(tile_starts(shape[0], side, 64)) * len(tile_starts(shape[1], side, 64)) * side**2

    # 2048 takes 4 tiles of 576 a side, not 5 of 512; 4096 fits 512 exactly; a small image one tile.
    assert fitted_tile_size((2048, 2048), 512, 64) == 576
    assert fitted_tile_size((1024, 1024), 512, 64) == 544
    assert fitted_tile_size((4096, 4096), 512, 64) == 512
    assert fitted_tile_size((300, 200), 512, 64) == 512
    assert fitted_tile_size((2048, 2048), 512, 0) == 512  # no overlap, no room to grow
    for shape in [(2048, 2048), (4200, 4200), (1000, 3000), (700, 700)]:
        side = fitted_tile_size(shape, 512, 64)
        assert 512 <= side <= 576 and side % 32 == 0
        assert pixels(shape, side) == min(pixels(shape, s) for s in (512, 544, 576))


def test_a_widened_tile_gets_proposals_and_detections_in_proportion_to_its_area(tiny_package_path):
    # Tiles of 64 overlapping by 32: a 150² image takes 4 tiles of 96 (2.25 times the area) or
    # 16 of 64. The heads' budgets grow with the tile and are the model's own afterwards.
    detector = Detector(tiny_package_path, device="cpu")
    heads = detector.model.roi_heads
    own_detections = heads.detections_per_img
    seen = []
    forward = heads.forward

    def recording(features, proposals, image_sizes, *args, **kwargs):
        seen.append((image_sizes[0], max(len(p) for p in proposals), heads.detections_per_img))
        return forward(features, proposals, image_sizes, *args, **kwargs)

    heads.forward = recording
    image = np.random.default_rng(6).normal(0, 1, size=(3, 150, 150)).astype(np.float32)
    calls = {}
    for fit in (True, False):
        seen.clear()
        detector.find(
            image,
            np.ones_like(image),
            ("g", "r", "i"),
            inference=InferenceConfig(
                tile_overlap=32, score_threshold=0.0, proposals_per_tile=40, fit_tiles=fit
            ),
        )
        calls[fit] = list(seen)
    assert {size for size, _, _ in calls[True]} == {(96, 96)} and len(calls[True]) == 4
    assert {size for size, _, _ in calls[False]} == {(64, 64)} and len(calls[False]) == 16
    assert max(n for _, n, _ in calls[True]) == 90 and max(n for _, n, _ in calls[False]) == 40
    assert {d for _, _, d in calls[True]} == {round(own_detections * 2.25)}
    assert {d for _, _, d in calls[False]} == {own_detections}
    assert heads.detections_per_img == own_detections
    assert detector.settings().fit_tiles is True


def _blob_network(detector: Detector, threshold: float = 3.0):
    """Stand-in for the network: every connected bright region of channel 0 is a 'galaxy'.

    Boxes are the regions' bounding boxes cut by the tile, masks the regions
    resampled as torchvision's RoIAlign would see them, so the tiling, mask
    pasting and duplicate merging run exactly as with the real network.
    """
    from scipy import ndimage
    from torchvision.ops import roi_align

    def run_batch(tiles, settings=None, growth=1.0):
        outputs = []
        for tile in tiles:
            labels, n = ndimage.label(tile[0] > threshold)
            boxes, masks = [], []
            for index, (sy, sx) in enumerate(ndimage.find_objects(labels), start=1):
                box = [sx.start, sy.start, sx.stop, sy.stop]
                region = torch.from_numpy((labels == index).astype(np.float32))[None, None]
                masks.append(
                    roi_align(region, [torch.tensor([box], dtype=torch.float32)], (28, 28), 1.0)[0, 0]
                )
                boxes.append(box)
            outputs.append(
                {
                    "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
                    "labels": np.full(n, 2),
                    "scores": np.linspace(0.9, 0.8, n),
                    "masks": np.stack([m.numpy() for m in masks]) if masks else np.zeros((0, 28, 28)),
                }
            )
        return outputs

    detector._run_batch = run_batch


def _disc_image(centres, radius, shape=(3, 150, 150)):
    image = np.zeros(shape, dtype=np.float32)
    yy, xx = np.indices(shape[1:])
    for cx, cy in centres:
        image[:, (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = 50.0
    return image


def test_source_straddling_a_tile_border_is_found_once_with_its_whole_footprint(
    tiny_package_path, monkeypatch
):
    detector = Detector(tiny_package_path, device="cpu")
    _blob_network(detector)
    # Tiles of 64 with overlap 16 start at x = 0, 48, 86. A disc of radius 7 at x = 58 (pixels
    # 51..65) is cut by the right border of the first tile (pixels 0..63) and whole in the
    # second (48..111).
    image = _disc_image([(58.0, 30.0)], 7)
    variance = np.ones_like(image)
    settings = InferenceConfig(tile_size=64, tile_overlap=16, score_threshold=0.0)
    found = detector.find(image, variance, ("g", "r", "i"), inference=settings)
    truth = (_disc_image([(58.0, 30.0)], 7)[0] > 3).astype(bool)
    assert len(found) == 1
    row = found.table[0]
    assert not row["truncated"]
    assert abs(row["x"] - 58.0) < 0.6 and abs(row["y"] - 30.0) < 0.6
    label = found.label_image() > 0
    iou = (label & truth).sum() / (label | truth).sum()
    assert iou > 0.85
    # Without merging, the cut-off copy from the other tile survives.
    inference_module = importlib.import_module("lsst.meas.extensions.residual.network.inference")
    monkeypatch.setattr(inference_module, "_merge_duplicates", lambda candidates, merge_ios: candidates)
    unmerged = detector.find(image, variance, ("g", "r", "i"), inference=settings)
    assert len(unmerged) == 2 and unmerged.table["truncated"].sum() == 1


def test_one_source_called_both_star_and_galaxy_is_kept_once(tiny_package_path):
    """torchvision's per-class NMS lets a source out twice; the detector keeps the better class."""
    detector = Detector(tiny_package_path, device="cpu")
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0], [10.5, 10.0, 20.0, 20.5], [40.0, 40.0, 44.0, 44.0]])
    masks = torch.ones((3, 1, 28, 28))

    class Heads(torch.nn.Module):
        def forward(self, features, proposals, sizes):
            out = {"boxes": box, "labels": torch.tensor([1, 2, 1]), "scores": torch.tensor([0.6, 0.9, 0.7])}
            return [{**out, "masks": masks}], {}

    detector.model.roi_heads = Heads()
    found = detector.find(
        np.zeros((3, 64, 64), np.float32),
        np.ones((3, 64, 64), np.float32),
        ("g", "r", "i"),
        inference=InferenceConfig(tile_size=64, score_threshold=0.0),
    )
    assert sorted(found.table["class"]) == ["galaxy", "star"]
    assert found.table["score"][0] == pytest.approx(0.9)


def test_distinct_sources_are_not_merged(tiny_package_path):
    detector = Detector(tiny_package_path, device="cpu")
    _blob_network(detector)
    centres = [(20.0, 20.0), (58.0, 30.0), (120.0, 100.0), (30.0, 130.0)]
    image = _disc_image(centres, 5)
    found = detector.find(
        image,
        np.ones_like(image),
        ("g", "r", "i"),
        inference=InferenceConfig(tile_size=64, tile_overlap=16, score_threshold=0.0),
    )
    assert len(found) == len(centres)
    from lsst.meas.extensions.residual.groundtruth import match_positions

    ref, _ = match_positions(np.array(centres), found.xy, 1.0)
    assert len(ref) == len(centres)


def test_find_sources_runs_on_any_size_with_bad_pixels(tiny_package_path, tmp_path):
    rng = np.random.default_rng(4)
    image = rng.normal(0, 1, size=(4, 70, 90)).astype(np.float32)
    variance = np.ones_like(image)
    image[1, 10:12, 20:40] = np.nan
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[2, 50:60, 0:10] = 1
    found = find_sources(
        tiny_package_path,
        image,
        variance,
        ("g", "r", "i", "z"),
        mask=mask,
        device="cpu",
        inference=InferenceConfig(score_threshold=0.0),
    )
    assert isinstance(found, SourceDetections)
    assert found.shape == (70, 90)
    assert np.all(np.isfinite(found.xy))
    for fp in found.footprints:
        assert fp.y0 >= 0 and fp.x0 >= 0 and fp.y0 + fp.mask.shape[0] <= 70 and fp.x0 + fp.mask.shape[1] <= 90
    # File round trip.
    found.write(tmp_path / "sources.fits")
    back = read_source_detections(tmp_path / "sources.fits")
    assert len(back) == len(found) and back.shape == found.shape
    for a, b in zip(found.footprints, back.footprints, strict=False):
        assert (a.y0, a.x0) == (b.y0, b.x0) and np.array_equal(a.mask, b.mask)
    with pytest.raises(ValueError, match="multiple of 32"):
        InferenceConfig(tile_size=50)


def test_proposals_per_tile_bounds_what_the_heads_see(tiny_package_path):
    # The untrained tiny model's RPN proposes many boxes on noise: the heads get at most the count
    # asked for, the package's model's by default, and the model is left as it was.
    detector = Detector(tiny_package_path, device="cpu")
    assert detector.settings().proposals_per_tile == detector.metadata.model.rpn_post_nms_top_n_test
    seen = []
    forward = detector.model.roi_heads.forward

    def counting(features, proposals, *args, **kwargs):
        seen.append(max(len(p) for p in proposals))
        return forward(features, proposals, *args, **kwargs)

    detector.model.roi_heads.forward = counting
    image = np.random.default_rng(5).normal(0, 1, size=(3, 64, 64)).astype(np.float32)
    most = {}
    for proposals in (None, 7):
        seen.clear()
        detector.find(
            image,
            np.ones_like(image),
            ("g", "r", "i"),
            inference=InferenceConfig(score_threshold=0.0, proposals_per_tile=proposals),
        )
        most[proposals] = max(seen)
    assert most[7] == 7 and most[None] > 7
    assert detector.model.rpn._post_nms_top_n["testing"] == detector.metadata.model.rpn_post_nms_top_n_test
    with pytest.raises(ValueError, match="proposals_per_tile"):
        InferenceConfig(proposals_per_tile=0)


def test_sharded_roi_pooling_gives_the_plain_poolers_tensor_in_order():
    from collections import OrderedDict

    from lsst.meas.extensions.residual.network.pooling import MIN_BOXES_PER_SHARD, ShardedRoIAlign
    from torchvision.ops import MultiScaleRoIAlign

    generator = torch.Generator().manual_seed(3)
    # Two images, three levels (strides 2, 4, 8 of a 128² input), boxes of every size so each
    # level gets some; the maps channels-last as the Detector's trunk makes them.
    features = OrderedDict(
        (
            str(k),
            torch.randn(2, 4, 64 >> k, 64 >> k, generator=generator).to(memory_format=torch.channels_last),
        )
        for k in range(3)
    )
    boxes = []
    for count in (3 * MIN_BOXES_PER_SHARD + 5, 2 * MIN_BOXES_PER_SHARD):
        corner = torch.rand(count, 2, generator=generator) * 80
        side = 2 + torch.rand(count, 2, generator=generator) * 60
        boxes.append(torch.cat([corner, corner + side], dim=1))
    plain = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
    sharded = ShardedRoIAlign(MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2), shards=3)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        expected = plain(features, boxes, [(128, 128)] * 2)
        sharded(features, boxes, [(128, 128)] * 2)  # the first call (the level scales) stays whole
        calls = []
        pooler_forward = sharded.pooler.forward
        sharded.pooler.forward = lambda *args: calls.append(1) or pooler_forward(*args)
        result = sharded(features, boxes, [(128, 128)] * 2)
    assert len(calls) == 3  # it was split, and the pieces came back in the plain order
    assert torch.equal(result, expected)
    assert torch.get_num_threads() == threads  # the workers' one-thread setting stays theirs
    with pytest.raises(ValueError, match="shards"):
        ShardedRoIAlign(plain, 0)


def test_the_cpu_detector_shards_its_poolers_and_finds_what_the_plain_model_finds(tiny_package_path):
    from lsst.meas.extensions.residual.network.pooling import ShardedRoIAlign

    detector = Detector(tiny_package_path, device="cpu")
    heads = detector.model.roi_heads
    assert isinstance(heads.box_roi_pool, ShardedRoIAlign) and isinstance(
        heads.mask_roi_pool, ShardedRoIAlign
    )
    image = np.random.default_rng(8).normal(0, 1, size=(3, 150, 150)).astype(np.float32)
    args = (image, np.ones_like(image), ("g", "r", "i"))
    sharded = detector.find(*args).table
    heads.box_roi_pool, heads.mask_roi_pool = heads.box_roi_pool.pooler, heads.mask_roi_pool.pooler
    plain = detector.find(*args).table
    assert len(plain) > 0 and sharded.colnames == plain.colnames
    for name in plain.colnames:
        assert np.array_equal(np.asarray(sharded[name]), np.asarray(plain[name])), name


def test_float32_is_ieee_on_every_device_and_lower_precisions_autocast():
    from lsst.meas.extensions.residual.network import network_precision

    flags = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    before = [flag.fp32_precision for flag in flags]
    with network_precision("cuda:0", "float32"):
        # No TF32 for this call (PyTorch's default for convolutions on recent GPUs).
        assert [flag.fp32_precision for flag in flags] == ["ieee", "ieee"]
        assert not torch.is_autocast_enabled("cuda")
    assert [flag.fp32_precision for flag in flags] == before
    with network_precision("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision"):
        with network_precision("cpu", "float64"):
            pass
    with pytest.raises(ValueError, match="precision"):
        InferenceConfig(precision="tf32")


def test_a_lower_precision_run_on_the_cpu_pools_whole_and_finds_sources(tiny_package_path):
    # Autocast is per thread: sharded pooling would hand roi_align bfloat16 maps it cannot take.
    detector = Detector(tiny_package_path, device="cpu")
    assert detector.settings().precision == "float32"
    image = np.random.default_rng(9).normal(0, 1, size=(3, 150, 150)).astype(np.float32)
    args = (image, np.ones_like(image), ("g", "r", "i"))
    low = detector.find(*args, inference=InferenceConfig(precision="bfloat16")).table
    full = detector.find(*args).table
    assert len(low) > 0 and len(full) > 0


def test_label_image_and_selection():
    table_rows = {
        "id": [1, 2],
        "x": [1.0, 3.0],
        "y": [1.0, 3.0],
        "score": [0.9, 0.4],
        "class": ["star", "galaxy"],
    }
    from astropy.table import Table

    found = SourceDetections(
        Table(table_rows),
        [Footprint(0, 0, np.ones((3, 3), bool)), Footprint(2, 2, np.ones((3, 3), bool))],
        (6, 6),
    )
    labels = found.label_image()
    assert labels[0, 0] == 1 and labels[4, 4] == 2 and labels[2, 2] == 1  # higher score on top
    assert len(found.above(0.5)) == 1


# --- score calibration ---------------------------------------------------------------------------


def test_an_isotonic_calibration_makes_scores_probabilities():
    from lsst.meas.extensions.residual.network import (
        ScoreCalibration,
        expected_calibration_error,
        fit_score_calibration,
        threshold_for_purity,
    )

    rng = np.random.default_rng(0)
    raw = rng.uniform(size=20_000)
    real = rng.uniform(size=raw.size) < raw**3  # overconfident raw scores
    fit, check = slice(0, 10_000), slice(10_000, None)
    calibration = fit_score_calibration(raw[fit], real[fit], scenes=3)
    assert calibration.fitted_on["n_detections"] == 10_000 and calibration.fitted_on["scenes"] == 3
    probability = calibration.apply(raw[check])
    assert expected_calibration_error(raw[check], real[check]) > 0.15
    assert expected_calibration_error(probability, real[check]) < 0.02  # on detections it never saw
    threshold = threshold_for_purity(probability, real[check], 0.92)
    assert real[check][probability >= threshold].mean() >= 0.92
    assert real[check][probability >= threshold - 0.05].mean() < 0.92 + 0.02
    # The raw cut that keeps the same detections as a calibrated threshold.
    cut = calibration.raw_threshold(0.5)
    assert np.array_equal(raw >= cut, calibration.apply(raw) >= 0.5)
    assert calibration.raw_threshold(2.0) == float("inf") and calibration.raw_threshold(-1.0) == float("-inf")
    with pytest.raises(ValueError, match="knot scores must increase"):
        ScoreCalibration(scores=(0.5, 0.2), probabilities=(0.1, 0.3))
    with pytest.raises(ValueError, match="both real and false"):
        fit_score_calibration(raw[:10], np.ones(10, bool))


def test_a_package_calibration_is_stored_and_applied(tmp_path, tiny_package_path):
    from lsst.meas.extensions.residual.network import ScoreCalibration

    package = load_model_package(tiny_package_path)
    rng = np.random.default_rng(2)
    image = rng.normal(size=(3, 64, 64)).astype(np.float32)
    image[:, 20:24, 40:44] += 40.0
    variance = np.ones_like(image)
    raw = Detector(package, "cpu").find(image, variance, ("g", "r", "i"))
    assert len(raw) > 0
    # Halves every score (a calibration's knots; the tiny package's threshold is 0).
    calibration = ScoreCalibration(scores=(0.0, 1.0), probabilities=(0.0, 0.5), fitted_on={"test": True})
    meta = package.metadata.model_copy(update={"score_calibration": calibration})
    path = save_model_package(tmp_path / "calibrated.zip", meta, package.state_dict)
    assert read_model_metadata(path).score_calibration == calibration
    calibrated = Detector(path, "cpu").find(image, variance, ("g", "r", "i"))
    np.testing.assert_allclose(calibrated.table["score"], 0.5 * np.asarray(raw.table["score"]), rtol=1e-6)
    np.testing.assert_array_equal(calibrated.xy, raw.xy)
    # A calibrated threshold cuts the same detections as the raw score it comes from.
    cut = Detector(path, "cpu").find(
        image, variance, ("g", "r", "i"), inference=InferenceConfig(score_threshold=0.25)
    )
    assert len(cut) == int(np.sum(np.asarray(raw.table["score"]) >= 0.5))


def test_calibrate_package_sets_the_calibration_and_a_threshold_for_the_purity(tmp_path, tiny_package_path):
    from lsst.meas.extensions.residual.network import calibrate_package

    package = load_model_package(tiny_package_path)
    rng = np.random.default_rng(5)
    raw = rng.uniform(size=4000)
    real = rng.uniform(size=raw.size) < raw**2
    calibrated = calibrate_package(package, raw, real, 0.92, scenes=7)
    meta = calibrated.metadata
    assert meta.score_calibration.fitted_on["scenes"] == 7 and meta.metrics["calibration"]["purity"] == 0.92
    kept = meta.score_calibration.apply(raw) >= meta.score_threshold
    assert real[kept].mean() >= 0.92 and kept.sum() > 100
    path = save_model_package(tmp_path / "calibrated.zip", meta, calibrated.state_dict)
    assert read_model_metadata(path) == meta
    with pytest.raises(ModelPackageError, match="calibrated already"):
        calibrate_package(calibrated, raw, real)
    with pytest.raises(ModelPackageError, match="reaches purity 0.999"):
        calibrate_package(package, raw, rng.uniform(size=raw.size) < 0.5, 0.999)


def test_a_model_is_named_by_path_or_by_a_shipped_name(tmp_path):
    from lsst.meas.extensions.residual.errors import MissingInputError
    from lsst.meas.extensions.residual.network import band_subset_model_path, model_path

    assert model_path(None) == default_model_path("residual") == _shipped("residual_ugrizy")
    assert model_path("residual_v2") == _shipped("residual_v2") == band_subset_model_path()
    assert model_path(str(_shipped("image_ugrizy"))) == _shipped("image_ugrizy")
    with pytest.raises(
        MissingInputError, match="not a shipped one: image_ugrizy, residual_ugrizy, residual_v2"
    ):
        model_path(tmp_path / "nope.zip")
    v2 = read_model_metadata(model_path("residual_v2"))
    assert v2.band_subsets and v2.pixel_scales == (0.17, 0.27) and v2.classes[-1] == "artefact"
