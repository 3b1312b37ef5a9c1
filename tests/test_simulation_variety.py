"""Widened simulator options: PSF families and model error, compact sizes, knots, depth, background."""

from __future__ import annotations

import hashlib

import galsim
import numpy as np
import pytest
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.errors import ConfigError
from lsst.meas.extensions.residual.scene import read_scene
from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene
from lsst.meas.extensions.residual.simulation.noise import make_noise_model
from lsst.meas.extensions.residual.simulation.psf import make_psfs
from lsst.meas.extensions.residual.simulation.simulate import draw_psf_and_population

SMALL = {"height": 64, "width": 64}
# sha256 of image, variance and PSF bytes of simulate_scene(5, SimulationConfig(height=64, width=64)),
# and of its truth (x, y, flux, hlr, e1, e2 as float64, then every stamp as float32), computed
# before the widened options were added: the default scene must not change.
DEFAULT_SCENE_SHA256 = "af842a4149755a5d2aef93be75dac8f54f97383778d4b1c143cd86ec7693bfd8"
DEFAULT_TRUTH_SHA256 = "f1a53d0b326b5ffc6e96d06de14ba3df39cb4e41ad5411cb80b8ee40bfa33eaa"
# The same for simulate_scene(3, SimulationConfig(96, 96, psf_model="moffat", depth="1yr", bands="gri")).
MOFFAT_1YR_SCENE_SHA256 = "cef41b60f415b917c06778a4ae4867e76828cb84077ad350e750dede70ec02c2"


def _pixels_sha256(scene) -> str:
    digest = hashlib.sha256()
    for array in (scene.image, scene.variance, scene.psf):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _truth_sha256(scene) -> str:
    digest = hashlib.sha256()
    table = scene.truth.table
    for name in ("x", "y", "flux", "hlr", "e1", "e2"):
        digest.update(np.ascontiguousarray(np.asarray(table[name], dtype=np.float64)).tobytes())
    for stamp in scene.truth.stamps:
        digest.update(np.ascontiguousarray(stamp, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _size(psf_image: np.ndarray) -> float:
    """Size (pixels) of a PSF image: galsim's adaptive-moment σ = det(M)^(1/4).

    For a dilated copy of a profile it scales as the FWHM, and a small shear leaves it unchanged.
    """
    image = galsim.Image(np.asarray(psf_image, dtype=np.float64), scale=1.0)
    return galsim.hsm.FindAdaptiveMom(image).moments_sigma


def _outside_fraction(psf_image: np.ndarray, radius: float) -> float:
    """Fraction of a centred PSF image's flux beyond ``radius`` pixels."""
    centre = psf_image.shape[-1] // 2
    y, x = np.indices(psf_image.shape)
    return float(psf_image[np.hypot(y - centre, x - centre) > radius].sum() / psf_image.sum())


def test_default_scene_is_unchanged():
    scene = simulate_scene(5, SimulationConfig(**SMALL))
    assert _pixels_sha256(scene) == DEFAULT_SCENE_SHA256
    assert _truth_sha256(scene) == DEFAULT_TRUTH_SHA256
    assert not any(key.startswith(("PSFERR", "BKGOFF", "DEPTHYR")) for key in scene.metadata)
    moffat = simulate_scene(
        3, SimulationConfig(height=96, width=96, psf_model="moffat", depth="1yr", bands="gri")
    )
    assert _pixels_sha256(moffat) == MOFFAT_1YR_SCENE_SHA256


def test_kolmogorov_airy_adds_a_diffraction_wing():
    bands = ("g", "i")
    kolmogorov = make_psfs(bands, 0.7, 41, 0.2, "kolmogorov")
    airy = make_psfs(bands, 0.7, 41, 0.2, "kolmogorov_airy")
    assert not np.allclose(airy.image, kolmogorov.image, atol=1e-5)
    for band in range(len(bands)):
        # The obscured pupil's rings move light from the core into a power-law wing.
        assert _outside_fraction(airy.image[band], 8) > 1.08 * _outside_fraction(kolmogorov.image[band], 8)
        assert airy.image[band].max() < kolmogorov.image[band].max()
    # Diffraction (∝ λ) matters more in y than in g relative to the seeing (∝ λ^-0.2).
    excess = [
        _outside_fraction(airy.image[b], 8) / _outside_fraction(kolmogorov.image[b], 8) for b in range(2)
    ]
    assert excess[1] > excess[0]
    # At a fine enough pixel and without seeing blur, the rings themselves: the profile is not monotonic.
    ring_profile = make_psfs(("i",), 0.7, 41, 0.2, "kolmogorov_airy").profiles[0].obj_list[1]
    radii = np.linspace(0.005, 0.08, 200)
    values = np.array([ring_profile.xValue(r, 0.0) for r in radii])
    assert np.any(np.diff(values) > 0)

    scene = simulate_scene(5, SimulationConfig(psf_model="kolmogorov_airy", **SMALL))
    assert scene.metadata["PSFMODEL"] == "kolmogorov_airy"
    assert not np.array_equal(scene.psf, simulate_scene(5, SimulationConfig(**SMALL)).psf)
    np.testing.assert_allclose(scene.psf.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_moffat_beta_changes_the_wing():
    steep = simulate_scene(2, SimulationConfig(psf_model="moffat", moffat_beta_range=(5.0, 5.0), **SMALL))
    shallow = simulate_scene(2, SimulationConfig(psf_model="moffat", moffat_beta_range=(2.0, 2.0), **SMALL))
    assert steep.metadata["PSFBETA"] == 5.0 and shallow.metadata["PSFBETA"] == 2.0
    for band in range(len(steep.bands)):
        assert _outside_fraction(shallow.psf[band], 6) > 2 * _outside_fraction(steep.psf[band], 6)
    drawn = [
        simulate_scene(seed, SimulationConfig(psf_model="moffat", moffat_beta_range=(2.0, 5.0), **SMALL))
        for seed in range(3)
    ]
    betas = [scene.metadata["PSFBETA"] for scene in drawn]
    assert all(2.0 <= beta <= 5.0 for beta in betas) and len(set(betas)) == 3


def test_psf_model_error_changes_only_the_reported_psf():
    config = SimulationConfig(psf_model_error=0.05, psf_size=41, **SMALL)
    scene = simulate_scene(7, config)
    exact = simulate_scene(7, config.replace(psf_model_error=0.0))
    # The sources are drawn with the true PSF, so the pixels and truth are the error-free scene's.
    np.testing.assert_array_equal(scene.image, exact.image)
    np.testing.assert_array_equal(scene.variance, exact.variance)
    true_psf, _ = draw_psf_and_population(np.random.default_rng(7), config)
    np.testing.assert_allclose(true_psf.image, exact.psf, atol=1e-7)
    errors = np.array([scene.metadata[f"PSFERR_{band.upper()}"] for band in scene.bands])
    assert np.all(np.abs(errors) < 0.2) and np.std(errors) > 0.005
    for band in range(len(scene.bands)):
        ratio = _size(scene.psf[band]) / _size(true_psf.image[band])
        # The reported PSF's FWHM is off by the recorded fraction (the pixel shrinks it a little).
        assert ratio - 1.0 == pytest.approx(errors[band], rel=0.1, abs=0.002)
    assert {f"PSFDG1_{b.upper()}" for b in scene.bands} <= set(scene.metadata)


def test_compact_sizes_reach_0p05_arcsec():
    dense = {"height": 96, "width": 96, "galaxy_density": 200.0, "star_density": 0.0}
    _, standard = draw_psf_and_population(np.random.default_rng(3), SimulationConfig(**dense))
    compact_config = SimulationConfig(galaxy_sizes="compact", **dense)
    _, compact = draw_psf_and_population(np.random.default_rng(3), compact_config)
    galaxies = compact["class"] == "galaxy"
    # Same galaxies (positions, fluxes), other sizes.
    np.testing.assert_array_equal(standard["x"], compact["x"])
    np.testing.assert_array_equal(standard["flux"], compact["flux"])
    assert standard["disk_hlr"][galaxies].min() >= 0.08
    assert compact["disk_hlr"][galaxies].min() == pytest.approx(0.05)
    assert np.mean(compact["disk_hlr"][galaxies] < 0.1) > 0.1
    faint = galaxies & (compact["flux"][:, 3] < 10 ** (-0.4 * (25.0 - 31.4)))
    assert np.median(compact["disk_hlr"][faint]) < np.median(standard["disk_hlr"][faint])

    scene = simulate_scene(3, compact_config)
    assert scene.metadata["GALSIZES"] == "compact"
    is_galaxy = scene.truth.table["class"] == "galaxy"
    assert np.min(scene.truth.table["hlr"][is_galaxy]) < 0.1
    flux = np.asarray(scene.truth.table["flux"])
    for index, stamp in enumerate(scene.truth.stamps):
        np.testing.assert_allclose(stamp.sum(axis=(1, 2), dtype=np.float64), flux[index], rtol=2e-4)


def test_knots_change_galaxies_and_keep_their_flux():
    config = SimulationConfig(knot_fraction=1.0, height=64, width=64, galaxy_density=150.0, star_density=0.0)
    knotted = simulate_scene(4, config)
    smooth = simulate_scene(4, config.replace(knot_fraction=0.0))
    _, population = draw_psf_and_population(np.random.default_rng(4), config)
    galaxies = population["class"] == "galaxy"
    assert np.all(population["knot_count"][galaxies] >= 5)
    assert np.all(population["knot_flux"][galaxies, 3] > 0)
    table, smooth_table = knotted.truth.table, smooth.truth.table
    np.testing.assert_array_equal(table["x"], smooth_table["x"])
    # The knots take part of the disk's i-band light (with a bluer SED), so the i-band total is kept.
    np.testing.assert_allclose(table["flux"][:, 3], smooth_table["flux"][:, 3], rtol=1e-12)
    flux = np.asarray(table["flux"])
    for index, (stamp, smooth_stamp) in enumerate(
        zip(knotted.truth.stamps, smooth.truth.stamps, strict=True)
    ):
        np.testing.assert_allclose(stamp.sum(axis=(1, 2), dtype=np.float64), flux[index], rtol=1e-2)
        assert np.all(stamp >= 0)
        if stamp.shape == smooth_stamp.shape:
            assert not np.allclose(stamp, smooth_stamp, rtol=1e-3, atol=0)
    assert not np.array_equal(knotted.image, smooth.image)
    assert knotted.metadata["KNOTFRAC"] == 1.0

    some = draw_psf_and_population(np.random.default_rng(4), config.replace(knot_fraction=0.5))[1]
    fraction = np.mean(some["knot_count"][galaxies] > 0)
    assert 0.2 < fraction < 0.8


def test_depth_in_years():
    bands = ("g", "i")
    one, ten = make_noise_model(bands, 1.0, 0.2), make_noise_model(bands, 10.0, 0.2)
    np.testing.assert_allclose(one.background_sigma / ten.background_sigma, np.sqrt(10.0), rtol=1e-9)
    np.testing.assert_allclose(one.background_sigma, make_noise_model(bands, "1yr", 0.2).background_sigma)
    np.testing.assert_allclose(ten.background_sigma, make_noise_model(bands, "10yr", 0.2).background_sigma)

    by_years = simulate_scene(6, SimulationConfig(depth_years=1.0, **SMALL))
    by_name = simulate_scene(6, SimulationConfig(depth="1yr", **SMALL))
    assert by_years.metadata["DEPTHYR"] == 1.0 and by_years.metadata["DEPTH"] == "1.000yr"
    assert len(by_years.truth) == len(by_name.truth)
    np.testing.assert_allclose(by_years.variance, by_name.variance, rtol=1e-5)
    deep = simulate_scene(6, SimulationConfig(depth_years=10.0, **SMALL))
    noise_ratio = np.sqrt(np.median(by_years.variance, axis=(1, 2)) / np.median(deep.variance, axis=(1, 2)))
    assert np.all(noise_ratio > 2.5)

    drawn = [
        simulate_scene(seed, SimulationConfig(depth_years_range=(1.0, 10.0), **SMALL)) for seed in range(3)
    ]
    years = [scene.metadata["DEPTHYR"] for scene in drawn]
    assert all(1.0 <= y <= 10.0 for y in years) and len(set(years)) == 3


def test_background_offset_and_gradient_are_in_the_image_only():
    config = SimulationConfig(background_offset_sigma=3.0, background_gradient_sigma=4.0, **SMALL)
    scene = simulate_scene(8, config)
    clean = simulate_scene(8, config.replace(background_offset_sigma=0.0, background_gradient_sigma=0.0))
    np.testing.assert_array_equal(scene.variance, clean.variance)
    np.testing.assert_array_equal(scene.truth.table["flux"], clean.truth.table["flux"])
    difference = scene.image.astype(np.float64) - clean.image
    sigma = np.sqrt(np.median(clean.variance, axis=(1, 2))).astype(np.float64)
    for index, band in enumerate(scene.bands):
        key = band.upper()
        offset, gx, gy = (scene.metadata[f"{name}_{key}"] for name in ("BKGOFF", "BKGGX", "BKGGY"))
        assert np.median(difference[index]) == pytest.approx(offset, abs=1e-3 * sigma[index] + 1e-4)
        assert difference[index, :, -1].mean() - difference[index, :, 0].mean() == pytest.approx(
            gx, rel=1e-3, abs=1e-4
        )
        assert difference[index, -1, :].mean() - difference[index, 0, :].mean() == pytest.approx(
            gy, rel=1e-3, abs=1e-4
        )
        shift = np.median(scene.image[index]) - np.median(clean.image[index])
        assert shift == pytest.approx(offset, abs=0.5 * sigma[index])
    offsets = np.array([scene.metadata[f"BKGOFF_{b.upper()}"] for b in scene.bands]) / sigma
    assert 0.5 < np.sqrt(np.mean(offsets**2)) < 8.0


def test_widened_mix_is_seeded_and_varied(tmp_path):
    config = SimulationConfig.widened(**SMALL)
    assert config.psf_model_mix == ("kolmogorov", "kolmogorov_airy", "moffat")
    assert config.moffat_beta_range == (2.0, 5.0) and config.galaxy_sizes == "compact"
    assert 0.02 <= config.psf_model_error <= 0.03 and config.knot_fraction == 0.3
    a, b = simulate_scene(11, config), simulate_scene(11, config)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.psf, b.psf)
    assert a.metadata == b.metadata
    scenes = [simulate_scene(seed, config) for seed in range(6)]
    assert len({scene.metadata["PSFMODEL"] for scene in scenes}) >= 2
    assert len({scene.metadata["DEPTHYR"] for scene in scenes}) == 6
    assert len({scene.metadata["PSFERR_R"] for scene in scenes}) == 6
    assert all(2.0 <= s.metadata["PSFBETA"] <= 5.0 for s in scenes if s.metadata["PSFMODEL"] == "moffat")
    # Pixel scales from HSC's to DECam's; the sources are drawn at the scene's scale.
    scales = [scene.metadata["PIXSCALE"] for scene in scenes]
    assert len(set(scales)) == 6 and all(0.17 <= v <= 0.27 for v in scales)
    for scene in scenes:
        # The PSF is drawn at the scene's scale: its FWHM in pixels is the seeing over the scale
        # (from the area above half the peak, pixelised).
        psf = scene.psf[scene.bands.index("r")]
        fwhm_pixels = np.sqrt(np.count_nonzero(psf >= 0.5 * psf.max()) * 4 / np.pi)
        assert 0.75 < fwhm_pixels / (scene.metadata["PSFFWHM"] / scene.metadata["PIXSCALE"]) < 1.3
    # Overrides replace the mix's values.
    fixed = SimulationConfig.widened(
        psf_model="moffat", depth="1yr", knot_fraction=0.0, pixel_scale=0.2, **SMALL
    )
    assert fixed.psf_model_mix == () and fixed.depth_years_range is None and fixed.knot_fraction == 0.0
    assert fixed.pixel_scale_range is None and simulate_scene(3, fixed).metadata["PIXSCALE"] == 0.2
    with pytest.raises(ConfigError, match="knot_fraction"):
        SimulationConfig.widened(knot_fraction=2.0)

    # The same from the command line, and the draws survive the scene file.
    out = tmp_path / "widened.fits"
    args = ["simulate", "--seed", "11", "--size", "64", "--widened", "--out", str(out)]
    assert main(args) == 0
    written = read_scene(out)
    np.testing.assert_array_equal(written.image, a.image)
    assert written.metadata["DEPTHYR"] == a.metadata["DEPTHYR"]
    assert written.metadata["PSFERR_R"] == a.metadata["PSFERR_R"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"moffat_beta_range": (5.0, 2.0)}, "moffat_beta_range"),
        ({"moffat_beta_range": (1.0, 2.0)}, "moffat_beta_range"),
        ({"depth_years": 0.5}, "depth_years"),
        ({"depth_years": 3.0, "depth_years_range": (1.0, 10.0)}, "not both"),
        ({"depth_years_range": (2.0, 20.0)}, "depth_years_range"),
        ({"psf_model_mix": ("kolmogorov", "gaussian")}, "psf_model_mix"),
        ({"galaxy_sizes": "tiny"}, "galaxy_sizes"),
        ({"psf_model_error": -0.01}, "psf_model_error"),
        ({"background_gradient_sigma": -1.0}, "background_gradient_sigma"),
        ({"pixel_scale_range": (0.27, 0.17)}, "pixel_scale_range"),
    ],
)
def test_bad_widened_options(values, message):
    with pytest.raises(ConfigError, match=message):
        SimulationConfig().replace(**values)


def test_cli_widened_options(tmp_path):
    out = tmp_path / "scene.fits"
    args = ["simulate", "--seed", "3", "--size", "48", "--bands", "ri", "--out", str(out)]
    args += ["--psf-model", "kolmogorov_airy", "--psf-model-error", "0.03", "--depth-years", "2.5"]
    args += ["--knot-fraction", "0.5", "--galaxy-sizes", "compact", "--background-offset-sigma", "0.2"]
    assert main(args) == 0
    scene = read_scene(out)
    assert scene.metadata["PSFMODEL"] == "kolmogorov_airy" and scene.metadata["DEPTHYR"] == 2.5
    assert {"PSFERR_R", "PSFERR_I", "BKGOFF_R", "BKGGX_I"} <= set(scene.metadata)
    assert main(["simulate", "--seed", "3", "--size", "48", "--depth-years", "20", "--out", str(out)]) == 2
