"""First-pass detection: footprints, peaks, culling, robustness."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.detection import (
    DetectionConfig,
    detect_peaks,
    detection_image,
    psf_flux_at,
    read_detections,
    write_detections,
)
from lsst.meas.extensions.residual.groundtruth import match_positions
from lsst.meas.extensions.residual.scene import Scene


def _blank(shape=(64, 64), nbands=3, sigma=1.0, seed=0, psf_sigma=1.5):
    rng = np.random.default_rng(seed)
    image = rng.normal(0, sigma, size=(nbands, *shape))
    y, x = np.mgrid[-10:11, -10:11]
    psf = np.exp(-(x**2 + y**2) / (2 * psf_sigma**2))
    psf = np.repeat((psf / psf.sum())[None], nbands, axis=0)
    return image, np.full((nbands, *shape), sigma**2), psf


def _add_point(image, psf, x, y, flux):
    half = psf.shape[-1] // 2
    image[:, y - half : y + half + 1, x - half : x + half + 1] += flux * psf


def test_detection_image_has_unit_noise():
    image, variance, psf = _blank(shape=(128, 128))
    significance, _ = detection_image(Scene(image, variance, psf, ("g", "r", "i")))
    assert 0.9 < significance[15:-15, 15:-15].std() < 1.1


def test_psf_flux_estimates_point_source_flux():
    image, variance, psf = _blank(sigma=0.01)
    _add_point(image, psf, 30, 32, 500.0)
    _, psf_flux = detection_image(Scene(image, variance, psf, ("g", "r", "i")))
    np.testing.assert_allclose(psf_flux[:, 32, 30], 500.0, rtol=0.01)


def test_psf_flux_at_positions_equals_the_patch_wide_filter():
    # An asymmetric PSF (a flipped window would differ), a masked block, a NaN, positions on the
    # image edges and inside the mask: the point-wise fluxes are the cube's at those pixels.
    image, variance, _ = _blank(shape=(60, 70), sigma=0.3, seed=5)
    y, x = np.mgrid[-10:11, -10:11]
    psf = np.exp(-((x - 0.6) ** 2 / 4.0 + (y + 0.4) ** 2 / 9.0) / 2.0)
    psf = np.stack([psf / psf.sum(), psf.T / psf.sum(), psf[::-1] / psf.sum()])
    _add_point(image, psf, 30, 25, 300.0)
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[1, 20:34, 22:30] = 1
    image[2, 40, 11] = np.nan
    scene = Scene(image, variance, psf, ("g", "r", "i"), mask=mask)
    significance, cube = detection_image(scene)
    xy = np.array([[30, 25], [0, 0], [69, 59], [25, 27], [11, 40], [69.4, 3.6], [28, 21]])
    px, py = np.floor(xy[:, 0] + 0.5).astype(int), np.floor(xy[:, 1] + 0.5).astype(int)
    expected = cube[:, py, px].T
    measured = psf_flux_at(scene, xy)
    assert np.count_nonzero(expected == 0) >= 1  # one position is where band r's support is too small
    np.testing.assert_allclose(measured, expected, rtol=1e-5, atol=1e-4)
    sampled_significance, sampled = detection_image(scene, positions=xy)
    np.testing.assert_array_equal(sampled_significance, significance)
    np.testing.assert_array_equal(sampled, measured)


def test_detections_keep_the_significance_image():
    image, variance, psf = _blank(sigma=0.5)
    _add_point(image, psf, 28, 32, 400.0)
    scene = Scene(image, variance, psf, ("g", "r", "i"))
    detections = detect_peaks(scene)
    np.testing.assert_array_equal(detections.significance, detection_image(scene)[0])
    row = detections.peaks[0]
    np.testing.assert_allclose(
        row["psf_flux"], detection_image(scene)[1][:, int(row["y"]), int(row["x"])], rtol=1e-5
    )


def test_two_separated_points_give_two_footprints():
    image, variance, psf = _blank()
    _add_point(image, psf, 16, 16, 200.0)
    _add_point(image, psf, 46, 44, 100.0)
    detections = detect_peaks(Scene(image, variance, psf, ("g", "r", "i")))
    assert len(detections.peaks) == 2
    assert set(detections.peaks["footprint_id"]) == {1, 2}
    xy = sorted(map(tuple, detections.xy.astype(int)))
    assert xy == [(16, 16), (46, 44)]
    # Every peak lies inside its own footprint.
    for row in detections.peaks:
        assert detections.footprints[int(row["y"]), int(row["x"])] == row["footprint_id"]


def test_blend_gives_one_footprint_two_peaks_and_noise_bump_is_culled():
    image, variance, psf = _blank(sigma=0.5)
    _add_point(image, psf, 28, 32, 400.0)
    _add_point(image, psf, 36, 32, 300.0)  # 8 px apart, PSF sigma 1.5: a blend
    detections = detect_peaks(Scene(image, variance, psf, ("g", "r", "i")))
    assert int(detections.footprints.max()) == 1
    assert len(detections.peaks) == 2
    # Demanding a huge prominence culls the fainter peak but never the brightest.
    strict = detect_peaks(Scene(image, variance, psf, ("g", "r", "i")), DetectionConfig(min_prominence=1e4))
    assert len(strict.peaks) == 1 and tuple(strict.xy[0].astype(int)) == (28, 32)


def test_pure_noise_gives_no_peaks():
    image, variance, psf = _blank(shape=(96, 96), seed=3)
    assert len(detect_peaks(Scene(image, variance, psf, ("g", "r", "i"))).peaks) == 0


def test_masked_and_nan_pixels_do_not_make_detections():
    image, variance, psf = _blank(seed=4)
    image[:, 20:30, 20:30] = 1e6  # a bleed trail, masked
    image[1, 50, 50] = np.nan
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[:, 20:30, 20:30] = 1
    scene = Scene(image, variance, psf, ("g", "r", "i"), mask=mask)
    significance, _ = detection_image(scene)
    assert np.isfinite(significance).all()
    assert len(detect_peaks(scene).peaks) == 0


def test_completeness_on_simulated_scene(small_scene):
    detections = detect_peaks(small_scene)
    truth = small_scene.truth
    matched, _ = match_positions(truth.xy, detections.xy, radius=2.0)
    bright = np.flatnonzero(np.asarray(truth.table["mag"])[:, 3] < 24.0)
    assert len(bright) > 0
    assert np.isin(bright, matched).all()
    # Almost every peak is a real source.
    assert len(matched) >= 0.9 * len(detections.peaks)


def test_detections_round_trip(small_scene, tmp_path):
    detections = detect_peaks(small_scene)
    write_detections(detections, tmp_path / "peaks.fits")
    back = read_detections(tmp_path / "peaks.fits")
    np.testing.assert_array_equal(back.footprints, detections.footprints)
    np.testing.assert_array_equal(back.peaks["x"], detections.peaks["x"])
    np.testing.assert_allclose(back.peaks["psf_flux"], detections.peaks["psf_flux"])
    assert back.bands == small_scene.bands


def test_bad_config():
    with pytest.raises(ValueError, match="threshold"):
        DetectionConfig(threshold=0)


def test_convolutions_by_strips_equal_the_whole_image_convolution():
    from lsst.meas.extensions.residual.detection.strips import convolve_same
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(9, 9))
    tall = rng.normal(size=(70, 40))
    whole = fftconvolve(tall, kernel, mode="same")
    np.testing.assert_allclose(convolve_same(tall, kernel, strip_rows=16), whole, rtol=0, atol=1e-12)
    # No taller than a strip: one call, the same bits.
    assert np.array_equal(convolve_same(tall, kernel), whole)
    with pytest.raises(ValueError, match="odd sides"):
        convolve_same(tall, np.ones((4, 5)))
