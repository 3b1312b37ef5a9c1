"""Masked pixels never make sources or fluxes (issue 10, part 3).

The cases are those a new user met: half the scene masked, a box of zero or
negative variance, a saturated bright star, and a source mostly masked in one
band. In each, no peak or new source sits on a pixel without data, no flux
runs away into the masked pixels (none above twice the brightest true flux),
and the catalog says what the data could not see (``masked_fraction``,
``mostly_masked``, ``near_bright_star``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.table import Table
from lsst.meas.extensions.residual.chain.first_pass import run_first_pass
from lsst.meas.extensions.residual.chain.new_sources import find_new_sources
from lsst.meas.extensions.residual.chain.plots import flagged_rows
from lsst.meas.extensions.residual.deblending import DeblendConfig
from lsst.meas.extensions.residual.detection import bright_star_zones, peak_support
from lsst.meas.extensions.residual.geometry import Footprint
from lsst.meas.extensions.residual.masks import DEFAULT_MASK_PLANES, plane_bits
from lsst.meas.extensions.residual.network import InferenceConfig, SourceDetections
from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

FAST = DeblendConfig(show_progress=False, max_iter=40)
SAT = plane_bits(DEFAULT_MASK_PLANES, ["SAT"])
INTRP = plane_bits(DEFAULT_MASK_PLANES, ["INTRP"])
DETECTED = plane_bits(DEFAULT_MASK_PLANES, ["DETECTED"])


@pytest.fixture(scope="module")
def scene():
    return simulate_scene(1, SimulationConfig(height=128, width=128))


def _with_data(scene) -> np.ndarray:
    return scene.good.any(axis=0)


def _assert_no_source_without_data_or_runaway_flux(scene, first):
    peaks = first.detections.peaks
    with_data = _with_data(scene)
    assert np.all(with_data[np.asarray(peaks["y"], int), np.asarray(peaks["x"], int)])
    brightest = np.asarray(scene.truth.table["flux"]).max(axis=0)
    catalog = first.deblend.catalog
    for column in ("flux", "conserved_flux"):
        assert np.all(np.nan_to_num(np.asarray(catalog[column])) <= 2 * brightest), column


def test_half_masked_scene(scene):
    mask = np.zeros(scene.image.shape, np.int32)
    mask[:, :, :64] = 1
    masked = dataclasses.replace(scene, mask=mask)
    first = run_first_pass(masked, deblend_config=FAST)
    _assert_no_source_without_data_or_runaway_flux(masked, first)
    assert len(first.detections.peaks) > 0
    catalog = first.deblend.catalog
    # Sources near the edge of the mask say how much of them it hides; a source mostly hidden
    # has NaN fluxes in those bands, never an extrapolation.
    fraction = np.asarray(catalog["masked_fraction"])
    assert np.nanmax(fraction) > 0.0
    mostly = np.asarray(catalog["mostly_masked"])
    assert np.array_equal(mostly, np.nan_to_num(fraction) > FAST.max_masked_fraction)
    assert np.all(np.isnan(np.asarray(catalog["flux"])[mostly]))
    assert np.all(np.isfinite(np.asarray(catalog["flux"])[~mostly & np.isfinite(fraction)]))


@pytest.mark.parametrize("value", [0.0, -1.0], ids=["zero", "negative"])
def test_box_of_bad_variance(scene, value):
    variance = scene.variance.copy()
    variance[:, 40:70, 40:70] = value
    bad = dataclasses.replace(scene, variance=variance)
    first = run_first_pass(bad, deblend_config=FAST)
    _assert_no_source_without_data_or_runaway_flux(bad, first)
    peaks = first.detections.peaks
    inside = (peaks["x"] >= 40) & (peaks["x"] < 70) & (peaks["y"] >= 40) & (peaks["y"] < 70)
    assert not np.any(inside)


def test_peak_support_counts_the_usable_share_of_the_matched_filter(scene):
    mask = np.zeros(scene.image.shape, np.int32)
    mask[:, :, :64] = 1
    masked = dataclasses.replace(scene, mask=mask)
    support = peak_support(masked, np.array([64, 64, 64]), np.array([30, 64, 100]))
    assert support[0] == 0.0  # deep inside the mask
    assert 0.3 < support[1] < 0.7  # on its edge: about half the PSF
    assert support[2] == pytest.approx(1.0)
    assert peak_support(scene, np.array([64]), np.array([10]))[0] == pytest.approx(1.0)


def test_a_source_mostly_masked_in_one_band_has_nan_flux_there_only(scene):
    first = run_first_pass(scene, deblend_config=FAST)
    catalog = first.deblend.catalog
    brightest = int(np.argmax(np.asarray(catalog["flux"])[:, 3]))
    x, y = int(catalog["x"][brightest]), int(catalog["y"][brightest])
    mask = np.zeros(scene.image.shape, np.int32)
    mask[1, max(y - 12, 0) : y + 13, max(x - 12, 0) : x + 13] = 1  # g band only
    masked = dataclasses.replace(scene, mask=mask)
    result = run_first_pass(masked, deblend_config=FAST).deblend.catalog
    row = np.flatnonzero(np.hypot(result["x"] - x, result["y"] - y) <= 1.5)
    assert len(row) == 1, "the source, seen in five bands, keeps its peak"
    row = row[0]
    assert result["mostly_masked"][row, 1] and np.isnan(result["flux"][row, 1])
    assert result["masked_fraction"][row, 1] > 0.9
    others = [b for b in range(scene.nbands) if b != 1]
    assert not np.any(result["mostly_masked"][row, others])
    assert np.all(np.isfinite(result["flux"][row, others]))
    assert np.allclose(result["masked_fraction"][row, others], 0.0)


def _saturated_star_scene(scene, x, y, flux, level):
    """``scene`` with a bright PSF star at (x, y), clipped at ``level`` with a bleed column, SAT+INTRP."""
    image = scene.image.astype(np.float64).copy()
    half = scene.psf.shape[-1] // 2
    image[:, y - half : y + half + 1, x - half : x + half + 1] += flux * scene.psf
    saturated = image > level
    saturated[:, y - 12 : y + 13, x] = True  # the bleed trail runs along the column
    image[saturated] = level
    mask = np.where(saturated, SAT | INTRP, 0).astype(np.int32)
    mask[:, 100:110, 100:110] |= DETECTED  # a plane that is not bad changes nothing
    return dataclasses.replace(
        scene, image=image, mask=mask, mask_planes=dict(DEFAULT_MASK_PLANES), truth=scene.truth
    )


def test_saturated_star_makes_no_peak_and_flags_its_neighbours(scene):
    star = _saturated_star_scene(scene, x=40, y=64, flux=1.5e5, level=4e3)
    saturated = star.plane("SAT").any(axis=0)
    assert saturated.sum() > 20
    first = run_first_pass(star, deblend_config=FAST)
    peaks = first.detections.peaks
    py, px = np.asarray(peaks["y"], int), np.asarray(peaks["x"], int)
    assert not np.any(saturated[py, px])
    zones = bright_star_zones(star, FAST.bright_star_zone_factor, FAST.bright_star_zone_min_radius)
    assert zones[64, 40] and not zones[5, 120]
    catalog = first.deblend.catalog
    near = np.asarray(catalog["near_bright_star"])
    expected = zones[np.asarray(catalog["y"], int), np.asarray(catalog["x"], int)]
    assert np.array_equal(near, expected) and near.any() and not near.all()
    # DETECTED pixels are not bad pixels.
    assert star.good[:, 100:110, 100:110].all()
    # The figures mark the flagged sources, read from the deblender's catalog or an output catalog.
    flagged = flagged_rows(catalog, star.bands)
    assert np.array_equal(flagged, near | np.asarray(catalog["mostly_masked"]).any(axis=1))
    output = Table({"near_bright_star": near})
    for index, band in enumerate(star.bands):
        output[f"{band}_mostly_masked"] = np.asarray(catalog["mostly_masked"])[:, index]
    assert np.array_equal(flagged_rows(output, star.bands), flagged)


class _FakeDetector:
    """Returns one detection at each given position (no network)."""

    def __init__(self, positions, bands):
        self.positions = positions
        self.bands = bands

    def find(self, image, variance, bands, model, mask, *, pixel_scale=None, inference=None, progress=False):
        table = Table()
        n = len(self.positions)
        table["id"] = np.arange(1, n + 1)
        table["x"] = [float(x) for x, _ in self.positions]
        table["y"] = [float(y) for _, y in self.positions]
        table["class"] = ["galaxy"] * n
        table["class_id"] = np.full(n, 2, dtype=np.int32)
        table["score"] = np.full(n, 0.9, dtype=np.float32)
        for column in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
            table[column] = np.zeros(n, dtype=np.float32)
        table["area"] = np.ones(n, dtype=np.int32)
        table["tile"] = np.zeros(n, dtype=np.int32)
        table["truncated"] = np.zeros(n, dtype=bool)
        footprints = [Footprint(int(y), int(x), np.ones((1, 1), bool)) for x, y in self.positions]
        return SourceDetections(table, footprints, image.shape[1:], {"BANDS": ",".join(bands)})


def test_network_detections_on_pixels_without_data_are_not_new_sources(scene):
    mask = np.zeros(scene.image.shape, np.int32)
    mask[:, :, :64] = 1
    mask[:3, :, 64:] = 1  # u, g, r masked: the right half still has data in i, z, y
    masked = dataclasses.replace(scene, mask=mask)
    detector = _FakeDetector([(20.5, 30.0), (100.0, 30.0)], scene.bands)
    new = find_new_sources(
        masked,
        np.zeros(scene.image.shape, np.float32),
        np.zeros(scene.shape, np.int64),
        np.zeros((0, 2)),
        1000,
        detector,
        InferenceConfig(),
    )
    assert new.n_masked == 1 and len(new) == 1
    assert new.xy[0, 0] == 100.0


def test_the_network_is_given_the_bad_pixels_not_every_mask_plane(scene):
    from lsst.meas.extensions.residual.network.inference import find_sources_in_scene

    class _Recorder(_FakeDetector):
        def find(self, image, variance, bands, model, mask, **kwargs):
            self.mask = mask
            return super().find(image, variance, bands, model, mask, **kwargs)

    mask = np.full(scene.image.shape, DETECTED | INTRP, np.int32)  # neither makes a pixel bad
    mask[:, :10, :] |= SAT
    planes = dataclasses.replace(scene, mask=mask, mask_planes=dict(DEFAULT_MASK_PLANES))
    detector = _Recorder([], scene.bands)
    find_sources_in_scene(detector, planes, np.zeros(scene.image.shape, np.float32))
    assert (
        np.array_equal(detector.mask != 0, planes.bad_mask()) and (detector.mask != 0).sum() == 6 * 10 * 128
    )
