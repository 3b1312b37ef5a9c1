"""Simulate an LSST-like multi-band coadd scene with truth."""

from __future__ import annotations

__all__ = [
    "SimulationConfig",
    "simulate_scene",
    "draw_psf_and_population",
    "population_truth",
    "DEFAULT_GALAXY_DENSITY",
    "Depth",
    "PsfModel",
]

from typing import Any, Literal

import numpy as np
import pydantic
from astropy.table import Table

from ..bands import LSST_BANDS, parse_bands
from ..configs import StrictModel, make_config
from ..scene import Scene
from ..truth import Truth
from .artefacts import ArtefactConfig, apply_artefacts
from .noise import background_residual, make_noise_model
from .population import GalaxySizes, PopulationConfig, draw_population
from .psf import MOFFAT_BETA, ScenePsf, draw_scene_psf
from .render import render_sources
from .survey import NJY_ZEROPOINT, PIXEL_SCALE, flux_to_mag

#: Default galaxies per arcmin² brighter than the i-band 5σ depth.
DEFAULT_GALAXY_DENSITY = {"10yr": 60.0, "1yr": 35.0}


#: Coadd depths the noise model knows.
Depth = Literal["10yr", "1yr"]
#: PSF profiles `make_psfs` draws.
PsfModel = Literal["kolmogorov", "moffat", "kolmogorov_airy"]


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
    """``"kolmogorov"``, ``"moffat"`` or ``"kolmogorov_airy"`` (Kolmogorov ⊗ Rubin's obscured Airy)."""
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
    pixel_scale_range: tuple[float, float] | None = None
    """Range (arcsec, within [0.05, 1]) of the pixel scale drawn uniformly per scene, overriding
    ``pixel_scale`` (HSC's 0.168″ to DECam's 0.263″: 0.17-0.27); None: ``pixel_scale``."""
    # Widened scenes (issue 10): each option's default keeps the standard scene, and
    # their draws come from their own generator, so the standard stream is unchanged.
    psf_model_mix: tuple[PsfModel, ...] = ()
    """PSF families drawn uniformly per scene, overriding ``psf_model`` (repeat one to weight it);
    empty: always ``psf_model``."""
    moffat_beta_range: tuple[float, float] = (MOFFAT_BETA, MOFFAT_BETA)
    """Range (within [1.5, 10]) of the Moffat β drawn uniformly per scene."""
    psf_model_error: float = pydantic.Field(default=0.0, ge=0.0, le=0.2)
    """Scatter of the PSF-model error: the scene's PSF (what a measurement is told) is the one that drew
    the sources dilated by 1 + e and with its shear offset by (δg1, δg2), all ~ N(0, this) per band."""
    galaxy_sizes: GalaxySizes = "standard"
    """Galaxy size–magnitude relation: ``"standard"`` (0.7″ at i = 22, -0.1 dex/mag, 0.15 dex) or
    ``"compact"`` (-0.15 dex/mag, 0.3 dex scatter, down to 0.05″)."""
    knot_fraction: float = pydantic.Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of galaxies with star-forming knots (10-50% of the disk light in 5-30 blue knots)."""
    depth_years: float | None = pydantic.Field(default=None, ge=1.0, le=10.0)
    """Coadd length in years (1-10), overriding ``depth``: 1.25 log10(years / 10) mag from the 10-year
    depth. None: ``depth``."""
    depth_years_range: tuple[float, float] | None = None
    """Range (within [1, 10]) of the coadd length drawn log-uniformly per scene, overriding ``depth``."""
    background_offset_sigma: float = pydantic.Field(default=0.0, ge=0.0)
    """Scatter of a constant background offset left in each band, in units of its background noise."""
    background_gradient_sigma: float = pydantic.Field(default=0.0, ge=0.0)
    """Scatter of each component of a linear background gradient left in each band (its change across
    the scene), in units of the background noise."""
    artefacts: ArtefactConfig | None = None
    """Coadd artefacts to add, with their truth (`ArtefactConfig()`: a 10-year patch's mix; their
    draws come from their own generator); None: a clean scene without MASK."""

    @pydantic.field_validator("moffat_beta_range")
    @classmethod
    def _beta_range(cls, beta: tuple[float, float]) -> tuple[float, float]:
        if not 1.5 <= beta[0] <= beta[1] <= 10.0:
            raise ValueError(f"moffat_beta_range must be (min, max) with 1.5 <= min <= max <= 10, not {beta}")
        return beta

    @pydantic.field_validator("depth_years_range")
    @classmethod
    def _years_range(cls, years: tuple[float, float] | None) -> tuple[float, float] | None:
        if years is not None and not 1.0 <= years[0] <= years[1] <= 10.0:
            raise ValueError(f"depth_years_range must be (min, max) with 1 <= min <= max <= 10, not {years}")
        return years

    @pydantic.field_validator("pixel_scale_range")
    @classmethod
    def _scale_range(cls, scales: tuple[float, float] | None) -> tuple[float, float] | None:
        if scales is not None and not 0.05 <= scales[0] <= scales[1] <= 1.0:
            raise ValueError(
                f"pixel_scale_range must be (min, max) with 0.05 <= min <= max <= 1, not {scales}"
            )
        return scales

    @pydantic.model_validator(mode="after")
    def _one_depth_in_years(self) -> SimulationConfig:
        if self.depth_years is not None and self.depth_years_range is not None:
            raise ValueError("give depth_years or depth_years_range, not both")
        return self

    @classmethod
    def widened(cls, **overrides: Any) -> SimulationConfig:
        """The widened mix of scenes that network-v2 training draws from.

        Every scene draws, from its own seed: a PSF family (Kolmogorov,
        Kolmogorov ⊗ Airy or Moffat, equally likely), a Moffat β in [2, 5],
        a 2.5% PSF-model error, compact galaxy sizes, knots in 30% of the
        galaxies, a coadd of 1-10 years (log-uniform), background offsets of
        0.1 σ and gradients of 0.2 σ across the scene (r.m.s.), and a pixel
        scale of 0.17-0.27″ (uniform: HSC to DECam).
        The same seed gives the same scene.

        Parameters
        ----------
        **overrides
            Any field, replacing the mix's value or the default; a
            ``psf_model`` replaces the family mix, a ``depth`` or
            ``depth_years`` the range of depths, and a ``pixel_scale`` the
            range of scales.

        Raises
        ------
        ConfigError
            If a value is invalid.
        """
        mix = {
            "psf_model_mix": ("kolmogorov", "kolmogorov_airy", "moffat"),
            "moffat_beta_range": (2.0, 5.0),
            "psf_model_error": 0.025,
            "galaxy_sizes": "compact",
            "knot_fraction": 0.3,
            "depth_years_range": (1.0, 10.0),
            "background_offset_sigma": 0.1,
            "background_gradient_sigma": 0.2,
            "pixel_scale_range": WIDENED_PIXEL_SCALES,
        }
        if "psf_model" in overrides:
            del mix["psf_model_mix"]
        if "depth" in overrides or overrides.get("depth_years") is not None:
            del mix["depth_years_range"]
        if "pixel_scale" in overrides:
            del mix["pixel_scale_range"]
        return make_config(cls, "widened simulation options", **{**mix, **overrides})

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


# Second seed entry of the generator of the widened options' draws (distinct from the scene's own stream).
_VARIETY_STREAM = 10
_PIXEL_SCALE_STREAM = 11
#: Pixel scales (arcsec) of the widened mix: HSC (0.168″) to DECam (0.263″).
WIDENED_PIXEL_SCALES = (0.17, 0.27)


def _variety_generator(entropy) -> np.random.Generator:
    """The generator of the widened options' draws of the scene seeded with ``entropy``."""
    return np.random.default_rng([*np.atleast_1d(entropy).tolist(), _VARIETY_STREAM])


def _variety_metadata(config: SimulationConfig, psf: ScenePsf, survey_depth, background) -> dict[str, Any]:
    """Header keys recording a scene's widened-option draws (none for a standard scene)."""
    bands = config.bands
    metadata: dict[str, Any] = {"PSFMODEL": psf.model}
    if psf.moffat_beta is not None:
        metadata["PSFBETA"] = round(psf.moffat_beta, 4)
    if psf.reported is not None:
        for index, band in enumerate(bands):
            metadata[f"PSFERR_{band.upper()}"] = round(float(psf.fwhm_error[index]), 6)
            metadata[f"PSFDG1_{band.upper()}"] = round(float(psf.shear_error[index, 0]), 6)
            metadata[f"PSFDG2_{band.upper()}"] = round(float(psf.shear_error[index, 1]), 6)
    if not isinstance(survey_depth, str):
        metadata["DEPTH"] = f"{survey_depth:.3f}yr"
        metadata["DEPTHYR"] = round(float(survey_depth), 4)
    if config.galaxy_sizes != "standard":
        metadata["GALSIZES"] = config.galaxy_sizes
    if config.knot_fraction > 0.0:
        metadata["KNOTFRAC"] = config.knot_fraction
    if background is not None:
        for index, band in enumerate(bands):
            metadata[f"BKGOFF_{band.upper()}"] = round(float(background.offset[index]), 6)
            metadata[f"BKGGX_{band.upper()}"] = round(float(background.gradient[index, 0]), 6)
            metadata[f"BKGGY_{band.upper()}"] = round(float(background.gradient[index, 1]), 6)
    return metadata


def draw_psf_and_population(
    rng: np.random.Generator, config: SimulationConfig, variety: np.random.Generator | None = None
) -> tuple[ScenePsf, Table]:
    """Draw a scene's PSFs and its source population (the first draws of `simulate_scene`).

    Parameters
    ----------
    rng : `numpy.random.Generator`
        The scene's generator.
    config : `SimulationConfig`
        Scene parameters.
    variety : `numpy.random.Generator`, optional
        Generator of the widened options' draws (PSF family, β, PSF-model
        error, depth in years, compact sizes, knots); default: the one
        `simulate_scene` uses for the seed of ``rng``.

    Returns
    -------
    psf : `ScenePsf`
        The PSFs that draw the sources (``psf.reported``: those the scene
        reports, under a PSF-model error).
    population : `astropy.table.Table`
        The sources (`draw_population`); ``population.meta["depth"]`` is the
        scene's depth (``"10yr"``, ``"1yr"`` or years).
    """
    if variety is None:
        variety = _variety_generator(rng.bit_generator.seed_seq.entropy)
    psf_rng, depth_rng, population_rng = variety.spawn(3)
    fwhm_r = rng.uniform(*config.psf_fwhm_range)
    psf_shear = rng.normal(0.0, config.psf_shear_sigma, size=(len(config.bands), 2))
    psf = draw_scene_psf(
        psf_rng,
        config.bands,
        fwhm_r,
        config.psf_size,
        config.pixel_scale,
        psf_shear,
        config.psf_model_mix or (config.psf_model,),
        config.moffat_beta_range,
        config.psf_model_error,
    )
    survey_depth: str | float = config.depth
    if config.depth_years is not None:
        survey_depth = config.depth_years
    elif config.depth_years_range is not None:
        survey_depth = float(10.0 ** depth_rng.uniform(*np.log10(config.depth_years_range)))
    if config.galaxy_density is not None:
        density = config.galaxy_density
    elif isinstance(survey_depth, str):
        density = DEFAULT_GALAXY_DENSITY[survey_depth]
    else:
        # Between the 1- and 10-year defaults, linearly in log(years) (as the depth in magnitudes).
        low, high = DEFAULT_GALAXY_DENSITY["1yr"], DEFAULT_GALAXY_DENSITY["10yr"]
        density = low + (high - low) * float(np.log10(survey_depth))
    population = draw_population(
        rng,
        (config.height, config.width),
        config.bands,
        config.pixel_scale,
        PopulationConfig(
            galaxy_density=density,
            star_density=config.star_density,
            depth=survey_depth,
            size_relation=config.galaxy_sizes,
            knot_fraction=config.knot_fraction,
        ),
        population_rng,
    )
    population.meta["depth"] = survey_depth
    return psf, population


def population_truth(population: Table, rendered: list, nbands: int) -> Truth:
    """The `Truth` of drawn sources (`draw_population`) in ``nbands`` bands and their stamps
    (`render_sources`), ids from 1."""
    truth_table = Table()
    truth_table["id"] = np.arange(1, len(population) + 1, dtype=np.int64)
    truth_table["x"] = np.asarray(population["x"], dtype=np.float64)
    truth_table["y"] = np.asarray(population["y"], dtype=np.float64)
    truth_table["class"] = population["class"]
    truth_table["flux"] = np.asarray(population["flux"], dtype=np.float64).reshape(len(population), nbands)
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
    return Truth(truth_table, [r.stamp.astype(np.float32) for r in rendered])


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
        Image in nJy with variance, PSFs, and truth; with ``config.artefacts``
        also a MASK with LSST's planes and the artefacts' table
        (`~lsst.meas.extensions.residual.simulation.artefacts.apply_artefacts`).
    """
    config = SimulationConfig() if config is None else config
    if config.pixel_scale_range is not None:
        # Drawn first, from its own stream: everything after is simulated at the drawn scale.
        scale = np.random.default_rng([seed, _PIXEL_SCALE_STREAM]).uniform(*config.pixel_scale_range)
        config = config.replace(pixel_scale=float(round(scale, 5)), pixel_scale_range=None)
    rng = np.random.default_rng(seed)
    bands = config.bands
    shape = (config.height, config.width)
    variety = _variety_generator(seed)
    psf, population = draw_psf_and_population(rng, config, variety)
    survey_depth = population.meta["depth"]
    noise = make_noise_model(bands, survey_depth, config.pixel_scale, config.read_noise_fraction)
    reference = bands.index("i") if "i" in bands else len(bands) // 2
    rendered = render_sources(population, psf, config.pixel_scale, reference, noise.background_sigma)

    truth = population_truth(population, rendered, len(bands))

    model = truth.render(shape).astype(np.float64)
    image = noise.add_noise(rng, model)
    variance = noise.variance(model)
    background = background_image = None
    if config.background_offset_sigma > 0.0 or config.background_gradient_sigma > 0.0:
        (background_rng,) = variety.spawn(1)
        background = background_residual(
            background_rng,
            noise.background_sigma,
            config.background_offset_sigma,
            config.background_gradient_sigma,
        )
        # Left by background subtraction: in the image, not in the truth or the variance.
        background_image = background.image(shape)
        image = image + background_image

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
    metadata.update(_variety_metadata(config, psf, survey_depth, background))
    mask = mask_planes = artefacts = None
    if config.artefacts is not None:
        applied = apply_artefacts(
            seed,
            config.artefacts,
            image=image,
            variance=variance,
            model=model,
            truth=truth,
            psf=psf,
            noise=noise,
            bands=bands,
            pixel_scale=config.pixel_scale,
            star_density=config.star_density,
            survey_depth=survey_depth,
            background=background_image,
        )
        image, variance, truth = applied.image, applied.variance, applied.truth
        mask, mask_planes, artefacts = applied.mask, applied.mask_planes, applied.table
        metadata.update(applied.metadata)
    reported_psf = psf.image if psf.reported is None else psf.reported.image
    return Scene(
        image=image,
        variance=variance,
        psf=reported_psf,
        bands=bands,
        truth=truth,
        metadata=metadata,
        mask=mask,
        mask_planes=mask_planes,
        artefacts=artefacts,
    )
