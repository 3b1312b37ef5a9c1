"""Crowded and huge footprints: LSST's limits, their skip flags, and the split into sub-blends."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _tasks_helpers import make_tiny_package
from astropy.table import Table
from lsst.meas.extensions.residual.chain import PatchPlacement
from lsst.meas.extensions.residual.chain.catalogs import deblend_from_catalog, deblend_to_catalog
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.deblending import (
    SKIP_REASONS,
    DeblendConfig,
    deblend,
    deblend_with_new_peaks,
    split_footprint,
)
from lsst.meas.extensions.residual.detection import detect_peaks
from lsst.meas.extensions.residual.geometry import Box
from lsst.meas.extensions.residual.scene import write_scene
from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

FAST = DeblendConfig(show_progress=False)
BANDS = ("g", "r", "i")


def _crowded_scene(seed: int):
    """64² three-band scene ten times as dense as the default: one 7-peak footprint, a pair, singles."""
    return simulate_scene(seed, SimulationConfig(height=64, width=64, bands=BANDS, galaxy_density=600.0))


@pytest.fixture(scope="module")
def crowded():
    scene = _crowded_scene(3)
    detections = detect_peaks(scene)
    return scene, detections, deblend(scene, detections, FAST)


def _footprint_sizes(detections) -> dict[int, tuple[int, int]]:
    """(bounding-box area, peaks) of each footprint."""
    counts = np.bincount(np.asarray(detections.peaks["footprint_id"]))
    return {
        f: ((s[0].stop - s[0].start) * (s[1].stop - s[1].start), int(counts[f]))
        for f, s in detections.footprint_slices().items()
    }


def _largest(detections) -> tuple[int, int, int]:
    """Id, box area and peaks of the footprint with the most peaks."""
    sizes = _footprint_sizes(detections)
    f = max(sizes, key=lambda k: sizes[k][1])
    return f, *sizes[f]


def _rows(catalog: Table, parents) -> Table:
    return catalog[np.isin(np.asarray(catalog["parent_id"]), list(parents))]


# -- the split itself ------------------------------------------------------------


def _two_pairs():
    """Four Gaussian sources in two pairs 32 px apart: one connected footprint with a valley at x ≈ 30."""
    y, x = np.mgrid[0:24, 0:64].astype(float)
    centers = np.array([[12, 10], [12, 18], [12, 42], [12, 50]])
    detect = sum(np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 5.0**2)) for cy, cx in centers)
    return detect, detect > 0.02, centers


def test_split_cuts_at_the_valley_and_covers_every_pixel_and_peak_once():
    detect, footprint, centers = _two_pairs()
    box = Box(100, 200, *detect.shape)  # patch coordinates are not array coordinates
    assert np.all(footprint[12])  # one footprint, joined through the valley
    # The whole footprint is 24 × 64 × 4 peaks; each pair's box about 24 × 30 × 2.
    parts = split_footprint(detect, footprint, box, centers + [100, 200], max_area_times_peaks=2000)
    assert [list(p.peaks) for p in parts] == [[0, 1], [2, 3]]
    cover = np.zeros(footprint.shape, dtype=int)
    for part in parts:
        assert part.box.y0 >= box.y0 and part.box.x0 >= box.x0
        assert part.box.height * part.box.width * len(part.peaks) <= 2000
        cover[part.box.slices(box)] += part.mask
    np.testing.assert_array_equal(cover, footprint.astype(int))  # every pixel once, none twice
    # The cut follows the valley between the pairs (midway: x = 30 in the box).
    left = np.zeros(footprint.shape, dtype=bool)
    left[parts[0].box.slices(box)] = parts[0].mask
    assert np.flatnonzero(left[12]).max() in (29, 30, 31)
    assert np.all(np.nonzero(left)[1] <= 35) and np.all(np.nonzero(footprint & ~left)[1] >= 26)
    # Within the limit, or with none, the footprint stays whole.
    for limit in (0, 24 * 64 * 4):
        (whole,) = split_footprint(detect, footprint, box, centers + [100, 200], max_area_times_peaks=limit)
        assert whole.box == box and np.array_equal(whole.mask, footprint) and len(whole.peaks) == 4
    # Limits on peaks and on box area split it too; a single peak is never split further.
    assert len(split_footprint(detect, footprint, box, centers + [100, 200], 0, max_peaks=2)) == 2
    singles = split_footprint(detect, footprint, box, centers + [100, 200], 0, max_area=10)
    assert sorted(int(p.peaks[0]) for p in singles) == [0, 1, 2, 3]


# -- the limits and their flags --------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "limit_of"),
    [
        ("too_large", lambda area, peaks: {"max_footprint_area": area - 1}),
        ("area_times_peaks", lambda area, peaks: {"max_area_times_peaks": area * peaks - 1}),
        ("too_many_peaks", lambda area, peaks: {"max_number_of_peaks": peaks - 1}),
    ],
)
def test_each_limit_skips_its_footprints_with_its_reason_and_keeps_every_peak(crowded, reason, limit_of):
    scene, detections, reference = crowded
    _, area, peaks = _largest(detections)
    limits = limit_of(area, peaks)
    config = FAST.replace(split_large_footprints=False, **limits)
    value = {
        "too_large": lambda a, n: a,
        "area_times_peaks": lambda a, n: a * n,
        "too_many_peaks": lambda a, n: n,
    }[reason]
    (limit,) = limits.values()
    beyond = {f for f, (a, n) in _footprint_sizes(detections).items() if value(a, n) > limit}
    assert beyond and len(beyond) < len(_footprint_sizes(detections))

    result = deblend(scene, detections, config)
    catalog = result.catalog
    assert sorted(catalog["id"]) == sorted(detections.peaks["id"])  # no peak dropped
    skipped = _rows(catalog, beyond)
    assert np.all(skipped["skipped"]) and np.all(skipped[f"skipped_{reason}"])
    for other in SKIP_REASONS:
        if other != reason:
            assert not np.any(catalog[f"skipped_{other}"])
    assert np.all(np.isnan(skipped["flux"])) and np.all(np.isnan(skipped["conserved_flux"]))
    assert np.all(skipped["n_iter"] == 0) and np.all(skipped["n_components"] == 0)
    # As LSST stores for a skipped parent: no model data.
    assert not beyond & (set(result.model_data.blends) | set(result.model_data.isolated))
    # The footprints within the limits are deblended as before.
    kept = set(_footprint_sizes(detections)) - beyond
    assert not np.any(_rows(catalog, kept)["skipped"])
    np.testing.assert_allclose(
        _rows(catalog, kept)["flux"], _rows(reference.catalog, kept)["flux"], rtol=1e-6
    )


def test_a_footprint_without_usable_pixels_is_skipped_for_no_data(crowded):
    scene, detections, _ = crowded
    f, _, _ = _largest(detections)
    variance = scene.variance.copy()
    variance[:, detections.footprints == f] = 0.0  # non-positive variance: no weight
    result = deblend(dataclasses.replace(scene, variance=variance), detections, FAST)
    rows = _rows(result.catalog, [f])
    assert len(rows) == _footprint_sizes(detections)[f][1]
    assert np.all(rows["skipped_no_data"]) and np.all(rows["skipped"])
    assert not np.any(_rows(result.catalog, set(_footprint_sizes(detections)) - {f})["skipped"])


def test_footprints_within_the_limits_are_one_blend_as_before(crowded):
    scene, detections, reference = crowded
    _, area, peaks = _largest(detections)
    # Limits exactly at the largest footprint: nothing beyond them, so nothing split or skipped.
    config = FAST.replace(
        max_footprint_area=area, max_area_times_peaks=area * peaks, max_number_of_peaks=peaks
    )
    result = deblend(scene, detections, config)
    catalog = result.catalog
    assert not np.any(catalog["skipped"]) and np.all(catalog["n_blend_peaks"] == catalog["n_peaks"])
    assert all(list(blend.children) == [key] for key, blend in result.model_data.blends.items())
    np.testing.assert_array_equal(catalog["flux"], reference.catalog["flux"])
    np.testing.assert_array_equal(result.model, reference.model)


def test_a_footprint_beyond_a_limit_is_split_into_sub_blends_that_deblend_every_peak(crowded):
    scene, detections, reference = crowded
    f, area, peaks = _largest(detections)
    config = FAST.replace(max_number_of_peaks=peaks - 1)  # split_large_footprints is the default
    result = deblend(scene, detections, config)
    catalog = result.catalog
    assert not np.any(catalog["skipped"])
    rows = _rows(catalog, [f])
    assert np.all(rows["n_blend_peaks"] < peaks) and np.all(rows["n_peaks"] == peaks)
    assert np.all(np.isfinite(rows["flux"])) and np.all(rows["converged"])
    children = result.model_data.blends[f].children
    assert len(children) >= 2
    peak_ids = [k for child in children.values() for k in child.sources]
    assert sorted(peak_ids) == sorted(rows["id"])  # every peak in exactly one sub-blend
    footprint_box = Box(*np.argwhere(detections.footprints == f).min(axis=0), 0, 0)
    for child in children.values():
        assert child.origin[0] >= footprint_box.y0 and child.origin[1] >= footprint_box.x0
    # The sub-blends share the footprint's pixels without counting any twice: their conserved
    # fluxes add up to no more than the footprint's image (and to about what one blend gives).
    image = np.where(scene.good, scene.image, 0.0)[:, detections.footprints == f].sum(axis=1)
    conserved = rows["conserved_flux"].sum(axis=0)
    assert np.all(conserved <= image * (1 + 1e-5))
    np.testing.assert_allclose(
        conserved, _rows(reference.catalog, [f])["conserved_flux"].sum(axis=0), rtol=0.02
    )
    # The other footprints are untouched.
    others = set(_footprint_sizes(detections)) - {f}
    np.testing.assert_allclose(
        _rows(catalog, others)["flux"], _rows(reference.catalog, others)["flux"], rtol=1e-6
    )
    # The second pass re-fits a split footprint that gained peaks, again in sub-blends.
    new_xy = np.array([[rows["x"][0] + 2.0, rows["y"][0] + 1.0]])
    second = deblend_with_new_peaks(scene, result.detections, catalog, result.model_data, new_xy, config)
    assert len(second.catalog) == len(catalog) + 1 and not np.any(second.catalog["skipped"])
    assert np.all(_rows(second.catalog, [f])["n_blend_peaks"] < peaks + 1)


# -- the output schema and the summary -----------------------------------------


def test_flags_round_trip_through_the_output_catalog(crowded):
    scene, detections, _ = crowded
    _, _, peaks = _largest(detections)
    result = deblend(
        scene, detections, FAST.replace(max_number_of_peaks=peaks - 1, split_large_footprints=False)
    )
    assert np.any(result.catalog["skipped_too_many_peaks"])
    placement = PatchPlacement()
    table = deblend_to_catalog(result.catalog, scene.bands, placement, placement.id_map())
    for name in ("skipped", *(f"skipped_{r}" for r in SKIP_REASONS), "n_blend_peaks"):
        assert name in table.colnames
    back = deblend_from_catalog(table, scene.bands, placement, placement.id_map(table["id"], table["parent"]))
    for name in ("skipped", *(f"skipped_{r}" for r in SKIP_REASONS), "n_blend_peaks", "n_peaks"):
        np.testing.assert_array_equal(back[name], result.catalog[name])


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits_run")
    write_scene(_crowded_scene(3), tmp / "scene.fits")
    return tmp, make_tiny_package(tmp / "tiny.zip", bands=BANDS)


@pytest.mark.parametrize("split", [False, True])
def test_run_counts_skipped_and_split_footprints_in_its_summary(run_files, split):
    tmp, package = run_files
    out = tmp / f"out_{split}"
    limit = ["--max-number-of-peaks", "2"] + ([] if split else ["--no-split-large-footprints"])
    argv = ["run", str(tmp / "scene.fits"), "--out", str(out), "--model", str(package), "--no-plot", *limit]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    catalog = Table.read(out / "catalog.fits")
    crowded_parents = set(np.unique(catalog["parent"][catalog["n_peaks"] > 2]))
    assert crowded_parents
    if split:
        assert summary["skipped_sources"] == 0 and not np.any(catalog["skipped"])
        assert summary["split_footprints"] == len(crowded_parents)
        assert np.all(catalog["n_blend_peaks"] <= 2)
    else:
        flagged = catalog[catalog["skipped_too_many_peaks"]]
        assert set(np.unique(flagged["parent"])) == crowded_parents
        assert summary["skipped_sources"] == len(flagged) == int(np.sum(catalog["n_peaks"] > 2))
        assert summary["split_footprints"] == 0
    assert summary["skipped_footprints"] == {
        reason: (0 if split or reason != "too_many_peaks" else len(crowded_parents))
        for reason in SKIP_REASONS
    }
