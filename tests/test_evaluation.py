"""Metrics, baselines and the evaluation pipeline (CPU, tiny untrained model, small scenes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsst.meas.extensions.residual.configs import make_config, validate_config  # noqa: E402
from lsst.meas.extensions.residual.errors import ConfigError  # noqa: E402
from lsst.meas.extensions.residual.evaluation.baselines import chi_image, photutils_detect, sep_detect  # noqa: E402
from lsst.meas.extensions.residual.evaluation.evaluate import EvaluationConfig, evaluate_package  # noqa: E402
from lsst.meas.extensions.residual.groundtruth import LabelConfig  # noqa: E402
from lsst.meas.extensions.residual.groundtruth.metrics import (  # noqa: E402
    CurveCounts,
    TruthSet,
    binned_recall,
    count_curve,
    curve_metrics,
    mask_iou,
    precision_at_recall,
    recall_at_precision,
)
from lsst.meas.extensions.residual.network import (  # noqa: E402
    Footprint,
    InferenceConfig,
    ModelConfig,
    ModelMetadata,
    build_model,
    save_model_package,
)

TINY = {
    "slim_widths": [8, 8, 16, 16],
    "slim_blocks": [1, 1, 1, 1],
    "fpn_channels": 16,
    "box_head_size": 32,
    "mask_head_layers": [16],
    "box_detections_per_img": 50,
}


def _truth():
    # Sources 0-2 targets; 3 real but faint (not a target); 4 already detected (not real).
    return TruthSet(
        xy=np.array([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0], [70.0, 70.0], [90.0, 90.0]]),
        class_id=np.array([1, 2, 2, 2, 1]),
        target=np.array([True, True, True, False, False]),
        real=np.array([True, True, True, True, False]),
        mag=np.array([22.0, 24.0, 26.0, 27.0, 20.0]),
    )


def test_counts_precision_recall_by_hand():
    truth = _truth()
    det_xy = np.array([[10.5, 10.0], [30.0, 31.0], [70.0, 70.5], [90.0, 90.0], [5.0, 60.0]])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    counts = count_curve(truth, det_xy, score, 2.0, thresholds=[0.2, 0.65, 0.85])
    np.testing.assert_array_equal(counts.n_detections, [5, 3, 1])
    np.testing.assert_array_equal(counts.matched_targets, [2, 2, 1])
    # The faint real source (70, 70) counts for precision, the re-detected (90, 90) does not.
    np.testing.assert_array_equal(counts.matched_real, [3, 3, 1])
    curves = curve_metrics(counts)
    np.testing.assert_allclose(curves["precision"], [3 / 5, 1.0, 1.0])
    np.testing.assert_allclose(curves["recall"], [2 / 3, 2 / 3, 1 / 3])
    # Per class: the galaxy detections are at 30 (target galaxy) and 70 (real galaxy).
    det_class = np.array([1, 2, 2, 1, 2])
    galaxy = count_curve(truth, det_xy, score, 2.0, [0.2], det_class, class_id=2)
    assert galaxy.n_targets == 2 and galaxy.matched_targets[0] == 1 and galaxy.matched_real[0] == 2
    assert galaxy.n_detections[0] == 3
    # Adding scenes adds counts.
    both = counts + counts
    assert both.n_targets == 6 and both.matched_real[0] == 6
    with pytest.raises(ValueError, match="different threshold grids"):
        counts + CurveCounts.zeros([0.5])


def test_restricted_truth_ignores_faint_sources():
    truth = _truth()
    truth.snr = np.array([30.0, 25.0, 8.0, 6.0, 50.0])
    bright = truth.restricted(20.0)
    np.testing.assert_array_equal(bright.target, [True, True, False, False, False])
    # Detections of the faint sources at (50, 50) and (70, 70) are neither right nor wrong; the one at
    # (5, 60) matches nothing and stays wrong.
    det_xy = np.array([[10.0, 10.0], [50.0, 50.0], [70.0, 70.0], [5.0, 60.0]])
    counts = count_curve(bright, det_xy, None, 2.0, [0.0])
    assert counts.n_targets == 2 and counts.matched_targets[0] == 1
    assert counts.matched_real[0] == 1 and counts.n_detections[0] == 2


def test_operating_points():
    precision = np.array([0.5, 0.7, 0.92, 0.99])
    recall = np.array([0.95, 0.85, 0.6, 0.2])
    assert precision_at_recall(precision, recall, 0.8) == 0.7
    assert precision_at_recall(precision, recall, 0.99) is None
    assert recall_at_precision(precision, recall, 0.9) == (0.6, 2)
    assert recall_at_precision(precision, recall, 0.999) == (0.0, None)
    binned = binned_recall(
        np.array([21.0, 21.5, 23.0]), np.array([True, False, True]), np.array([20.0, 22.0, 24.0])
    )
    assert binned["total"] == [2, 1] and binned["recall"] == [0.5, 1.0]


def test_mask_iou():
    a = Footprint(0, 0, np.ones((4, 4), bool))
    b = Footprint(2, 2, np.ones((4, 4), bool))
    assert mask_iou(a, b) == pytest.approx(4 / 28)
    assert mask_iou(a, a) == 1.0


def test_baselines_find_injected_sources():
    rng = np.random.default_rng(3)
    shape = (3, 80, 80)
    variance = np.full(shape, 4.0)
    data = rng.normal(0, 2.0, size=shape)
    yy, xx = np.indices(shape[1:])
    sources = [(20.0, 25.0), (60.0, 50.0)]
    for x, y in sources:
        data += 40.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    good = np.ones(shape, bool)
    chi = chi_image(data, variance, good)
    assert abs(np.std(chi[:10, :10]) - 1.0) < 0.3  # unit noise
    psf = np.stack([np.exp(-((np.indices((11, 11)) - 5) ** 2).sum(0) / (2 * 1.5**2))] * 3)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    for found in (sep_detect(chi, 5.0, psf=psf), sep_detect(chi, 5.0), photutils_detect(chi, psf, 3.0)):
        assert len(found) >= 2
        for x, y in sources:
            assert np.min(np.hypot(found[:, 0] - x, found[:, 1] - y)) < 1.0
    # Pure noise: nothing at 5σ; at 3σ of the PSF-filtered noise, a few noise peaks (~1 per 2000 px).
    noise = rng.normal(0, 1, (200, 200))
    assert len(sep_detect(noise, 5.0, psf=psf)) == 0
    assert 2 <= len(sep_detect(noise, 3.0, psf=psf)) <= 60


@pytest.fixture(scope="module")
def tiny_image_package(tmp_path_factory):
    torch.manual_seed(0)
    bands = ("u", "g", "r", "i", "z", "y")
    meta = ModelMetadata(
        name="tiny-image",
        mode="image",
        recipe="image",
        bands=bands,
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=6, **TINY),
        inference=InferenceConfig(
            tile_size=64, tile_overlap=16, score_threshold=0.3, merge_ios=0.5, class_nms_iou=0.7
        ),
        provenance={"training_dataset": {"seeds": [0, 9]}, "validation_dataset": {"seeds": [100, 101]}},
        training={"dataset": {"depth": "10yr", "labels": {"snr_cut": 5.0}}},
    )
    return save_model_package(
        tmp_path_factory.mktemp("pkg") / "tiny.zip", meta, build_model(meta.model).state_dict()
    )


def test_evaluation_writes_report_and_plots(tiny_image_package, tmp_path):
    config = EvaluationConfig(n_scenes=1, seed=500, scene_size=96, device="cpu")
    summary = evaluate_package(tiny_image_package, config, tmp_path, progress=False)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["n_targets"] == summary["n_targets"] > 0
    assert set(saved["baselines"]) == {
        "SEP 3σ",
        "SEP 5σ",
        "SEP 5σ per pixel, 3×3 filter",
        "photutils 3σ + deblend",
        "first-pass peaks",
    }
    # The first-pass peaks find most recoverable sources in image mode.
    assert saved["baselines"]["first-pass peaks"]["recall"] > 0.5
    for name in ("all", "star", "galaxy"):
        assert len(saved["curves"][name]["precision"]) == len(saved["curves"]["all"]["threshold"])
    assert set(saved["recall_vs_magnitude"]) >= {"network", "SEP 5σ"}
    for png in ("pr_curves.png", "recall_vs_mag.png", "example_overlay.png", "reliability.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # Calibration: every detection (at the lowest threshold) with its real/false label.
    calibration = saved["calibration"]
    assert calibration["scores"] == "raw" and calibration["n_detections"] == sum(
        c for c in calibration["reliability"]["count"]
    )
    assert 0 <= calibration["expected_calibration_error"] <= 1
    assert set(calibration["threshold_for_purity"]) == {"0.9", "0.92", "0.95"}
    # LSST's extendedness on the same detections, over the same true stars and galaxies.
    extendedness = saved["extendedness_baseline"]
    assert extendedness["lsst_cut"] == 0.985
    for subset in ("all", "snr_lt_20"):
        assert set(extendedness[subset]) == {"star", "galaxy"}
    for name in ("star", "galaxy"):
        assert extendedness["all"][name]["n_targets"] == saved["n_targets_per_class"][name]
    assert set(saved["precision_at_80_recall_snr_lt_20"]) == {"star", "galaxy"}
    # Without the merge across classes each class keeps every detection of its own: at least the
    # recall of the merged detections (a wrong class or a lost detection would lower it).
    alone, merged = saved["max_recall_each_class_alone"], saved["max_recall_per_class"]
    assert set(saved["precision_at_80_recall_each_class_alone"]) == {"star", "galaxy"}
    assert all(alone[name] >= merged[name] for name in ("star", "galaxy")) and merged["galaxy"] > 0


def test_scenes_prepared_in_worker_processes_give_the_same_evaluation(tiny_image_package, tmp_path):
    config = EvaluationConfig(n_scenes=2, seed=500, scene_size=64, device="cpu", baselines=False)
    serial = evaluate_package(tiny_image_package, config, tmp_path / "serial", progress=False)
    parallel = evaluate_package(tiny_image_package, config, tmp_path / "parallel", progress=False, workers=2)
    assert serial["n_targets"] > 0
    for summary in (serial, parallel):
        summary.pop("seconds")
    assert parallel == serial


def test_detection_labels_count_as_the_purity_curve_does():
    from lsst.meas.extensions.residual.groundtruth.metrics import detection_labels

    truth = TruthSet(
        xy=np.array([[10.0, 10.0], [30.0, 30.0], [50.0, 50.0]]),
        class_id=np.array([1, 2, 2]),
        target=np.array([True, True, False]),
        real=np.array([True, True, False]),
        mag=np.zeros(3),
        ignore=np.array([False, False, True]),
    )
    detections = np.array([[10.0, 11.0], [10.5, 10.0], [50.0, 50.5], [80.0, 80.0]])
    score = np.array([0.9, 0.4, 0.8, 0.7])
    real, counted = detection_labels(truth, detections, score, 3.0)
    # The better-scoring of the two on the first source is real (though farther), the other a
    # duplicate; the one on the ignored source is not counted.
    assert real.tolist() == [True, False, False, False] and counted.tolist() == [True, True, False, True]
    counts = count_curve(truth, detections, None, 3.0, [0.0])
    assert counts.n_detections[0] == counted.sum() and counts.matched_real[0] == real.sum()


def test_evaluation_refuses_training_scenes(tiny_image_package, tmp_path):
    with pytest.raises(ValueError, match="overlap the package's training dataset"):
        evaluate_package(tiny_image_package, EvaluationConfig(n_scenes=3, seed=8), tmp_path, progress=False)


def test_label_and_evaluation_configs_are_strict_and_documented():
    labels = validate_config(LabelConfig, {"mode": "image", "snr_cut": 3.0})
    assert labels.mode == "image" and LabelConfig(**labels.model_dump()) == labels
    assert "first-pass peak" in LabelConfig.model_fields["match_radius"].description
    with pytest.raises(ConfigError, match="snr_cutt"):
        validate_config(LabelConfig, {"snr_cutt": 3.0})
    with pytest.raises(ConfigError, match="min_mask_pixels"):
        make_config(LabelConfig, min_mask_pixels=0)
    config = make_config(EvaluationConfig, n_scenes=2, score_threshold=0.4)
    assert config.replace(seed=7).seed == 7 and config.seed == 1_000_000
    assert "held-out scenes" in EvaluationConfig.model_fields["n_scenes"].description
    for bad, field in (
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"mag_edges": (22.0, 21.0)}, "mag_edges"),
    ):
        with pytest.raises(ConfigError, match=field):
            make_config(EvaluationConfig, **bad)
    with pytest.raises(ConfigError, match="scenes"):
        make_config(EvaluationConfig, scenes=3)


def test_evaluation_names_a_bad_stored_label_config(tmp_path):
    meta = ModelMetadata(
        name="tiny-bad-labels",
        mode="image",
        recipe="image",
        bands=("u", "g", "r", "i", "z", "y"),
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=6, **TINY),
        training={"dataset": {"labels": {"snr_cut": 5.0, "mask_sigma": 1.0}}},
    )
    package = save_model_package(tmp_path / "bad.zip", meta, build_model(meta.model).state_dict())
    with pytest.raises(ConfigError, match="tiny-bad-labels.*labels.*mask_sigma"):
        evaluate_package(
            package, EvaluationConfig(n_scenes=1, device="cpu"), tmp_path / "out", progress=False
        )


def test_evaluation_variants_change_one_thing_of_the_training_scenes(tiny_image_package):
    from lsst.meas.extensions.residual.evaluation.evaluate import EVALUATION_VARIANTS, _settings
    from lsst.meas.extensions.residual.network import load_model_package

    package = load_model_package(tiny_image_package)
    base = _settings(package, EvaluationConfig())[0]
    changed = {}
    for variant in EVALUATION_VARIANTS:
        simulation = _settings(package, EvaluationConfig(variant=variant))[0]
        changed[variant] = {k for k, v in simulation.model_dump().items() if v != base.model_dump()[k]}
    assert changed == {
        "training": set(),
        "kolmogorov_airy": {"psf_model"},
        "moffat": {"psf_model"},
        "compact": {"galaxy_sizes"},
        "correlated_noise": {"artefacts"},
        "1yr": {"depth"},
        "standard_galaxies": set(),  # the tiny package was trained on standard sizes
        "dense": {"galaxy_density"},
        "star_field": {"star_density"},
        "poor_seeing": {"psf_fwhm_range"},
    }
    assert _settings(package, EvaluationConfig(variant="correlated_noise"))[0].artefacts.saturate is False
    with pytest.raises(ValueError, match="unknown variant 'fog'"):
        EvaluationConfig(variant="fog")


def test_evaluation_scenes_follow_a_v2_training_and_its_band_subsets(tmp_path):
    from lsst.meas.extensions.residual.evaluation.evaluate import _scene_bands, _settings
    from lsst.meas.extensions.residual.network import load_model_package

    bands = ("u", "g", "r", "i", "z", "y")
    meta = ModelMetadata(
        name="tiny-v2",
        mode="image",
        recipe="image+bad",
        bands=bands,
        classes=("star", "galaxy", "artefact"),
        model=ModelConfig(in_channels=12, num_classes=4, **TINY),
        band_subsets=True,
        training={"dataset": {"widened": True, "artefacts": {}, "labels": {"mode": "image"}}},
    )
    package = load_model_package(
        save_model_package(tmp_path / "v2.zip", meta, build_model(meta.model).state_dict())
    )
    simulation = _settings(package, EvaluationConfig())[0]
    assert simulation.psf_model_mix and simulation.pixel_scale_range and simulation.artefacts is not None
    assert simulation.bands == bands
    # A variant replaces the mix's draw of what it changes.
    assert _settings(package, EvaluationConfig(variant="moffat"))[0].psf_model_mix == ()
    assert _scene_bands(meta, EvaluationConfig(bands="gri")) == ("g", "r", "i")
    gri = meta.replace(
        bands=("g", "r", "i"),
        model=ModelConfig(in_channels=6, num_classes=4, **TINY),
        channel_mean=None,
        channel_std=None,
    )
    with pytest.raises(ValueError, match=r"does not use band\(s\) z"):
        _scene_bands(gri, EvaluationConfig(bands="gz"))
    # A package without band subsets is evaluated on its own bands only.
    with pytest.raises(ValueError, match="needs bands u,g,r,i,z,y"):
        _scene_bands(meta.replace(band_subsets=False), EvaluationConfig(bands="gri"))
    # The scenes are the package's six bands cut to the subset: the same sources in fewer bands.
    config = EvaluationConfig(n_scenes=1, seed=500, scene_size=96, device="cpu", baselines=False)
    runs = {}
    for name in ("ugrizy", "gri"):
        runs[name] = evaluate_package(package, config.replace(bands=name), tmp_path / name, progress=False)
    assert runs["gri"]["scenes"]["bands"] == ["g", "r", "i"] and runs["gri"]["scenes"]["artefacts"]
    assert runs["gri"]["n_true_sources"] == runs["ugrizy"]["n_true_sources"]
    # Fewer bands, less S/N: no more recoverable targets.
    assert 0 < runs["gri"]["n_targets"] <= runs["ugrizy"]["n_targets"]
    assert runs["gri"]["n_artefact_detections"] is not None


def test_extendedness_ratio_is_one_for_a_star_and_below_for_a_galaxy():
    import galsim
    from astropy.table import Table
    from lsst.meas.extensions.residual.evaluation.extendedness import (
        LSST_EXTENDEDNESS_CUT,
        extendedness_ratio,
    )
    from lsst.meas.extensions.residual.network import SourceDetections
    from lsst.meas.extensions.residual.scene import Scene

    bands = ("g", "r", "i")
    size, sigma = 96, 2.0
    psf_image = galsim.Gaussian(sigma=sigma).drawImage(nx=25, ny=25, scale=1.0, method="no_pixel").array
    psf = np.repeat(psf_image[None] / psf_image.sum(), len(bands), axis=0)
    image = np.zeros((len(bands), size, size))
    positions = [(30.35, 48.4), (66.0, 48.0)]  # (x, y): a star off a pixel centre, a galaxy
    profiles = [
        galsim.Gaussian(sigma=sigma),
        galsim.Convolve(galsim.Exponential(half_light_radius=4.0), galsim.Gaussian(sigma=sigma)),
    ]
    for (x, y), profile in zip(positions, profiles, strict=True):
        stamp = (
            (1000.0 * profile)
            .drawImage(
                nx=size,
                ny=size,
                scale=1.0,
                method="no_pixel",
                offset=(x - size / 2 + 0.5, y - size / 2 + 0.5),
            )
            .array
        )
        image += stamp[None]
    scene = Scene(
        image.astype(np.float32), np.full(image.shape, 1e-4, np.float32), psf.astype(np.float32), bands
    )
    yy, xx = np.mgrid[:size, :size]
    footprints = [
        Footprint(0, 0, np.hypot(xx - x, yy - y) <= radius)
        for (x, y), radius in zip(positions, (5, 12), strict=True)
    ]
    # The detections' positions (mask centroids) a few tenths of a pixel off the light's centres.
    table = Table(
        {
            "id": [1, 2],
            "x": [p[0] - 0.4 for p in positions],
            "y": [p[1] + 0.3 for p in positions],
            "score": [0.9, 0.8],
        }
    )
    ratio = extendedness_ratio(scene, SourceDetections(table, footprints, (size, size)))
    assert ratio[0] == pytest.approx(1.0, abs=0.02)  # the segment's size does not matter for a star
    assert ratio[1] < 0.8 < LSST_EXTENDEDNESS_CUT
