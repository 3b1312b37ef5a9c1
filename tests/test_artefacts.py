"""Simulated coadd artefacts: their pixels, masks and truth, the MASK-plane round trip, correlated noise."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from astropy.io import fits
from lsst.meas.extensions.residual.artefact_truth import ARTEFACT_COLUMNS, ARTEFACT_TYPES
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.configs import make_config, validate_config
from lsst.meas.extensions.residual.errors import ConfigError
from lsst.meas.extensions.residual.masks import DEFAULT_MASK_PLANES
from lsst.meas.extensions.residual.scene import (
    SceneFormatError,
    read_scene,
    write_scene,
)
from lsst.meas.extensions.residual.simulation import (
    ArtefactConfig,
    NoiseKernelConfig,
    SimulationConfig,
    simulate_scene,
)
from scipy import ndimage

#: sha256 of image + variance of simulate_scene(5, SimulationConfig(height=64, width=64)), computed
#: before the artefacts existed: a scene without artefacts must not change.
CLEAN_SCENE_SHA256 = "8f4af32d45e55397bbcb7f0ed2c13890ff821a4af92e36adcb7c12d7fa9f3399"

#: Every kind of artefact, many of each, on a small scene (seed 3 shows all eight types, masked and
#: unmasked trails and cosmic rays, and a saturated star outside the no-data strip).
DENSE = ArtefactConfig(
    min_bright_stars=1,
    bright_star_density=0.0,
    bright_star_mag_range=(14.5, 15.0),
    bright_trail_rate=16.0,
    faint_trail_rate=16.0,
    coverage_edge_probability=1.0,
    chip_gap_rate=6.0,
    cosmic_ray_rate=200.0,
)
DENSE_SEED = 3
SIZE = 128


@pytest.fixture(scope="module")
def dense_scene():
    return simulate_scene(DENSE_SEED, SimulationConfig(height=SIZE, width=SIZE, artefacts=DENSE))


@pytest.fixture(scope="module")
def clean_twin():
    """The dense scene's seed without artefacts."""
    return simulate_scene(DENSE_SEED, SimulationConfig(height=SIZE, width=SIZE))


def _rows(scene, kind):
    return [row for row in scene.artefacts if row["type"] == kind]


def _pixels(scene, row) -> np.ndarray:
    """(H, W) bool: the row's footprint in the scene."""
    pixels = np.zeros(scene.shape, dtype=bool)
    footprint = row["footprint"]
    sy, sx = footprint.slices
    pixels[sy, sx] = footprint.mask
    return pixels


def _band_indices(scene, row) -> list[int]:
    return list(range(scene.nbands)) if row["band"] == "" else [scene.bands.index(row["band"])]


def _line_coordinates(pixels, x, y, x_end, y_end):
    """Along (from (x, y), pixels) and across (absolute) coordinates of ``pixels`` on the line."""
    rows, cols = np.nonzero(pixels)
    length = np.hypot(x_end - x, y_end - y)
    ux, uy = (x_end - x) / length, (y_end - y) / length
    along = (cols - x) * ux + (rows - y) * uy
    across = np.abs(-(cols - x) * uy + (rows - y) * ux)
    return along, across


def _excess(scene, pixels, band=None):
    """Mean (image - truth) / σ over ``pixels`` not masked, and its count (bands: all or ``band``)."""
    model = scene.truth.render(scene.shape)
    bands = range(scene.nbands) if band is None else [band]
    values = []
    for b in bands:
        usable = pixels & (scene.mask[b] == 0)
        values.append(((scene.image[b] - model[b]) / np.sqrt(scene.variance[b]))[usable])
    values = np.concatenate(values)
    return float(values.mean()), values.size


def test_no_artefacts_leaves_the_scene_bit_identical():
    scene = simulate_scene(5, SimulationConfig(height=64, width=64))
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(scene.image).tobytes())
    digest.update(np.ascontiguousarray(scene.variance).tobytes())
    assert digest.hexdigest() == CLEAN_SCENE_SHA256
    assert scene.mask is None and scene.mask_planes is None and scene.artefacts is None


def test_artefacts_that_add_nothing_keep_the_scene_noise_and_truth():
    config = SimulationConfig(height=64, width=64)
    clean = simulate_scene(5, config)
    empty = simulate_scene(5, config.replace(artefacts=ArtefactConfig.without_artefacts()))
    np.testing.assert_allclose(empty.image, clean.image, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(empty.variance, clean.variance)
    np.testing.assert_array_equal(empty.truth.table["flux"], clean.truth.table["flux"])
    assert len(empty.artefacts) == 0 and not empty.mask.any()
    assert empty.mask_planes == DEFAULT_MASK_PLANES


def test_same_seed_same_artefacts(dense_scene):
    again = simulate_scene(DENSE_SEED, SimulationConfig(height=SIZE, width=SIZE, artefacts=DENSE))
    np.testing.assert_array_equal(again.image, dense_scene.image)
    np.testing.assert_array_equal(again.mask, dense_scene.mask)
    for name in ARTEFACT_COLUMNS[:-1]:
        np.testing.assert_array_equal(again.artefacts[name], dense_scene.artefacts[name])
    for a, b in zip(again.artefacts["footprint"], dense_scene.artefacts["footprint"], strict=True):
        assert (a.y0, a.x0) == (b.y0, b.x0)
        np.testing.assert_array_equal(a.mask, b.mask)
    other = simulate_scene(DENSE_SEED + 1, SimulationConfig(height=SIZE, width=SIZE, artefacts=DENSE))
    assert len(other.artefacts) != len(dense_scene.artefacts) or not np.array_equal(
        other.artefacts["x"], dense_scene.artefacts["x"]
    )


def test_every_artefact_type_has_rows_with_pixels(dense_scene):
    table = dense_scene.artefacts
    assert set(table["type"]) == set(ARTEFACT_TYPES)
    assert np.array_equal(table["id"], np.arange(1, len(table) + 1))
    assert dense_scene.mask_planes == DEFAULT_MASK_PLANES
    for row in table:
        assert row["footprint"].area > 0, row["type"]
    trails = _rows(dense_scene, "satellite_trail")
    rays = _rows(dense_scene, "cosmic_ray")
    assert {bool(r["masked"]) for r in trails} == {True, False}
    assert {bool(r["masked"]) for r in rays} == {True, False}
    assert all(
        not r["masked"] for r in _rows(dense_scene, "diffraction_spike") + _rows(dense_scene, "psf_wing")
    )


def test_masked_artefacts_set_their_plane_and_every_mask_bit_has_an_artefact(dense_scene):
    scene = dense_scene
    explained = np.zeros(scene.mask.shape, dtype=bool)
    for row in scene.artefacts:
        if not row["masked"]:
            assert row["mask_plane"] == ""
            continue
        pixels = _pixels(scene, row)
        plane = scene.plane(row["mask_plane"])
        for b in _band_indices(scene, row):
            if row["type"] == "chip_gap":
                # Only a chip gap's borders are EDGE; its inside has more variance, no mask.
                assert plane[b][pixels].any() and not plane[b][pixels].all()
                explained[b] |= pixels & plane[b]
            else:
                assert plane[b][pixels].all(), row["type"]
                explained[b] |= pixels
    assert np.array_equal(scene.mask != 0, explained)


def test_unmasked_artefacts_change_the_image_where_the_table_says(dense_scene):
    scene = dense_scene
    for row in _rows(scene, "diffraction_spike") + [
        r for r in _rows(scene, "satellite_trail") if not r["masked"]
    ]:
        pixels = _pixels(scene, row)
        excess, count = _excess(scene, pixels)
        assert count > 20 and excess > 10.0 / np.sqrt(count), (row["type"], excess, count)
        along, across = _line_coordinates(pixels, row["x"], row["y"], row["x_end"], row["y_end"])
        assert across.max() <= 3.0 * row["width"] + 1.0
        assert along.min() >= -1.0 and along.max() <= row["length"] + 1.0
    for row in [r for r in _rows(scene, "cosmic_ray") if not r["masked"]]:
        band = scene.bands.index(row["band"])
        pixels = _pixels(scene, row)
        assert 1 <= pixels.sum() <= 4
        rows, cols = np.nonzero(pixels)
        assert (cols.mean(), rows.mean()) == pytest.approx((row["x"], row["y"]))
        model = scene.truth.render(scene.shape)[band]
        assert ((scene.image[band] - model) / np.sqrt(scene.variance[band]))[pixels].max() > 5.0
    for row in [r for r in _rows(scene, "satellite_trail") if r["masked"]]:
        # The residue stays in the image under the STREAK mask.
        pixels = _pixels(scene, row)
        model = scene.truth.render(scene.shape)
        assert np.mean((scene.image - model)[:, pixels]) > 0.0
        assert row["flux"].min() > 0.0


def test_bright_star_joins_the_truth_with_its_halo(dense_scene, clean_twin):
    scene = dense_scene
    table = scene.truth.table
    assert len(table) == len(clean_twin.truth) + 1
    star = table[-1]
    assert star["class"] == "star" and 14.5 <= star["mag"][scene.bands.index("i")] <= 15.0
    for stamp, flux in zip(scene.truth.stamps, np.asarray(table["flux"]), strict=True):
        np.testing.assert_allclose(stamp.sum(axis=(1, 2), dtype=np.float64), flux, rtol=2e-4)
    (wing,) = _rows(scene, "psf_wing")
    assert wing["source_id"] == star["id"] and (wing["x"], wing["y"]) == (star["x"], star["y"])
    fraction = scene.metadata["WINGFRAC"]
    assert 0.01 <= fraction <= 0.05
    assert np.all(wing["flux"] > 0) and np.all(wing["flux"] <= fraction * np.asarray(star["flux"]) * 1.0001)
    spikes = _rows(scene, "diffraction_spike")
    assert {s["source_id"] for s in spikes} == {star["id"]}
    angles = np.sort([s["angle"] for s in spikes])
    np.testing.assert_allclose(np.diff(angles), 90.0)
    # The halo puts more light far from the core than the PSF alone: compare a scene without it.
    no_halo = simulate_scene(
        DENSE_SEED,
        SimulationConfig(
            height=SIZE, width=SIZE, artefacts=DENSE.replace(psf_wing_fraction_range=(0.0, 0.0))
        ),
    )

    def beyond_20_pixels(stamp):
        half = stamp.shape[-1] // 2
        return stamp[:, np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) > 20].sum()

    assert beyond_20_pixels(scene.truth.stamps[-1]) > 1.5 * beyond_20_pixels(no_halo.truth.stamps[-1])


def test_saturation_masks_interpolates_and_bleeds_along_columns(dense_scene):
    scene = dense_scene
    sat, intrp, no_data = scene.plane("SAT"), scene.plane("INTRP"), scene.plane("NO_DATA")
    star_id = scene.truth.table["id"][-1]
    assert sat.any() and np.all(intrp[sat])
    for b, band in enumerate(scene.bands):
        level = scene.metadata[f"SATLEV_{band.upper()}"]
        assert np.all(scene.image[b][sat[b]] <= level * (1 + 1e-6))
        assert np.all(scene.image[b][~sat[b] & ~no_data[b]] <= level * (1 + 1e-6))
    for core in _rows(scene, "saturated_core"):
        b = scene.bands.index(core["band"])
        assert core["source_id"] == star_id and core["flux"][b] > 0
        star = scene.truth.table[-1]
        assert np.hypot(core["x"] - star["x"], core["y"] - star["y"]) < 2.0
        core_pixels = _pixels(scene, core)
        (trail,) = [r for r in _rows(scene, "bleed_trail") if r["band"] == core["band"]]
        trail_pixels = _pixels(scene, trail)
        assert trail["angle"] == 90.0 and trail["source_id"] == star_id
        core_rows, core_cols = np.nonzero(core_pixels)
        trail_rows, trail_cols = np.nonzero(trail_pixels)
        # Along columns: within the core's columns, beyond its rows, touching it.
        assert core_cols.min() <= trail_cols.min() and trail_cols.max() <= core_cols.max()
        assert trail_rows.min() < core_rows.min() or trail_rows.max() > core_rows.max()
        assert (trail["y"], trail["y_end"]) == (trail_rows.min(), trail_rows.max())
        assert trail["length"] == np.ptp(trail_rows) + 1 and trail["x"] == pytest.approx(trail_cols.mean())
        _, components = ndimage.label(core_pixels | trail_pixels)
        assert components == 1
        # Interpolated linearly along each row from the nearest pixels that are not SAT.
        row = int(np.median(core_rows))
        masked = sat[b, row]
        columns = np.arange(scene.shape[1])
        usable = ~masked & ~no_data[b, row]
        expected = np.interp(columns[masked], columns[usable], scene.image[b, row, usable])
        np.testing.assert_allclose(scene.image[b, row, masked], expected, rtol=1e-4, atol=1e-2)


def test_no_data_and_chip_gaps(dense_scene, clean_twin):
    scene = dense_scene
    (edge,) = _rows(scene, "no_data")
    pixels = _pixels(scene, edge)
    assert edge["mask_plane"] == "NO_DATA" and scene.plane("NO_DATA")[:, pixels].all()
    assert np.all(scene.image[:, pixels] == 0) and np.all(np.isinf(scene.variance[:, pixels]))
    assert not scene.good[:, pixels].any() and scene.good[:, ~pixels].any()
    others = [row for row in scene.artefacts if row["type"] != "no_data"]
    assert not any((_pixels(scene, row) & pixels).any() for row in others)
    for gap in _rows(scene, "chip_gap"):
        inside = _pixels(scene, gap) & ~scene.plane("EDGE")[0]
        ratio = np.median(scene.variance[:, inside] / clean_twin.variance[:, inside])
        assert DENSE.chip_gap_variance_range[0] * 0.99 <= ratio <= DENSE.chip_gap_variance_range[1] * 1.5
        _, across = _line_coordinates(_pixels(scene, gap), gap["x"], gap["y"], gap["x_end"], gap["y_end"])
        assert across.max() <= gap["width"] / 2 + 1e-6


def test_mask_planes_and_artefacts_round_trip_through_the_scene_file(dense_scene, tmp_path):
    path = tmp_path / "scene.fits"
    write_scene(dense_scene, path)
    header = fits.getheader(path, "MASK")
    assert (
        header["MP_SAT"] == DEFAULT_MASK_PLANES["SAT"]
        and header["MP_STREAK"] == DEFAULT_MASK_PLANES["STREAK"]
    )
    with fits.open(path) as hdul:
        assert {"ARTEFACTS", "ARTEFACT_PIXELS"} <= {hdu.name for hdu in hdul}
    back = read_scene(path)
    assert back.mask_planes == dense_scene.mask_planes == DEFAULT_MASK_PLANES
    np.testing.assert_array_equal(back.mask, dense_scene.mask)
    np.testing.assert_array_equal(back.plane("NO_DATA"), dense_scene.plane("NO_DATA"))
    np.testing.assert_array_equal(back.good, dense_scene.good)
    assert back.artefacts.colnames == list(ARTEFACT_COLUMNS)
    for name in ARTEFACT_COLUMNS[:-1]:
        np.testing.assert_array_equal(back.artefacts[name], dense_scene.artefacts[name])
    assert back.artefacts["type"].dtype.kind == "U"
    for a, b in zip(back.artefacts["footprint"], dense_scene.artefacts["footprint"], strict=True):
        assert (a.y0, a.x0) == (b.y0, b.x0)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert read_scene(path, truth=False).artefacts is None
    assert back.metadata["SATLEV_I"] == dense_scene.metadata["SATLEV_I"]


def test_band_subset_and_bad_artefact_tables(dense_scene):
    subset = dense_scene.band_subset(["g", "r"])
    assert set(subset.artefacts["band"]) <= {"", "g", "r"}
    assert subset.artefacts["flux"].shape == (len(subset.artefacts), 2)
    table = dense_scene.artefacts.copy()
    table["type"] = table["type"].astype("U20")
    table["type"][0] = "lens_flare"
    with pytest.raises(SceneFormatError, match="unknown type"):
        dataclasses.replace(dense_scene, artefacts=table)


@pytest.mark.parametrize(
    ("kernel", "least_ratio"),
    [(NoiseKernelConfig(kind="gaussian", sigma=1.0), 4.0), (NoiseKernelConfig(kind="lanczos"), 1.3)],
)
def test_correlated_noise_keeps_the_pixel_variance_and_correlates_sums(kernel, least_ratio):
    config = SimulationConfig(height=160, width=160, bands="ri", galaxy_density=10.0, star_density=0.0)
    scenes = {
        "white": simulate_scene(8, config),
        "correlated": simulate_scene(
            8, config.replace(artefacts=ArtefactConfig.without_artefacts(correlated_noise_kernel=kernel))
        ),
    }
    ratios = {}
    for name, scene in scenes.items():
        residual = scene.image - scene.truth.render(scene.shape)
        assert np.std(residual / np.sqrt(scene.variance)) == pytest.approx(1.0, abs=0.04)
        sums = residual.reshape(scene.nbands, 40, 4, 40, 4).sum(axis=(2, 4))
        ratios[name] = np.var(sums) / (16.0 * np.mean(scene.variance))
    assert ratios["white"] == pytest.approx(1.0, abs=0.15)
    assert ratios["correlated"] > least_ratio
    assert scenes["correlated"].metadata["NOISEKER"] == kernel.describe()
    assert NoiseKernelConfig.parse(kernel.describe()) == kernel


def test_a_drawn_noise_kernel_varies_from_scene_to_scene_and_leaves_the_rest():
    config = SimulationConfig(height=64, width=64, bands="ri", galaxy_density=10.0, star_density=0.0)
    drawn = ArtefactConfig(correlated_noise_sigma_range=(0.2, 1.0))
    widths = []
    for seed in range(4):
        scene = simulate_scene(seed, config.replace(artefacts=drawn))
        kernel = NoiseKernelConfig.parse(scene.metadata["NOISEKER"])
        assert kernel.kind == "gaussian" and 0.2 <= kernel.sigma <= 1.0
        widths.append(kernel.sigma)
        # The same scene with that kernel given: the draw changes nothing else.
        fixed = simulate_scene(seed, config.replace(artefacts=ArtefactConfig(correlated_noise_kernel=kernel)))
        np.testing.assert_array_equal(scene.image, fixed.image)
        np.testing.assert_array_equal(scene.mask, fixed.mask)
    assert len(set(widths)) == 4
    with pytest.raises(ConfigError, match="not both"):
        make_config(
            ArtefactConfig,
            correlated_noise_sigma_range=(0.2, 1.0),
            correlated_noise_kernel=NoiseKernelConfig(),
        )
    with pytest.raises(ConfigError, match="correlated_noise_sigma_range"):
        make_config(ArtefactConfig, correlated_noise_sigma_range=(0.0, 1.0))


def test_noise_kernel_text():
    assert NoiseKernelConfig.parse("0.8") == NoiseKernelConfig(kind="gaussian", sigma=0.8)
    assert NoiseKernelConfig.parse("lanczos3") == NoiseKernelConfig(kind="lanczos", order=3, shift=0.5)
    assert NoiseKernelConfig.parse("Lanczos5:0.25") == NoiseKernelConfig(kind="lanczos", order=5, shift=0.25)
    np.testing.assert_allclose(np.sum(NoiseKernelConfig.parse("lanczos3").kernel() ** 2), 1.0)
    for text, message in (
        ("blur", "give a Gaussian sigma"),
        ("-1", "greater than 0"),
        ("lanczos3:2", "less than 1"),
    ):
        with pytest.raises(ConfigError, match=message):
            NoiseKernelConfig.parse(text)
    with pytest.raises(ConfigError, match="unknown band"):
        ArtefactConfig.without_artefacts(saturation_level={"q": 1.0})
    # A scene's parameters, artefacts included, survive JSON (the demo and training record them).
    for artefacts in (
        ArtefactConfig(
            saturation_level={"i": 5e4}, correlated_noise_kernel=NoiseKernelConfig.parse("lanczos3")
        ),
        ArtefactConfig.without_artefacts(),
    ):
        config = SimulationConfig(height=32, width=32, artefacts=artefacts)
        assert validate_config(SimulationConfig, config.model_dump(mode="json")) == config


def test_simulate_command_with_artefacts(tmp_path, capsys):
    out = tmp_path / "scene.fits"
    argv = ["simulate", "--seed", "3", "--size", "64", "--bands", "gri", "--out", str(out)]
    assert main([*argv, "--artefacts", "--correlated-noise", "lanczos3"]) == 0
    scene = read_scene(out)
    assert scene.mask_planes == DEFAULT_MASK_PLANES and scene.artefacts is not None
    assert scene.metadata["NOISEKER"] == "lanczos3:0.5" and scene.metadata["ARTEFACT"]
    assert main([*argv, "--overwrite", "--correlated-noise", "fuzzy"]) == 2
    assert "correlated-noise kernel 'fuzzy'" in capsys.readouterr().err
