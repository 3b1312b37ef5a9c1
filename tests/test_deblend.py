"""The deblender: fits, outputs, bad input, withheld sources, the second pass, files."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.deblending import (
    DeblendConfig,
    ScarletModelDataError,
    deblend,
    deblend_with_new_peaks,
    detections_from_positions,
    read_deblend_result,
    read_scarlet_model,
    render_model_data,
)
from lsst.meas.extensions.residual.detection import Detections, detect_peaks, detection_image
from lsst.meas.extensions.residual.scene import Scene, SceneFormatError

FAST = DeblendConfig(show_progress=False)


@pytest.fixture(scope="module")
def truth_result(small_scene):
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    return deblend(small_scene, detections, FAST)


def _residual_significance(scene: Scene, residual: np.ndarray) -> np.ndarray:
    """The detection step's multi-band S/N image of the residual."""
    residual_scene = Scene(residual, scene.variance, scene.psf, scene.bands, mask=scene.mask)
    return detection_image(residual_scene)[0]


def _snr(scene: Scene) -> np.ndarray:
    """Optimal multi-band S/N of each true source."""
    truth = scene.truth
    values = []
    for index in range(len(truth)):
        stamp, (sy, sx) = truth.isolated_image(index, scene.shape)
        values.append(np.sqrt(np.sum(stamp**2 / scene.variance[:, sy, sx])))
    return np.array(values)


def test_catalog_model_and_residual_are_complete_and_consistent(small_scene, truth_result):
    result = truth_result
    catalog = result.catalog
    nbands = small_scene.nbands
    assert len(catalog) == len(small_scene.truth)
    assert catalog["id"].dtype == np.int64
    assert (
        catalog["flux"].shape == (len(catalog), nbands)
        and catalog["conserved_flux"].shape == catalog["flux"].shape
    )
    for column in (
        "parent_id",
        "peak_id",
        "x",
        "y",
        "chi2",
        "reduced_chi2",
        "blend_reduced_chi2",
        "converged",
        "n_iter",
        "n_components",
        "n_peaks",
        "isolated",
        "skipped",
        "zero_flux",
        "found_by",
    ):
        assert column in catalog.colnames
    assert set(catalog["found_by"]) == {"first_pass"}
    assert np.all(catalog["n_components"] >= 1) and np.all(catalog["n_iter"] >= FAST.min_iter)
    assert np.all(catalog["isolated"] == (catalog["n_peaks"] == 1))
    assert result.model.shape == result.residual.shape == small_scene.image.shape
    assert result.model.dtype == result.residual.dtype == np.float32
    assert np.all(np.isfinite(result.model)) and np.all(np.isfinite(result.residual))
    assert result.model.min() >= 0
    np.testing.assert_allclose(result.residual, small_scene.image - result.model, atol=1e-4)
    # The model of the patch is what the model data alone renders.
    np.testing.assert_allclose(
        render_model_data(result.model_data, small_scene.shape), result.model, atol=1e-6
    )
    # Every fitted source is in the model data under its blend, with its peak id.
    sources = {k: s for blend in result.model_data.blends.values() for k, s in blend.sources.items()}
    assert set(sources) == set(int(i) for i in catalog["id"])
    assert all(sources[int(i)].metadata["peak_id"] == int(i) for i in catalog["id"])


def test_fit_is_good_on_a_simulated_scene(truth_result):
    catalog = truth_result.catalog
    assert np.median(catalog["blend_reduced_chi2"]) < 1.3
    assert np.median(catalog["reduced_chi2"]) < 1.3


def _galaxy(shape, x0, y0, sigma_major, sigma_minor, angle, sigma_psf):
    """Unit-flux elliptical Gaussian convolved with a circular Gaussian PSF."""
    y, x = np.indices(shape, dtype=float)
    cos, sin = np.cos(angle), np.sin(angle)
    a2, b2 = sigma_major**2 + sigma_psf**2, sigma_minor**2 + sigma_psf**2
    u = (x - x0) * cos + (y - y0) * sin
    v = -(x - x0) * sin + (y - y0) * cos
    image = np.exp(-0.5 * (u**2 / a2 + v**2 / b2))
    return image / image.sum()


@pytest.fixture(scope="module")
def two_galaxy_scene():
    """An isolated galaxy and a blended pair, three bands, known fluxes, S/N of a few hundred."""
    shape, sigma_psf, noise = (80, 96), 1.7, 1.0
    sources = [  # x, y, σ_major, σ_minor, angle, fluxes
        (22.0, 40.0, 3.0, 2.0, 0.5, np.array([3000.0, 5000.0, 6000.0])),
        (62.0, 38.0, 2.5, 1.5, -0.3, np.array([4000.0, 3000.0, 2000.0])),
        (70.0, 44.0, 2.0, 2.0, 0.0, np.array([1500.0, 2500.0, 3500.0])),
    ]
    truth = np.stack(
        [f[:, None, None] * _galaxy(shape, x, y, a, b, t, sigma_psf)[None] for x, y, a, b, t, f in sources]
    )
    rng = np.random.default_rng(4)
    image = truth.sum(axis=0) + rng.normal(0.0, noise, size=truth.shape[1:])
    half = 12
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    psf = np.exp(-(xx**2 + yy**2) / (2 * sigma_psf**2))
    psf = np.repeat((psf / psf.sum())[None], 3, axis=0)
    scene = Scene(image, np.full(image.shape, noise**2), psf, ("g", "r", "i"))
    return scene, np.array([s[:2] for s in sources]), np.array([s[5] for s in sources])


def test_fluxes_of_an_isolated_galaxy_and_a_blended_pair(two_galaxy_scene):
    scene, xy, fluxes = two_galaxy_scene
    detections = detections_from_positions(scene, xy)
    assert (
        detections.peaks["footprint_id"][1]
        == detections.peaks["footprint_id"][2]
        != detections.peaks["footprint_id"][0]
    )
    result = deblend(scene, detections, FAST)
    catalog = result.catalog
    rows = [catalog[catalog["peak_id"] == i][0] for i in (1, 2, 3)]
    assert rows[0]["isolated"] and rows[0]["n_components"] == 2  # bright: bulge + disk
    np.testing.assert_allclose(rows[0]["conserved_flux"], fluxes[0], rtol=0.03)
    np.testing.assert_allclose(rows[0]["flux"], fluxes[0], rtol=0.05)
    for row, flux in zip(rows[1:], fluxes[1:], strict=True):
        np.testing.assert_allclose(row["conserved_flux"], flux, rtol=0.10)
        # The colours tell the two apart: each source keeps its own spectrum shape.
        np.testing.assert_allclose(row["flux"] / row["flux"].sum(), flux / flux.sum(), atol=0.05)
    assert rows[1]["blend_reduced_chi2"] < 1.3 and rows[0]["blend_reduced_chi2"] < 1.3


def test_the_fit_improves_on_the_initialisation(small_scene):
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    initial = deblend(small_scene, detections, DeblendConfig(show_progress=False, max_iter=0))
    fitted = deblend(small_scene, detections, FAST)
    chi2_initial = np.sum(initial.normalized_residual(small_scene) ** 2)
    chi2_fitted = np.sum(fitted.normalized_residual(small_scene) ** 2)
    assert chi2_fitted < chi2_initial


def test_withheld_sources_stand_out_in_the_residual_and_the_second_pass_takes_them(small_scene, truth_result):
    snr = _snr(small_scene)
    xy = small_scene.truth.xy
    withheld = np.argsort(-snr)[[1, 3]]  # two bright sources, not the very brightest
    kept = np.setdiff1d(np.arange(len(xy)), withheld)
    detections = detections_from_positions(small_scene, xy[kept])
    first = deblend(small_scene, detections, FAST)
    significance = _residual_significance(small_scene, first.residual)
    complete = _residual_significance(small_scene, truth_result.residual)
    for index in withheld:
        x, y = np.floor(xy[index] + 0.5).astype(int)
        window = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
        assert significance[window].max() > 10, (
            f"withheld source {index} (S/N {snr[index]:.0f}) is not in the residual"
        )
        assert complete[window].max() < 0.5 * significance[window].max()

    second = deblend_with_new_peaks(
        small_scene, first.detections, first.catalog, first.model_data, xy[withheld], first.config
    )
    catalog = second.catalog
    assert len(catalog) == len(xy)
    new_rows = catalog[catalog["found_by"] == "residual"]
    assert len(new_rows) == 2
    np.testing.assert_allclose(np.sort(new_rows["x"]), np.sort(xy[withheld, 0]))
    after = _residual_significance(small_scene, second.residual)
    for index in withheld:
        x, y = np.floor(xy[index] + 0.5).astype(int)
        window = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
        assert after[window].max() < 0.5 * significance[window].max()

    # Blends that gained no peak are untouched: same model data, same catalog rows.
    touched = set(int(p) for p in new_rows["parent_id"])
    untouched = set(first.model_data.blends) - touched
    assert untouched
    for blend_id in untouched:
        assert second.model_data.blends[blend_id] is first.model_data.blends[blend_id]
        before = first.catalog[first.catalog["parent_id"] == blend_id]
        now = second.catalog[second.catalog["parent_id"] == blend_id]
        for column in before.colnames:
            np.testing.assert_array_equal(np.asarray(now[column]), np.asarray(before[column]))
        np.testing.assert_array_equal(
            render_model_data(second.model_data, small_scene.shape, blend_ids=[blend_id]),
            render_model_data(first.model_data, small_scene.shape, blend_ids=[blend_id]),
        )
    # Refitted blends keep their first-pass sources, flagged as such.
    for blend_id in touched & set(first.model_data.blends):
        old_ids = set(int(i) for i in first.catalog["id"][first.catalog["parent_id"] == blend_id])
        rows = catalog[np.isin(catalog["id"], list(old_ids))]
        assert set(rows["found_by"]) == {"first_pass"}


def test_new_peak_outside_every_footprint_gets_its_own_footprint(small_scene, truth_result):
    footprints = truth_result.detections.footprints
    ys, xs = np.nonzero(footprints == 0)
    far = np.argmax(np.minimum(np.minimum(ys, 95 - ys), np.minimum(xs, 95 - xs)))
    position = np.array([[xs[far], ys[far]]], dtype=float)
    second = deblend_with_new_peaks(
        small_scene,
        truth_result.detections,
        truth_result.catalog,
        truth_result.model_data,
        position,
        truth_result.config,
    )
    row = second.catalog[second.catalog["found_by"] == "residual"][0]
    assert row["parent_id"] > footprints.max()
    assert row["n_peaks"] == 1
    assert second.detections.footprints[ys[far], xs[far]] == row["parent_id"]


def test_nan_pixels_are_masked_not_propagated(small_scene):
    image = small_scene.image.copy()
    variance = small_scene.variance.copy()
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    # Put bad pixels inside a footprint: NaN image, infinite and zero variance, and a mask bit.
    ys, xs = np.nonzero(detections.footprints > 0)
    picks = np.random.default_rng(0).choice(len(ys), size=12, replace=False)
    image[0, ys[picks[:4]], xs[picks[:4]]] = np.nan
    variance[1, ys[picks[4:8]], xs[picks[4:8]]] = np.inf
    variance[2, ys[picks[8:]], xs[picks[8:]]] = 0.0
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[3, ys[picks[0]], xs[picks[0]]] = 1
    bad = Scene(image, variance, small_scene.psf, small_scene.bands, mask=mask)
    result = deblend(bad, detections, FAST)
    for cube in (result.model, result.residual):
        assert np.all(np.isfinite(cube))
    assert np.all(result.residual[~bad.good] == 0)
    assert np.all(np.isfinite(result.normalized_residual(bad)))
    assert np.all(np.isfinite(result.catalog["flux"])) and np.all(
        np.isfinite(result.catalog["conserved_flux"])
    )
    # A few bad pixels barely change the answer.
    clean = deblend(small_scene, detections, FAST)
    np.testing.assert_allclose(
        result.catalog["conserved_flux"].sum(), clean.catalog["conserved_flux"].sum(), rtol=0.05
    )


def test_the_detection_steps_significance_image_is_reused(small_scene):
    # Detections made here carry the S/N image, which the deblender uses instead of making it again;
    # detections without it (read from disk) give the same result, the image being made from the scene.
    detections = detect_peaks(small_scene)
    assert detections.significance is not None
    without = Detections(detections.peaks, detections.footprints, detections.bands)
    kept, made = deblend(small_scene, detections, FAST), deblend(small_scene, without, FAST)
    np.testing.assert_array_equal(kept.catalog["flux"], made.catalog["flux"])
    # It is used: another image changes which sources get two components; a wrong shape is refused.
    flat = Detections(
        detections.peaks, detections.footprints, detections.bands, np.full(small_scene.shape, 1e6)
    )
    assert not np.array_equal(deblend(small_scene, flat, FAST).catalog["flux"], made.catalog["flux"])
    wrong = Detections(detections.peaks, detections.footprints, detections.bands, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="S/N image has shape"):
        deblend(small_scene, wrong, FAST)


def test_blends_are_fitted_with_blas_on_one_thread_and_the_limit_is_lifted_after(small_scene, monkeypatch):
    import importlib

    from threadpoolctl import threadpool_info, threadpool_limits

    module = importlib.import_module("lsst.meas.extensions.residual.deblending.deblend")
    seen = []
    original = module._deblend_footprint

    def recording(*args, **kwargs):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "_deblend_footprint", recording)
    with threadpool_limits(limits=2, user_api="blas"):  # what the caller had: two threads
        before = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        deblend(small_scene, detect_peaks(small_scene), FAST)
        after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    assert seen and all(threads == {1} for threads in seen)
    assert after == before


def test_bad_input_is_reported(small_scene):
    detections = detect_peaks(small_scene)
    with pytest.raises(ValueError, match="outside the 96x96 image"):
        detections_from_positions(small_scene, np.array([[10.0, 10.0], [120.0, 5.0]]))
    with pytest.raises(ValueError, match="outside"):
        detections_from_positions(small_scene, np.array([[np.nan, 3.0]]))
    moved = detections.peaks.copy()
    moved["x"][0] = -7.0
    with pytest.raises(ValueError, match="outside the 96x96 image"):
        deblend(small_scene, Detections(moved, detections.footprints, detections.bands), FAST)
    wrong_fp = detections.peaks.copy()
    wrong_fp["footprint_id"][0] = wrong_fp["footprint_id"][0] + 1000
    with pytest.raises(ValueError, match="do not lie in their footprint"):
        deblend(small_scene, Detections(wrong_fp, detections.footprints, detections.bands), FAST)
    with pytest.raises(ValueError, match="bands"):
        deblend(small_scene, Detections(detections.peaks, detections.footprints, ("g", "r", "i")), FAST)
    with pytest.raises(ValueError, match="shape"):
        deblend(small_scene, Detections(detections.peaks, detections.footprints[:50], detections.bands), FAST)
    with pytest.raises(SceneFormatError, match="PSF has 5 planes"):
        Scene(small_scene.image, small_scene.variance, small_scene.psf[:5], small_scene.bands)
    with pytest.raises(ValueError, match="isolated"):
        DeblendConfig(isolated="skip")
    first = deblend(small_scene, detections, FAST)
    with pytest.raises(ValueError, match="outside"):
        deblend_with_new_peaks(
            small_scene,
            first.detections,
            first.catalog,
            first.model_data,
            np.array([[3.0, 200.0]]),
            first.config,
        )
    # Model data whose PSFs do not match its spectra cannot be rendered.
    first.model_data.metadata["psf"] = first.model_data.metadata["psf"][:4]
    with pytest.raises(ScarletModelDataError, match="4 bands"):
        render_model_data(first.model_data, small_scene.shape)


def test_too_many_peaks_are_flagged_and_not_modelled(small_scene):
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    counts = np.bincount(detections.peaks["footprint_id"])
    assert counts.max() >= 2
    # As in meas_extensions_scarlet, a blend beyond max_number_of_peaks is skipped whole
    # (tests/test_footprint_limits.py covers the other limits and the split into sub-blends).
    config = DeblendConfig(show_progress=False, max_number_of_peaks=1, split_large_footprints=False)
    result = deblend(small_scene, detections, config)
    skipped = result.catalog[result.catalog["skipped"]]
    assert len(skipped) == int(np.sum(counts[counts >= 2]))
    assert np.all(skipped["skipped_too_many_peaks"]) and np.all(np.isnan(skipped["flux"]))
    modelled = {k for blend in result.model_data.blends.values() for k in blend.sources}
    assert not modelled & set(int(i) for i in skipped["id"])


def test_isolated_footprints_the_cheap_way(small_scene):
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    result = deblend(small_scene, detections, DeblendConfig(show_progress=False, isolated="footprint"))
    single = result.catalog[result.catalog["isolated"]]
    assert len(single) > 0
    assert set(int(p) for p in single["parent_id"]) == set(result.model_data.isolated)
    sigma = np.sqrt(small_scene.variance)
    for row in single:
        footprint = detections.footprints == row["parent_id"]
        alone = render_model_data(
            result.model_data, small_scene.shape, image=small_scene.image, blend_ids=[int(row["parent_id"])]
        )
        np.testing.assert_allclose(alone[:, footprint], small_scene.image[:, footprint], rtol=1e-6)
        assert np.all(alone[:, ~footprint] == 0)
        # Only the far wings of neighbouring blends remain in the residual there.
        assert np.all(np.abs(result.residual[:, footprint]) < 0.1 * sigma[:, footprint])
        np.testing.assert_allclose(row["flux"], small_scene.image[:, footprint].sum(axis=1), rtol=1e-4)
        assert row["n_components"] == 0 and row["reduced_chi2"] < 1e-3


def test_a_released_model_is_rendered_again_identically(small_scene):
    import dataclasses

    # Isolated footprints (the image inside them) and blends both come back bit for bit.
    detections = detections_from_positions(small_scene, small_scene.truth.xy)
    result = deblend(small_scene, detections, DeblendConfig(show_progress=False, isolated="footprint"))
    assert result.model_data.isolated and result.model_data.blends
    kept = result.model.copy()
    result.release_model()
    assert result._model is None
    np.testing.assert_array_equal(result.model, kept)
    assert result.model is result.model  # rendered once, then kept
    with pytest.raises(ValueError, match="without its scene"):
        dataclasses.replace(result, scene=None).release_model()


def test_result_files_round_trip(small_scene, truth_result, tmp_path):
    paths = truth_result.write(tmp_path / "out")
    assert {p.name for p in paths.values()} <= {p.name for p in (tmp_path / "out").iterdir()}
    with pytest.raises(FileExistsError):
        truth_result.write(tmp_path / "out")
    again = read_deblend_result(tmp_path / "out")
    np.testing.assert_array_equal(again.model, truth_result.model)
    np.testing.assert_array_equal(again.residual, truth_result.residual)
    assert again.bands == truth_result.bands
    for column in truth_result.catalog.colnames:
        np.testing.assert_array_equal(
            np.asarray(again.catalog[column]), np.asarray(truth_result.catalog[column])
        )
    model_data = read_scarlet_model(paths["model_data"])
    np.testing.assert_allclose(
        render_model_data(model_data, small_scene.shape), truth_result.model, atol=1e-6
    )
    # A read-back result is a valid first pass for the second one.
    second = deblend_with_new_peaks(
        small_scene,
        again.detections,
        again.catalog,
        again.model_data,
        small_scene.truth.xy[:1] + 0.3,
        again.config,
    )
    assert (second.catalog["found_by"] == "residual").sum() == 1


def test_no_peaks_gives_an_empty_catalog_and_the_image_as_residual(small_scene):
    detections = detections_from_positions(small_scene, np.zeros((0, 2)))
    result = deblend(small_scene, detections, FAST)
    assert len(result.catalog) == 0 and "conserved_flux" in result.catalog.colnames
    assert np.all(result.model == 0)
    np.testing.assert_array_equal(result.residual, small_scene.clean_image())
    second = deblend_with_new_peaks(
        small_scene,
        result.detections,
        result.catalog,
        result.model_data,
        np.array([[40.0, 41.0]]),
        result.config,
    )
    assert list(second.catalog["found_by"]) == ["residual"]


def test_the_result_keeps_one_cube_and_computes_its_residual_when_asked(small_scene, truth_result):
    import dataclasses

    # A patch's deblend keeps its model only: the residual is made from the scene when read, and
    # is the same each time (image − model, zero at bad pixels).
    assert truth_result.scene is small_scene
    first, again = truth_result.residual, truth_result.residual
    assert first is not again
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(
        first, np.where(small_scene.good, small_scene.image - truth_result.model, 0)
    )
    # A residual given is kept as given; without one and without the scene there is nothing to compute.
    given = dataclasses.replace(truth_result, residual=np.zeros_like(first), scene=None)
    assert np.all(given.residual == 0)
    with pytest.raises(ValueError, match="neither a residual"):
        _ = dataclasses.replace(truth_result, scene=None, residual=None).residual
