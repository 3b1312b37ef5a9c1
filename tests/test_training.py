"""Labels, dataset cache, stamps and augmentation, training loop (CPU, tiny model, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from lsst.meas.extensions.residual.configs import validate_config  # noqa: E402
from lsst.meas.extensions.residual.detection import detect_peaks  # noqa: E402
from lsst.meas.extensions.residual.errors import ConfigError  # noqa: E402
from lsst.meas.extensions.residual.groundtruth import LabelConfig, make_labels  # noqa: E402
from lsst.meas.extensions.residual.network import build_model, load_model_package, set_input_size  # noqa: E402
from lsst.meas.extensions.residual.network.model import ModelConfig  # noqa: E402
from lsst.meas.extensions.residual.training import (  # noqa: E402
    AugmentConfig,
    DatasetConfig,
    StampSampler,
    TrainConfig,
    generate_dataset,
    load_dataset,
    load_train_config,
    train,
)
from lsst.meas.extensions.residual.training.dataset import _augment  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "slim_widths": [8, 8, 16, 16],
    "slim_blocks": [1, 1, 1, 1],
    "fpn_channels": 16,
    "box_head_size": 32,
    "mask_head_layers": [16],
}


def truth_deblender(scene, detections):
    """Stand-in first pass: the noiseless image of the truth sources that got a peak."""
    from lsst.meas.extensions.residual.groundtruth import match_positions

    index, _ = match_positions(scene.truth.xy, detections.xy, 2.0)
    return scene.truth.render(scene.shape, index)


# --- labels ------------------------------------------------------------------------------------------


def test_residual_labels_are_recoverable_sources_without_a_peak(small_scene):
    peaks = detect_peaks(small_scene).xy
    labels = make_labels(small_scene, peaks, LabelConfig(mode="residual", snr_cut=5.0))
    sources = labels.sources
    assert len(sources) == len(small_scene.truth)
    target = np.asarray(sources["target"])
    np.testing.assert_array_equal(
        target, np.asarray(sources["recoverable"]) & ~np.asarray(sources["detected"])
    )
    assert np.all(np.asarray(sources["snr"])[target] >= 5.0)
    # Bright sources have peaks: the brightest true source is detected, hence not a target.
    assert sources["detected"][np.argmax(sources["snr"])]
    image_labels = make_labels(small_scene, peaks, LabelConfig(mode="image", snr_cut=5.0))
    assert np.array_equal(np.asarray(image_labels.sources["target"]), np.asarray(sources["recoverable"]))
    assert len(image_labels.target_index) > len(labels.target_index)
    for fp, box in zip(image_labels.footprints, image_labels.boxes, strict=False):
        rows, cols = np.nonzero(fp.mask)
        assert rows.size >= 6  # min_mask_pixels
        # The box is the mask's bounding box (pixel i spans [i, i+1)).
        np.testing.assert_array_equal(
            box, [fp.x0 + cols.min(), fp.y0 + rows.min(), fp.x0 + cols.max() + 1, fp.y0 + rows.max() + 1]
        )


def test_labels_need_truth_and_peaks(small_scene):
    with pytest.raises(ValueError, match="first-pass peaks"):
        make_labels(small_scene, None, LabelConfig(mode="residual"))
    with pytest.raises(ValueError, match="'residual' or 'image'"):
        LabelConfig(mode="both")


ARTEFACT_TARGET_TYPES = ("diffraction_spike", "psf_wing", "satellite_trail", "cosmic_ray")


@pytest.fixture(scope="module")
def artefact_scene():
    """A 128² scene with a bright star (its spikes and halo) and the other artefacts of the mix."""
    from lsst.meas.extensions.residual.simulation import ArtefactConfig, SimulationConfig, simulate_scene

    return simulate_scene(
        3, SimulationConfig(height=128, width=128, artefacts=ArtefactConfig(min_bright_stars=1))
    )


def test_artefact_truth_gives_targets_of_a_third_class(artefact_scene):
    scene = artefact_scene
    peaks = detect_peaks(scene).xy
    plain = make_labels(scene, peaks, LabelConfig(mode="residual"))
    assert plain.classes == ("star", "galaxy") and len(plain.artefacts) == 0
    config = LabelConfig(mode="residual", artefact_types=ARTEFACT_TARGET_TYPES, artefact_cell=24)
    labels = make_labels(scene, peaks, config)
    assert labels.classes == ("star", "galaxy", "artefact") == config.classes
    # The source targets are those of the labels without artefacts.
    np.testing.assert_array_equal(labels.target_index, plain.target_index)
    types = set(np.asarray(labels.artefacts["type"]).astype(str))
    assert {"diffraction_spike", "psf_wing"} <= types <= set(ARTEFACT_TARGET_TYPES)
    boxes, class_ids, footprints = labels.network_targets()
    n_sources = len(labels.target_index)
    assert len(boxes) == len(class_ids) == len(footprints) == n_sources + len(labels.artefacts)
    assert np.all(class_ids[n_sources:] == 3) and np.all(np.isin(class_ids[:n_sources], (1, 2)))
    usable = scene.good.any(axis=0)
    truth_pixels = {int(r["id"]): r["footprint"] for r in scene.artefacts}
    for row, fp, box in zip(labels.artefacts, footprints[n_sources:], boxes[n_sources:], strict=True):
        assert max(fp.mask.shape) <= 24 and fp.area > 0  # one cell
        np.testing.assert_array_equal(box, [fp.x0, fp.y0, fp.x0 + fp.mask.shape[1], fp.y0 + fp.mask.shape[0]])
        # Its pixels are the artefact's own, with data, and outside every source target's mask.
        assert np.all(truth_pixels[int(row["artefact_id"])].cut(fp.box)[fp.mask])
        assert np.all(usable[fp.slices][fp.mask])
        for source in footprints[:n_sources]:
            assert not np.any(source.cut(fp.box) & fp.mask)
    # Every visible pixel of a spike is in one of its cells.
    spike = next(r for r in scene.artefacts if r["type"] == "diffraction_spike")
    cells = [
        fp
        for r, fp in zip(labels.artefacts, footprints[n_sources:], strict=True)
        if r["artefact_id"] == spike["id"]
    ]
    covered = sum(fp.area for fp in cells)
    assert covered == int(np.count_nonzero(spike["footprint"].mask & usable[spike["footprint"].slices]))
    with pytest.raises(ValueError, match=r"unknown artefact type\(s\) \['ghost'\]"):
        LabelConfig(artefact_types=("ghost",))


# --- augmentation and stamps -------------------------------------------------------------------------


def test_augmentation_keeps_boxes_on_their_masks():
    rng = np.random.default_rng(0)
    s = 32
    masks = np.zeros((2, s, s), dtype=np.uint8)
    masks[0, 3:9, 20:31] = 1
    masks[1, 15:27, 2:6] = 1
    boxes = np.array([[20, 3, 31, 9], [2, 15, 6, 27]], dtype=np.float32)
    channels = np.repeat(masks[:1].astype(np.float32), 2, axis=0)
    for _ in range(12):
        c, b, m = _augment(rng, channels, boxes, masks, AugmentConfig(noise_sigma_max=0.0))
        for box, mask in zip(b, m, strict=False):
            rows, cols = np.nonzero(mask)
            np.testing.assert_array_equal(box, [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        np.testing.assert_array_equal(c[0] > 0.5, m[0] > 0)  # image and mask moved together
    # A stamp without labels (common in residual mode) still gives tensors torch accepts.
    for _ in range(8):
        c, b, m = _augment(rng, channels, boxes[:0], masks[:0], AugmentConfig())
        assert torch.from_numpy(m).shape == (0, s, s) and torch.from_numpy(b).shape == (0, 4)
        torch.from_numpy(c)


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = DatasetConfig(
        name="t-image", recipe="image", n_scenes=2, seed=3, scene_size=96, labels=LabelConfig(mode="image")
    )
    return config, cache, generate_dataset(config, cache, progress=False)


def test_dataset_cache_is_reused_and_resumable(image_dataset):
    config, cache, directory = image_dataset
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["n_scenes"] == 2 and manifest["n_targets"] > 0
    assert len(manifest["channel_mean"]) == 6
    stamp_file = directory / "scene_000001.npy"
    before = stamp_file.stat().st_mtime_ns
    assert generate_dataset(config, cache, progress=False) == directory
    assert stamp_file.stat().st_mtime_ns == before  # reused, not regenerated
    # Interrupted generation: a scene and the manifest are missing; only that scene is made again.
    first = directory / "scene_000000.npy"
    first_time = first.stat().st_mtime_ns
    kept = np.load(stamp_file)
    (directory / "manifest.json").unlink()
    stamp_file.unlink()
    generate_dataset(config, cache, progress=False)
    assert first.stat().st_mtime_ns == first_time
    np.testing.assert_array_equal(np.load(stamp_file), kept)  # same seed, same scene


def test_scenes_made_in_worker_processes_are_the_same_files(image_dataset, tmp_path):
    config, _, serial = image_dataset
    parallel = generate_dataset(config, tmp_path, progress=False, workers=2)
    assert parallel.name == serial.name
    for index in range(config.n_scenes):
        np.testing.assert_array_equal(
            np.load(parallel / f"scene_{index:06d}.npy"), np.load(serial / f"scene_{index:06d}.npy")
        )
        with (
            np.load(parallel / f"scene_{index:06d}.npz") as made,
            np.load(serial / f"scene_{index:06d}.npz") as expected,
        ):
            assert sorted(made.files) == sorted(expected.files)
            for key in expected.files:
                np.testing.assert_array_equal(made[key], expected[key], err_msg=key)
    assert json.loads((parallel / "manifest.json").read_text()) == json.loads(
        (serial / "manifest.json").read_text()
    )


def test_dataset_directory_follows_the_data_code(monkeypatch, tmp_path):
    import importlib

    from lsst.meas.extensions.residual.training import dataset_dir

    dataset_module = importlib.import_module("lsst.meas.extensions.residual.training.dataset")
    config = DatasetConfig(name="t", recipe="image", n_scenes=1, labels=LabelConfig(mode="image"))
    before = dataset_dir(config, tmp_path)
    assert dataset_dir(config, tmp_path) == before
    # Changed simulator/first-pass code must not reuse data made by the old code.
    monkeypatch.setattr(dataset_module, "code_digest", lambda with_deblender: "changed")
    assert dataset_dir(config, tmp_path) != before


def test_dataset_digest_changes_with_every_field_and_only_then():
    fields = {"name": "t", "recipe": "image", "n_scenes": 1, "labels": {"mode": "image"}}
    config = validate_config(DatasetConfig, fields)
    digest = config.digest()
    # Built again, or read back from its config.json form: the same digest.
    assert validate_config(DatasetConfig, fields).digest() == digest
    as_read = json.loads(json.dumps(config.model_dump(mode="json")))
    assert validate_config(DatasetConfig, as_read).digest() == digest
    assert config.replace().digest() == digest
    changes = [
        {"seed": 1},
        {"n_scenes": 2},
        {"bands": "gri"},
        {"galaxy_density": 30.0},
        {"psf_model": "moffat"},
        {"recipe": "image+model"},
        {"labels": {"mode": "image", "snr_cut": 6.0}},
        {"normalisation": {"residual_clip": 5.0}},
        {"detection": {"threshold": 4.0}},
        {"deblend": {"max_iter": 100}},
    ]
    digests = {validate_config(DatasetConfig, {**fields, **change}).digest() for change in changes}
    assert len(digests) == len(changes) and digest not in digests


def test_stamps_are_repeatable_and_hold_their_labels(image_dataset):
    _, _, directory = image_dataset
    records = load_dataset(directory)
    sampler = StampSampler(records, 64, AugmentConfig(), seed=5)
    images_a, targets_a = sampler.batch((0, 1), 3)
    images_b, targets_b = sampler.batch((0, 1), 3)
    images_c, _ = sampler.batch((0, 2), 3)
    for a, b in zip(images_a, images_b, strict=False):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(images_a, images_c, strict=False))
    for target in targets_a:
        boxes, masks = target["boxes"], target["masks"]
        assert boxes.shape[0] == masks.shape[0] == target["labels"].shape[0]
        assert torch.all(boxes[:, 2] > boxes[:, 0]) and torch.all(boxes[:, 3] > boxes[:, 1])
        assert torch.all(boxes >= 0) and torch.all(boxes <= 64)
        assert set(target["labels"].tolist()) <= {1, 2}
    with pytest.raises(ValueError, match="exceeds the scene size"):
        StampSampler(records, 128, None, seed=1)


def test_focus_puts_a_rare_class_in_the_stamps(image_dataset):
    _, _, directory = image_dataset
    records = load_dataset(directory)

    def star_fraction(sampler):
        rng = np.random.default_rng(0)
        return np.mean([np.any(sampler.stamp(rng)[2] == 1) for _ in range(60)])

    plain = StampSampler(records, 32, None, seed=1)
    focused = StampSampler(records, 32, None, seed=1, focus={1: 0.9})
    assert star_fraction(focused) >= 0.85 > star_fraction(plain)
    with pytest.raises(ValueError, match="sum to at most 1"):
        StampSampler(records, 32, None, seed=1, focus={1: 0.7, 2: 0.7})


def test_band_dropout_gives_stamps_what_inference_gives_for_missing_bands(tmp_path):
    from lsst.meas.extensions.residual.training.dataset import BandDropout

    config = DatasetConfig(
        name="t-bad", recipe="image+bad", n_scenes=1, seed=3, scene_size=96, labels=LabelConfig(mode="image")
    )
    directory = generate_dataset(config, tmp_path, progress=False)
    records = load_dataset(directory)
    # The flags are not rescaled (a clean set has none, and its σ would be the 1e-6 floor).
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["channel_mean"][6:] == [0.0] * 6 and manifest["channel_std"][6:] == [1.0] * 6
    snr2 = records[0].info["band_snr2"]
    assert snr2.shape == (len(records[0].boxes), 6)
    np.testing.assert_allclose(np.sqrt(snr2.sum(axis=1)), records[0].info["snr"], rtol=1e-9)
    with pytest.raises(ValueError, match="needs the 'bad' channel"):
        BandDropout(kinds=("image",), nbands=6, snr_cut=5.0, probability=1.0)
    dropout = BandDropout(kinds=("image", "bad"), nbands=6, snr_cut=5.0, probability=1.0)
    full = StampSampler(records, 96, AugmentConfig(noise_sigma_max=0.0, flips=False, rot90=False), seed=2)
    sampler = StampSampler(records, 96, AugmentConfig(flips=False, rot90=False), seed=2, band_dropout=dropout)
    rng = np.random.default_rng(4)
    seen_fewer = False
    for _ in range(6):
        channels, boxes, _, _ = sampler.stamp(rng, scene_index=0, corner=(0, 0))
        bad = channels[6:]
        dropped = bad.reshape(6, -1).min(axis=1) == 1.0
        assert 1 <= dropped.sum() <= 5  # every stamp loses bands here, and keeps at least one
        assert np.all(channels[:6][dropped] == 0) and np.all(np.isin(bad[~dropped], (0.0, 1.0)))
        kept_snr2 = snr2[:, ~dropped].sum(axis=1)
        assert len(boxes) == int(np.sum(kept_snr2 >= 25.0))  # labels too faint in what is left go
        seen_fewer |= len(boxes) < len(full.stamp(rng, scene_index=0, corner=(0, 0))[1])
    assert seen_fewer


def test_a_dataset_of_realistic_patches_sees_their_masks(tmp_path):
    from lsst.meas.extensions.residual.simulation import ArtefactConfig

    config = DatasetConfig(
        name="t-real",
        recipe="image+bad",
        n_scenes=1,
        seed=3,
        scene_size=96,
        labels=LabelConfig(mode="image"),
        widened=True,
        artefacts=ArtefactConfig(min_bright_stars=1),
    )
    simulation = config.simulation()
    assert simulation.psf_model_mix and simulation.artefacts == ArtefactConfig(min_bright_stars=1)
    record = load_dataset(generate_dataset(config, tmp_path, progress=False))[0]
    bad = np.asarray(record.channels[6:], dtype=np.float32)
    assert bad.any() and np.isin(bad, (0.0, 1.0)).all()  # the bright star's SAT pixels, at least
    assert not np.asarray(record.channels[:6], dtype=np.float32)[bad == 1].any()
    with pytest.raises(ValueError, match="widened mix draws the depth and the PSF; remove depth"):
        DatasetConfig(widened=True, depth="1yr")


def test_a_dataset_with_artefact_targets_trains_an_artefact_class(tmp_path):
    from lsst.meas.extensions.residual.simulation import ArtefactConfig

    labels = LabelConfig(mode="residual", artefact_types=ARTEFACT_TARGET_TYPES)
    config = DatasetConfig(
        name="t-art",
        recipe="residual+model+bad",
        n_scenes=1,
        seed=3,
        scene_size=128,
        labels=labels,
        artefacts=ArtefactConfig(min_bright_stars=1),
    )
    directory = generate_dataset(config, tmp_path, progress=False, deblender=truth_deblender)
    record = load_dataset(directory)[0]
    n_artefacts = int(np.sum(record.class_ids == 3))
    assert n_artefacts > 0 and len(record.footprints) == len(record.class_ids) == len(record.boxes)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["n_targets_per_class"]["artefact"] == n_artefacts
    assert set(manifest["n_targets_per_class"]) == {"star", "galaxy", "artefact"}
    # Band dropout keeps an artefact while a band it lies in is kept: infinite S/N² in those bands.
    band_snr2 = np.asarray(record.info["band_snr2"])[record.class_ids == 3]
    assert np.all(np.isin(band_snr2, (0.0, np.inf))) and np.all(np.isinf(band_snr2).any(axis=1))
    assert np.all(np.isfinite(np.asarray(record.info["band_snr2"])[record.class_ids != 3]))
    train_config = TrainConfig(
        mode="residual", dataset=config, stamp_size=64, focus={"artefact": 0.3}, model=TINY
    )
    assert train_config.network_config().num_classes == 4
    with pytest.raises(ValueError, match=r"unknown class\(es\) \['artefact'\]"):
        TrainConfig(mode="residual", dataset=config.replace(labels=LabelConfig()), focus={"artefact": 0.3})


def test_residual_dataset_uses_the_first_pass_model(tmp_path):
    config = DatasetConfig(name="t-res", recipe="residual+model", n_scenes=1, seed=11, scene_size=96)
    directory = generate_dataset(config, tmp_path, progress=False, deblender=truth_deblender)
    record = load_dataset(directory)[0]
    assert record.channels.shape == (12, 96, 96)
    # With a truth-based first pass, the residual channels are pure noise except at missed sources:
    # their typical value is ~1σ, while the model channels hold the detected sources.
    residual = np.asarray(record.channels[:6], dtype=np.float32)
    assert 0.7 < np.median(np.abs(residual)) / 0.6745 < 1.6
    assert np.asarray(record.channels[6:]).max() > 2  # asinh(5σ) = 2.3: detected sources are >= 5σ
    assert not np.any(record.info["src_detected"] & record.info["src_target"])


# --- training ----------------------------------------------------------------------------------------


def test_one_training_step_reduces_the_loss_on_a_fixed_batch(image_dataset):
    _, _, directory = image_dataset
    records = load_dataset(directory)
    sampler = StampSampler(records, 64, None, seed=0)
    images, targets = sampler.batch((0, 0), 2)
    assert sum(len(t["boxes"]) for t in targets) > 0
    torch.manual_seed(0)
    model = build_model(ModelConfig(in_channels=6, **TINY), input_size=64)
    set_input_size(model, 64)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.0)

    def loss_value():
        torch.manual_seed(1)  # same RPN/ROI sampling for both evaluations
        with torch.no_grad():
            return float(sum(model(images, targets).values()))

    before = loss_value()
    torch.manual_seed(1)
    loss = sum(model(images, targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = loss_value()
    assert after < before


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epochz": 3}, "epochz: Extra inputs are not permitted"),
        ({"dataset": {"labelz": {}}}, "dataset.labelz: Extra inputs are not permitted"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr: Input should be greater than 0"),
        ({"epochs": "many"}, "epochs: Input should be a valid integer"),
        ({"validation": {"n_scenez": 3}}, "validation: .*not DatasetConfig fields: n_scenez"),
        (
            {"dataset": {"seed": 0, "n_scenes": 10}, "validation": {"seed": 5}},
            r"validation: .*seeds 5\.\.14 overlap the training seeds 0\.\.9",
        ),
        ({"mode": "image", "dataset": {"labels": {"mode": "residual"}}}, "dataset: .*job's mode is 'image'"),
        ({"model": {"backbone": "vgg"}}, "model: .*backbone: Input should be 'slim'"),
        ({"model": {"in_channels": 3}}, "model: .*in_channels follow from the recipe"),
        ({"stamp_size": 100}, "stamp_size: Input should be a multiple of 32"),
        ({"stamp_size": 512}, r"stamp_size: .*exceeds the dataset's scene_size \(256\)"),
        ({"focus": {"quasar": 0.3}}, r"focus: .*unknown class\(es\) \['quasar'\]"),
        ({"inference": {"score_threshold": 0.3}}, "inference: .*chosen on the validation scenes"),
        ({"inference": {"tile_size": 64, "tile_overlap": 64}}, "inference: .*must be smaller than tile_size"),
        (
            {"augment": {"band_dropout": 0.5}},
            r"augment: .*band_dropout needs the 'bad' channel .*residual\+model\+bad",
        ),
    ],
)
def test_train_config_refuses_bad_fields_naming_them(tmp_path, fields, message):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(fields))
    with pytest.raises(ConfigError, match=f"{path}: {message}"):
        load_train_config(path)


def test_train_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_train_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_train_config(bad)
    with pytest.raises(FileNotFoundError):
        load_train_config(tmp_path / "none.yaml")
    # The dataset's labels follow the job's mode unless the file says otherwise.
    assert validate_config(TrainConfig, {"mode": "image"}).dataset.labels.mode == "image"


def test_shipped_training_configs_parse():
    channels = {"residual+model": 12, "image": 6, "residual+model+bad": 18}
    for name in ("train_residual.yaml", "train_image.yaml", "train_smoke.yaml", "train_residual_v2.yaml"):
        config = load_train_config(REPO / "config" / name)
        config.validation_dataset()
        assert config.network_config().in_channels == channels[config.dataset.recipe]
        assert validate_config(TrainConfig, config.model_dump(mode="json")) == config
        assert config.inference.score_threshold is None and config.inference.tile_size is not None
    # Network v2: every scene widened and with artefacts, an artefact class, band dropout.
    v2 = load_train_config(REPO / "config" / "train_residual_v2.yaml")
    assert v2.dataset.widened and v2.dataset.artefacts is not None and v2.augment.band_dropout > 0
    assert (
        v2.dataset.labels.classes == ("star", "galaxy", "artefact") and v2.network_config().num_classes == 4
    )
    assert v2.dataset.simulation().pixel_scale_range == (0.17, 0.27)


def test_smoke_training_writes_a_package_and_resumes_exactly(tmp_path, monkeypatch):
    import importlib

    # (the package's ``train`` attribute is the function; the module is in sys.modules)
    train_module = importlib.import_module("lsst.meas.extensions.residual.training.train")

    config = load_train_config(REPO / "config" / "train_smoke.yaml")
    config = config.replace(cache_dir=str(tmp_path / "cache"))
    straight = tmp_path / "straight"
    path = train(config, straight, progress=False)
    package = load_model_package(path)
    assert package.metadata.mode == "image" and package.metadata.provenance["best_epoch"] in (1, 2)
    assert package.metadata.provenance["training_dataset"]["seeds"] == [5, 7]
    inference = package.metadata.inference
    assert 0.0 < inference.score_threshold < 1.0
    # The package's inference settings: the training config's, the validated threshold and
    # the package defaults for the rest.
    assert (inference.tile_size, inference.tile_overlap) == (128, 32)
    assert (inference.merge_ios, inference.class_nms_iou, inference.batch_size) == (0.5, 0.7, None)
    assert package.metadata.training == config.model_dump(mode="json")
    assert (straight / "training.png").exists()
    history = json.loads((straight / "history.json").read_text())
    assert len(history) == 2 and "best_f1" in history[0]["validation"]

    # Interrupt a second run right after its first checkpoint, then start it again: it resumes
    # and ends with exactly the weights of the uninterrupted run.
    resumed = tmp_path / "resumed"
    real_plot = train_module._plot_history

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_plot_history", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config, resumed, progress=False)
    monkeypatch.setattr(train_module, "_plot_history", real_plot)
    train(config, resumed, progress=False)
    assert len(json.loads((resumed / "history.json").read_text())) == 2
    a = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # Batches made ahead in DataLoader processes: the same weights.
    loaded = tmp_path / "loaded"
    train(config, loaded, progress=False, loader_workers=2)
    d = torch.load(loaded / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], d[key]), key
    # A different configuration in the same directory is refused.
    with pytest.raises(ValueError, match="different configuration"):
        train(config.replace(epochs=3), resumed, progress=False)

    # A run with a time limit stops after the epoch that passes it, with a package of that epoch;
    # without the limit the same command resumes to the weights of the uninterrupted run.
    limited = tmp_path / "limited"
    stopped = load_model_package(train(config, limited, progress=False, time_limit=0.0)).metadata
    assert (stopped.provenance["epochs_trained"], stopped.provenance["epochs"]) == (1, 2)
    assert stopped.provenance["best_epoch"] == 1
    assert len(json.loads((limited / "history.json").read_text())) == 1
    finished = load_model_package(train(config, limited, progress=False)).metadata
    assert finished.provenance["epochs_trained"] == 2
    c = torch.load(limited / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], c[key]), key


def test_a_network_v2_run_trains_the_artefact_class_for_band_subsets(tmp_path):
    # config/train_residual_v2.yaml with tiny data and a tiny model: widened scenes with
    # artefacts, through the first pass, to a package of three classes taking band subsets.
    v2 = load_train_config(REPO / "config" / "train_residual_v2.yaml")
    smoke = load_train_config(REPO / "config" / "train_smoke.yaml")
    config = v2.replace(
        cache_dir=str(tmp_path / "cache"),
        dataset=v2.dataset.replace(n_scenes=2, scene_size=128),
        validation={"n_scenes": 1, "seed": 910000},
        model=smoke.model,
        stamp_size=96,
        batch_size=2,
        epochs=1,
        steps_per_epoch=3,
        inference=smoke.inference,
    )
    metadata = load_model_package(train(config, tmp_path / "out", progress=False)).metadata
    assert metadata.classes == ("star", "galaxy", "artefact") and metadata.band_subsets
    assert (metadata.model.num_classes, metadata.model.in_channels) == (4, 18)
    assert metadata.pixel_scales == (0.17, 0.27)  # the widened mix's
    # The source metrics leave the artefact detections out, and count them.
    assert isinstance(metadata.metrics["validation"]["n_artefact_detections"], int)
    assert "artefact_precision_at_80_recall" not in metadata.metrics["validation"]


def test_weights_that_cannot_be_written_leave_the_previous_file(tmp_path, monkeypatch):
    """A full disk under a checkpoint or the best weights: the previous file stays whole (a resumed
    run and its package read it), nothing half-written is left, and the system's error comes
    through (torch's own file writer keeps only "unexpected pos" of it)."""
    import errno
    import importlib

    from lsst.meas.extensions.residual.cli.refusals import refused_write

    # The module, not the function the package exports under its name.
    train_module = importlib.import_module("lsst.meas.extensions.residual.training.train")

    path = tmp_path / "best_weights.pt"
    train_module._save_whole({"w": torch.ones(3)}, path)
    real_save = torch.save

    def full_disk(state, stream):
        real_save(state, stream)
        stream.flush()
        # What a Python file's write raises on a full disk, seen through torch's writer.
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as raised:
        train_module._save_whole({"w": torch.zeros(3)}, path)
    assert refused_write(raised.value) == "[Errno 28] No space left on device"
    assert torch.load(path, weights_only=True)["w"].tolist() == [1.0, 1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["best_weights.pt"]
