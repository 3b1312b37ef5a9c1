"""Simulate an LSST-like multi-band coadd scene with truth."""

from __future__ import annotations

__all__ = [
    "SimulationConfig",
    "simulate_scene",
    "draw_psf_and_population",
    "DEFAULT_GALAXY_DENSITY",
    "Depth",
    "PsfModel",
]

from typing import Any, Literal

import numpy as np
import pydantic
from astropy.table import Table

from ..bands import LSST_BANDS, parse_bands
from ..configs import StrictModel
from ..scene import Scene
from ..truth import Truth
from .noise import make_noise_model
from .population import PopulationConfig, draw_population
from .psf import ScenePsf, make_psfs
from .render import render_sources
from .survey import NJY_ZEROPOINT, PIXEL_SCALE, flux_to_mag

#: Default galaxies per arcmin² brighter than the i-band 5σ depth.
DEFAULT_GALAXY_DENSITY = {"10yr": 60.0, "1yr": 35.0}


#: Coadd depths the noise model knows.
Depth = Literal["10yr", "1yr"]
#: PSF profiles `make_psfs` draws.
PsfModel = Literal["kolmogorov", "moffat"]


class SimulationConfig(StrictModel):
    """Parameters of a simulated scene; with a seed they fix it completely."""

    height: int = pydantic.Field(default=512, gt=0)
    """Scene height (pixels)."""
    width: int = pydantic.Field(default=512, gt=0)
    """Scene width (pixels)."""
    bands: tuple[str, ...] = LSST_BANDS
    """Bands, e.g. ``"ugrizy"``, ``"g,r,i"`` or a sequence (kept in LSST wavelength order)."""
    depth: Depth = "10yr"
    """Coadd depth: ``"10yr"`` or ``"1yr"``."""
    galaxy_density: float | None = pydantic.Field(default=None, ge=0.0)
    """Galaxies per arcmin² brighter than the i-band depth (None: the depth's default)."""
    star_density: float = pydantic.Field(default=8.0, ge=0.0)
    """Stars per arcmin² brighter than the i-band depth."""
    psf_model: PsfModel = "kolmogorov"
    """``"kolmogorov"`` or ``"moffat"``."""
    psf_fwhm_range: tuple[pydantic.PositiveFloat, pydantic.PositiveFloat] = (0.5, 1.1)
    """Range of the r-band PSF FWHM (arcsec) drawn per scene."""
    psf_shear_sigma: float = pydantic.Field(default=0.02, ge=0.0)
    """Scatter of the per-band PSF reduced shear."""
    psf_size: int = pydantic.Field(default=31, ge=3)
    """Odd side of the PSF images (pixels)."""
    read_noise_fraction: float = pydantic.Field(default=0.05, ge=0.0, lt=1.0)
    """Fraction of the background variance due to read noise."""
    pixel_scale: float = pydantic.Field(default=PIXEL_SCALE, gt=0.0)
    """Arcsec per pixel."""

    @pydantic.field_validator("bands", mode="before")
    @classmethod
    def _parse_bands(cls, bands: Any) -> tuple[str, ...]:
        return parse_bands(bands)

    @pydantic.field_validator("psf_fwhm_range")
    @classmethod
    def _ordered_range(cls, fwhm: tuple[float, float]) -> tuple[float, float]:
        if fwhm[0] > fwhm[1]:
            raise ValueError(f"psf_fwhm_range must be (min, max) with min <= max, not {fwhm}")
        return fwhm

    @pydantic.field_validator("psf_size")
    @classmethod
    def _odd_psf(cls, size: int) -> int:
        if size % 2 == 0:
            raise ValueError(f"psf_size must be odd (the PSF centred on a pixel), not {size}")
        return size


def draw_psf_and_population(rng: np.random.Generator, config: SimulationConfig) -> tuple[ScenePsf, Table]:
    """Draw a scene's PSFs and its source population (the first draws of `simulate_scene`)."""
    fwhm_r = rng.uniform(*config.psf_fwhm_range)
    psf_shear = rng.normal(0.0, config.psf_shear_sigma, size=(len(config.bands), 2))
    psf = make_psfs(config.bands, fwhm_r, config.psf_size, config.pixel_scale, config.psf_model, psf_shear)
    density = DEFAULT_GALAXY_DENSITY[config.depth] if config.galaxy_density is None else config.galaxy_density
    population = draw_population(
        rng,
        (config.height, config.width),
        config.bands,
        config.pixel_scale,
        PopulationConfig(galaxy_density=density, star_density=config.star_density, depth=config.depth),
    )
    return psf, population


def simulate_scene(seed: int, config: SimulationConfig | None = None) -> Scene:
    """Simulate a scene.

    Parameters
    ----------
    seed : `int`
        Random seed; the same seed and config give the same scene.
    config : `SimulationConfig`, optional
        Scene parameters.

    Returns
    -------
    scene : `lsst.meas.extensions.residual.scene.Scene`
        Image in nJy with variance, PSFs, and truth.
    """
    config = SimulationConfig() if config is None else config
    rng = np.random.default_rng(seed)
    bands = config.bands
    shape = (config.height, config.width)
    psf, population = draw_psf_and_population(rng, config)
    noise = make_noise_model(bands, config.depth, config.pixel_scale, config.read_noise_fraction)
    reference = bands.index("i") if "i" in bands else len(bands) // 2
    rendered = render_sources(population, psf, config.pixel_scale, reference, noise.background_sigma)

    truth_table = Table()
    truth_table["id"] = np.arange(1, len(population) + 1, dtype=np.int64)
    truth_table["x"] = np.asarray(population["x"], dtype=np.float64)
    truth_table["y"] = np.asarray(population["y"], dtype=np.float64)
    truth_table["class"] = population["class"]
    truth_table["flux"] = np.asarray(population["flux"], dtype=np.float64).reshape(
        len(population), len(bands)
    )
    truth_table["mag"] = flux_to_mag(truth_table["flux"])
    truth_table["hlr"] = [r.hlr for r in rendered]
    truth_table["e1"] = [r.e1 for r in rendered]
    truth_table["e2"] = [r.e2 for r in rendered]
    truth_table["redshift"] = population["redshift"]
    truth_table["bulge_fraction"] = population["bulge_fraction"]
    truth_table["stamp_x0"] = np.array([r.x0 for r in rendered], dtype=np.int32)
    truth_table["stamp_y0"] = np.array([r.y0 for r in rendered], dtype=np.int32)
    truth_table["stamp_height"] = np.array([r.stamp.shape[1] for r in rendered], dtype=np.int32)
    truth_table["stamp_width"] = np.array([r.stamp.shape[2] for r in rendered], dtype=np.int32)
    truth_table["flux"].unit = "nJy"
    truth_table["hlr"].unit = "arcsec"
    truth = Truth(truth_table, [r.stamp.astype(np.float32) for r in rendered])

    model = truth.render(shape).astype(np.float64)
    image = noise.add_noise(rng, model)
    variance = noise.variance(model)

    metadata = {
        "PIXSCALE": config.pixel_scale,
        "BUNIT": "nJy",
        "ZEROPT": NJY_ZEROPOINT,
        "SEED": int(seed),
        "DEPTH": config.depth,
        "PSFMODEL": config.psf_model,
        "PSFFWHM": round(psf.fwhm_r, 4),
        "SIMULATD": True,
    }
    return Scene(image=image, variance=variance, psf=psf.image, bands=bands, truth=truth, metadata=metadata)
