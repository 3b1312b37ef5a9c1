"""Simulator: reproducibility, truth consistency, colours, noise."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.configs import make_config, validate_config
from lsst.meas.extensions.residual.errors import ConfigError
from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene
from lsst.meas.extensions.residual.simulation.noise import make_noise_model
from lsst.meas.extensions.residual.simulation.sed import galaxy_colors, star_colors
from lsst.meas.extensions.residual.simulation.survey import mag_to_flux

SMALL = SimulationConfig(height=80, width=96)


def test_same_seed_same_scene():
    a, b = simulate_scene(5, SMALL), simulate_scene(5, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.psf, b.psf)
    assert len(a.truth) == len(b.truth) > 0
    np.testing.assert_array_equal(a.truth.table["flux"], b.truth.table["flux"])
    for sa, sb in zip(a.truth.stamps, b.truth.stamps, strict=True):
        np.testing.assert_array_equal(sa, sb)


def test_different_seed_different_scene():
    a, b = simulate_scene(5, SMALL), simulate_scene(6, SMALL)
    assert not np.array_equal(a.image, b.image)


def test_shapes_bands_and_psf(small_scene):
    assert small_scene.image.shape == (6, 96, 96)
    assert small_scene.bands == ("u", "g", "r", "i", "z", "y")
    np.testing.assert_allclose(small_scene.psf.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    # Seeing improves to the red: the u-band PSF is the widest.
    peak = small_scene.psf.max(axis=(1, 2))
    assert peak[0] < peak[-1]


def test_band_subset_scene():
    scene = simulate_scene(2, SimulationConfig(height=48, width=48, bands="gri"))
    assert scene.bands == ("g", "r", "i") and scene.image.shape[0] == 3


def test_isolated_image_sums_to_truth_flux(small_scene):
    truth = small_scene.truth
    flux = np.asarray(truth.table["flux"])
    for index, stamp in enumerate(truth.stamps):
        np.testing.assert_allclose(stamp.sum(axis=(1, 2), dtype=np.float64), flux[index], rtol=2e-4)
        assert np.all(stamp >= 0)


def test_magnitudes_match_fluxes(small_scene):
    table = small_scene.truth.table
    np.testing.assert_allclose(mag_to_flux(table["mag"]), table["flux"], rtol=1e-9)


def test_noiseless_scene_is_sum_of_isolated_images(small_scene):
    """The image minus the truth model is pure noise with the variance plane's variance."""
    model = small_scene.truth.render(small_scene.shape)
    chi = (small_scene.image - model) / np.sqrt(small_scene.variance)
    assert abs(float(chi.mean())) < 0.02
    assert 0.97 < float(chi.std()) < 1.03


def test_star_colours_follow_temperature():
    bands = ("g", "r")
    hot, sunlike, cool = star_colors([10000.0, 5800.0, 3500.0], bands, reference="r")[:, 0]
    # AB g-r: A stars are blue, the Sun ~0.4-0.5, M dwarfs red.
    assert hot < 0.0 < sunlike < cool
    assert 0.2 < sunlike < 0.7


def test_galaxy_colours():
    bands = ("u", "r")
    elliptical = galaxy_colors("E", 0.0, bands, reference="r")[0, 0]
    irregular = galaxy_colors("Im", 0.0, bands, reference="r")[0, 0]
    assert elliptical > 2.0  # red sequence u-r
    assert irregular < elliptical - 0.8
    # Redshifting an elliptical moves the 4000 A break through g: g-r reddens.
    gr = galaxy_colors("E", [0.0, 0.3], ("g", "r"), reference="r")[:, 0]
    assert gr[1] > gr[0]


def test_depth_changes_noise():
    deep = make_noise_model(("i",), "10yr", 0.2).background_sigma[0]
    shallow = make_noise_model(("i",), "1yr", 0.2).background_sigma[0]
    np.testing.assert_allclose(shallow / deep, np.sqrt(10.0), rtol=1e-6)


def test_source_counts_scale_with_density():
    few = simulate_scene(3, SimulationConfig(height=128, width=128, galaxy_density=10, star_density=0))
    many = simulate_scene(3, SimulationConfig(height=128, width=128, galaxy_density=80, star_density=0))
    assert not np.any(few.truth.is_star)
    assert len(many.truth) > 3 * len(few.truth)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=-5), "height: Input should be greater than 0"),
        (dict(bands="ugriq"), r"bands: .*Unknown band\(s\) \['q'\]"),
        (dict(depth="5yr"), "depth: Input should be '10yr' or '1yr'"),
        (dict(psf_size=30), "psf_size: .*must be odd"),
        (dict(psf_fwhm_range=(1.0, 0.5)), "psf_fwhm_range: .*min <= max"),
        (dict(star_density="many"), "star_density: Input should be a valid number"),
        (dict(read_noise_fraction=1.0), "read_noise_fraction: Input should be less than 1"),
        (dict(seeing=0.7), "seeing: Extra inputs are not permitted"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_config(SimulationConfig, **kwargs)
    with pytest.raises(ValueError):  # direct construction: pydantic's error
        SimulationConfig(**kwargs)


def test_config_parses_bands_and_round_trips():
    config = SimulationConfig(height=48, width=64, bands="i,g", galaxy_density=10)
    assert config.bands == ("g", "i") and config.galaxy_density == 10.0
    assert validate_config(SimulationConfig, config.model_dump(mode="json")) == config
    assert config.replace(width=32).width == 32 and config.width == 64


def test_bright_star_wings_are_not_cut_at_the_psf_stamp():
    """Stamps of bright stars extend past the K×K PSF until the wings are below the noise."""
    scene = simulate_scene(1, SimulationConfig(height=256, width=256, star_density=40))
    sigma = make_noise_model(scene.bands, "10yr", 0.2).background_sigma
    stars = np.flatnonzero(scene.truth.is_star)
    sizes = np.asarray(scene.truth.table["stamp_height"])[stars]
    assert sizes.max() > scene.psf.shape[-1]  # some star is bright enough to need it
    for index in stars:
        stamp = scene.truth.stamps[index]
        border = np.concatenate([stamp[:, 0, :], stamp[:, -1, :], stamp[:, :, 0], stamp[:, :, -1]], axis=1)
        if stamp.shape[-1] < 2 * 96 + 1:  # below the size cap
            assert np.all(border.max(axis=1) < 0.1 * sigma), index
