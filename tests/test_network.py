"""Model builder, channel recipes, model packages, tiled inference and merging (CPU, tiny models)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsst.meas.extensions.residual.network import (  # noqa: E402
    ChannelNormalisation,
    Detector,
    Footprint,
    ModelConfig,
    ModelMetadata,
    ModelPackageError,
    SourceDetections,
    band_noise,
    build_model,
    channel_names,
    default_model_path,
    find_sources,
    load_model_package,
    make_channels,
    parse_recipe,
    read_model_metadata,
    read_source_detections,
    save_model_package,
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
    return ModelMetadata(
        name="tiny",
        mode=kwargs.pop("mode", "image" if recipe == "image" else "residual"),
        recipe=recipe,
        bands=bands,
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=nchan, **TINY),
        tile_size=tile,
        tile_overlap=16,
        score_threshold=0.0,
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
    with pytest.raises(ValueError, match="Unknown backbone"):
        ModelConfig(backbone="vgg")
    with pytest.raises(ValueError, match="anchor_sizes"):
        ModelConfig(anchor_sizes=(4, 8))
    with pytest.raises(ValueError, match="Unknown model config key"):
        ModelConfig.from_dict({"widths": 3})


# --- packages ----------------------------------------------------------------------------------------


def test_package_round_trip(tiny_package_path, tmp_path):
    package = load_model_package(tiny_package_path)
    meta = read_model_metadata(tiny_package_path)
    assert meta.to_dict() == package.metadata.to_dict()
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
    with pytest.raises(ModelPackageError, match="makes 6"):
        ModelMetadata(
            name="x",
            mode="image",
            recipe="image",
            bands=("u", "g", "r", "i", "z", "y"),
            classes=("star", "galaxy"),
            model=ModelConfig(in_channels=12),
        )
    with pytest.raises(ModelPackageError, match="wavelength order"):
        tiny_metadata(bands=("r", "g", "i"))
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


def test_default_model_paths_are_shipped_packages():
    for mode in ("residual", "image"):
        path = default_model_path(mode)
        assert path.stat().st_size < 50 * 1024**2
        meta = read_model_metadata(path)
        assert meta.mode == mode and meta.bands == ("u", "g", "r", "i", "z", "y")
    with pytest.raises(ValueError, match="Unknown model mode"):
        default_model_path("psf")


# --- tiling and merging ------------------------------------------------------------------------------


def test_tile_starts_cover_with_overlap():
    assert tile_starts(50, 64, 16) == [0]
    starts = tile_starts(200, 64, 16)
    assert starts[0] == 0 and starts[-1] == 200 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:], strict=False))


def _blob_network(detector: Detector, threshold: float = 3.0):
    """Stand-in for the network: every connected bright region of channel 0 is a 'galaxy'.

    Boxes are the regions' bounding boxes cut by the tile, masks the regions
    resampled as torchvision's RoIAlign would see them, so the tiling, mask
    pasting and duplicate merging run exactly as with the real network.
    """
    from scipy import ndimage
    from torchvision.ops import roi_align

    def run_batch(tiles):
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


def test_source_straddling_a_tile_border_is_found_once_with_its_whole_footprint(tiny_package_path):
    detector = Detector(tiny_package_path, device="cpu")
    _blob_network(detector)
    # Tiles of 64 with overlap 16 start at x = 0, 48, 86. A disc of radius 7 at x = 58 (pixels
    # 51..65) is cut by the right border of the first tile (pixels 0..63) and whole in the
    # second (48..111).
    image = _disc_image([(58.0, 30.0)], 7)
    variance = np.ones_like(image)
    found = detector.find(image, variance, ("g", "r", "i"), tile_size=64, overlap=16, score_threshold=0.0)
    truth = (_disc_image([(58.0, 30.0)], 7)[0] > 3).astype(bool)
    assert len(found) == 1
    row = found.table[0]
    assert not row["truncated"]
    assert abs(row["x"] - 58.0) < 0.6 and abs(row["y"] - 30.0) < 0.6
    label = found.label_image() > 0
    iou = (label & truth).sum() / (label | truth).sum()
    assert iou > 0.85
    # Without merging (merge_ios > 1 never met), the cut-off copy from the other tile survives.
    unmerged = detector.find(
        image, variance, ("g", "r", "i"), tile_size=64, overlap=16, score_threshold=0.0, merge_ios=1.01
    )
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
        tile_size=64,
        score_threshold=0.0,
    )
    assert sorted(found.table["class"]) == ["galaxy", "star"]
    assert found.table["score"][0] == pytest.approx(0.9)


def test_distinct_sources_are_not_merged(tiny_package_path):
    detector = Detector(tiny_package_path, device="cpu")
    _blob_network(detector)
    centres = [(20.0, 20.0), (58.0, 30.0), (120.0, 100.0), (30.0, 130.0)]
    image = _disc_image(centres, 5)
    found = detector.find(
        image, np.ones_like(image), ("g", "r", "i"), tile_size=64, overlap=16, score_threshold=0.0
    )
    assert len(found) == len(centres)
    from lsst.meas.extensions.residual.evaluation import match_positions

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
        tiny_package_path, image, variance, ("g", "r", "i", "z"), mask=mask, device="cpu", score_threshold=0.0
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
        find_sources(tiny_package_path, image, variance, ("g", "r", "i", "z"), device="cpu", tile_size=50)


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
