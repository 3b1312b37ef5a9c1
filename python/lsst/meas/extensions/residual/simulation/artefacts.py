"""Artefacts of a real deep coadd patch, added to a simulated scene with their truth.

`apply_artefacts` (called by `simulate_scene` when ``SimulationConfig.artefacts``
is set) takes a clean scene and adds, in this order:

Bright stars
    Stars of i = 14–17 (``bright_star_mag_range``): the scene's star counts,
    dN/dm ∝ 10^(0.1 m) normalised by ``star_density``, extended to brighter
    magnitudes (about 1.4 per 512² patch at the default 8 stars/arcmin²,
    Poisson; ``min_bright_stars`` forces some). They join the truth as stars.
PSF wings (``psf_wing``)
    Every star brighter than ``bright_star_mag_limit`` (i = 18; the new stars
    and the population's brightest) gets a halo the scene's PSF does not
    describe: a Moffat of β = 2 and FWHM 2.5″ carrying a fraction f of the
    star's flux (f drawn per scene in 1–5%), so the core holds 1 − f. The halo
    is in the star's truth stamp and its ``flux`` (the stamp still sums to the
    truth flux); drawn only for these stars, since a fainter star's halo
    would sit far below the noise. One row per star, not masked.
Diffraction spikes (``diffraction_spike``)
    Rubin's spider makes four spikes: a cross at a random angle per star (a
    coadd of many rotator angles would smear them into a star-like pattern;
    a random fixed cross per star gives the network variety). Each spike is
    a line with the PSF's Gaussian width whose brightness falls as
    (1 + s/s0)^-2 along it, ``spike_flux_fraction`` (0.5%) of the star's flux
    in the four; its length, where it drops to ``spike_end_sigma`` of the
    noise, and its brightness grow with the star's flux (~20 px at i = 17,
    ~90 px at i = 14, 10-year depth). In the image, not in the truth stamp,
    not masked.
Satellite trails (``satellite_trail``)
    Straight lines across the scene with the PSF's Gaussian width. Bright
    ones (``bright_trail_rate`` per 512² patch, 20–200σ per pixel) are masked
    STREAK where they were brighter than 1σ, and the image keeps 10–30% of
    the trail (what subtracting or clipping it left); faint ones (1–3σ per
    pixel) are neither masked nor removed.
Noise
    Every addition brings its Poisson noise: the scene's noise is whitened
    with the clean variance and recoloured with the new one (so the main
    noise realisation is kept). Chip gaps (``chip_gap``: strips 8–30 px wide
    at a random angle, fewer inputs) multiply the variance by 1.2–2 and add
    the noise that goes with it; their borders are EDGE. With
    ``correlated_noise_kernel`` the noise (never the sources) is convolved
    with a resampling kernel normalised to Σk² = 1, so each pixel keeps the
    variance its VARIANCE plane gives, as after LSST's ScaleVarianceTask,
    while sums over pixels have more variance than the plane implies.
Cosmic rays (``cosmic_ray``)
    A few 1–4-pixel hits of 10–100σ in one band, left by shallow inputs;
    ``cosmic_ray_masked_fraction`` of them are masked CR.
Saturation (``saturated_core``, ``bleed_trail``)
    Pixels brighter than the band's saturation level (the peak pixel of a
    point source of AB magnitude ``saturation_mag`` = 17 under 0.7″ seeing,
    or ``saturation_level``) are SAT. The charge above the level in each
    column bleeds up and down that column (±y, as if every input had the
    same CCD orientation), filling pixels to the level: the trail's length
    follows the excess, conserving it, except what runs off the scene. SAT
    footprints are grown by ``saturation_grow`` pixel (as LSST's ISR grows
    them), then interpolated linearly along rows across each masked span
    from the nearest unmasked pixels (a span at the scene edge takes the
    one neighbour's value) and marked INTRP; the variance plane keeps the
    expected variance there (those pixels carry no weight).
Coverage edge (``no_data``)
    With probability ``coverage_edge_probability``, a strip along one side
    (2–20% of the scene) has no inputs: NO_DATA, image 0 and variance +inf
    (no inputs: infinite variance, zero weight; the scene treats it as bad).
    Other artefacts are clipped out of it.

Every artefact has a row in the scene's ``ARTEFACTS`` table (see
`lsst.meas.extensions.residual.scene`) with its pixels, and the MASK uses
LSST's planes (`lsst.meas.extensions.residual.masks.DEFAULT_MASK_PLANES`).
All draws come from ``numpy.random.default_rng([seed, 7])`` (one child
generator per kind of artefact), so the scene's own stream, and therefore a
scene without artefacts, is unchanged, and the same seed gives the same
artefacts.
"""

from __future__ import annotations

__all__ = [
    "ARTEFACT_STREAM",
    "ArtefactConfig",
    "ArtefactResult",
    "NoiseKernelConfig",
    "apply_artefacts",
    "saturation_levels",
]

import dataclasses
import functools
import re
from typing import Any, Literal, Self

import numpy as np
import pydantic
from astropy.table import Table, vstack
from scipy import ndimage

from ..artefact_truth import ARTEFACT_TYPES
from ..bands import LSST_BANDS
from ..configs import StrictModel, make_config
from ..errors import ConfigError
from ..geometry import Box, Footprint
from ..masks import DEFAULT_MASK_PLANES
from ..truth import STAR, Truth
from .noise import NoiseModel
from .population import _STAR_COUNT_SLOPE, PopulationConfig, _power_law_mags
from .psf import ScenePsf, make_psfs
from .sed import star_colors
from .survey import NOMINAL_PSF_FWHM, depth, flux_to_mag, mag_to_flux

#: Second entry of the seed of the artefacts' generator (the scene's own stream is seeded by the seed alone).
ARTEFACT_STREAM = 7
_NOISE_KERNEL_STREAM = 1

# Counts are given per 512×512-pixel patch and scaled with the scene's area.
_PATCH_PIXELS = 512 * 512
# Largest half-size of a bright star's stamp (pixels): its halo beyond is far below the noise.
_MAX_STAMP_HALF = 160
# A bright star's stamp reaches where its halo falls below this fraction of the noise.
_STAMP_NOISE_FRACTION = 0.05
# The psf_wing footprint: where the halo adds more than this many σ of noise.
_WING_FOOTPRINT_SIGMA = 0.5
# Lines (spikes, trails) are drawn to this many Gaussian σ from their axis; footprints reach 2σ.
_LINE_DRAW_SIGMA = 3.0
_LINE_FOOTPRINT_SIGMA = 2.0
# A masked trail is masked where the whole (unsubtracted) trail was brighter than this many σ.
_STREAK_MASK_SIGMA = 1.0
_GAUSSIAN_FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))

_Range = tuple[float, float]


class NoiseKernelConfig(StrictModel):
    """The kernel that correlates a coadd's noise (as resampling each input does).

    Written as text (command line, the ``NOISEKER`` header key): ``"0.8"`` or
    ``"gaussian:0.8"`` (a Gaussian of σ = 0.8 px), ``"lanczos3"`` (Lanczos-3
    at a half-pixel shift) or ``"lanczos3:0.25"`` (at a 0.25-px shift).
    """

    kind: Literal["gaussian", "lanczos"] = "gaussian"
    """``"gaussian"`` or ``"lanczos"`` (the warping kernel of LSST's coadds)."""
    sigma: float = pydantic.Field(default=0.7, gt=0.0, le=5.0)
    """Gaussian kernel: standard deviation (pixels)."""
    order: int = pydantic.Field(default=3, ge=1, le=8)
    """Lanczos kernel: order a (2a taps along each axis)."""
    shift: float = pydantic.Field(default=0.5, gt=0.0, lt=1.0)
    """Lanczos kernel: sub-pixel shift of the resampling along x and y (0.5 correlates the most)."""

    @classmethod
    def parse(cls, text: str) -> Self:
        """The kernel written as ``text`` (see the class docstring).

        Raises
        ------
        ConfigError
            If ``text`` is not such a kernel.
        """
        spec = text.strip().lower()
        lanczos = re.fullmatch(r"lanczos(\d+)(?::(.+))?", spec)
        try:
            if lanczos:
                values: dict[str, Any] = {"kind": "lanczos", "order": int(lanczos.group(1))}
                if lanczos.group(2) is not None:
                    values["shift"] = float(lanczos.group(2))
                return make_config(cls, "correlated-noise kernel", **values)
            sigma = spec.removeprefix("gaussian:")
            return make_config(cls, "correlated-noise kernel", kind="gaussian", sigma=float(sigma))
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(
                f"correlated-noise kernel {text!r}: give a Gaussian sigma in pixels ('0.8' or "
                "'gaussian:0.8'), or 'lanczosN' or 'lanczosN:SHIFT' (e.g. 'lanczos3:0.5')."
            ) from None

    def describe(self) -> str:
        """The kernel as text (`parse` reads it back)."""
        if self.kind == "gaussian":
            return f"gaussian:{self.sigma:g}"
        return f"lanczos{self.order}:{self.shift:g}"

    def kernel(self) -> np.ndarray:
        """The 2-D kernel, normalised so that Σk² = 1 (white noise keeps its per-pixel variance)."""
        if self.kind == "gaussian":
            half = int(np.ceil(4.0 * self.sigma))
            offsets = np.arange(-half, half + 1, dtype=np.float64)
            profile = np.exp(-0.5 * (offsets / self.sigma) ** 2)
        else:
            offsets = np.arange(-self.order + 1, self.order + 1, dtype=np.float64) - self.shift
            profile = np.sinc(offsets) * np.sinc(offsets / self.order)
        profile /= profile.sum()  # a resampling kernel keeps the flux
        kernel = np.outer(profile, profile)
        return kernel / np.sqrt(np.sum(kernel**2))


class ArtefactConfig(StrictModel):
    """Which artefacts `apply_artefacts` adds and how many; the default is a 10-year patch's mix.

    Rates are Poisson means per 512×512-pixel patch, scaled with the
    scene's area. Ranges are (min, max), drawn uniformly.
    """

    bright_star_mag_range: _Range = (14.0, 17.0)
    """i-band magnitudes of the bright stars added (the population's stars start at i = 17)."""
    bright_star_density: float | None = pydantic.Field(default=None, ge=0.0)
    """Bright stars per arcmin² in ``bright_star_mag_range``; None: the scene's star counts
    (``star_density``, dN/dm ∝ 10^(0.1 m)) extended to that range."""
    min_bright_stars: int = pydantic.Field(default=0, ge=0)
    """At least this many bright stars are added (tests force some)."""
    bright_star_mag_limit: float | None = 18.0
    """The population's stars brighter than this i magnitude get PSF wings and diffraction spikes, as
    the added bright stars always do; None: only the added ones."""
    psf_wing_fraction_range: _Range = (0.01, 0.05)
    """Fraction of a bright star's flux in the halo the PSF model misses (drawn per scene)."""
    psf_wing_beta: float = pydantic.Field(default=2.0, gt=1.0)
    """Moffat β of the halo."""
    psf_wing_fwhm: float = pydantic.Field(default=2.5, gt=0.0)
    """FWHM (arcsec) of the halo."""
    spike_flux_fraction: float = pydantic.Field(default=0.005, ge=0.0, lt=0.1)
    """Fraction of a bright star's flux in its four diffraction spikes together."""
    spike_core_length: float = pydantic.Field(default=3.0, gt=0.0)
    """Length s0 (pixels) over which a spike's brightness halves twice: it falls as (1 + s/s0)^-2."""
    spike_end_sigma: float = pydantic.Field(default=0.5, gt=0.0)
    """A spike ends where its ridge falls to this many σ of the background noise."""
    saturate: bool = True
    """Saturate pixels above the saturation level (SAT, bleed trails, interpolation)."""
    saturation_mag: float = 17.0
    """AB magnitude of a point source whose peak pixel reaches the saturation level under 0.7″
    seeing, in every band (so stars brighter than ~17 saturate)."""
    saturation_level: dict[str, pydantic.PositiveFloat] | None = None
    """Saturation level (nJy per pixel) of the bands given, replacing ``saturation_mag`` for them."""
    saturation_grow: int = pydantic.Field(default=1, ge=0, le=5)
    """SAT footprints are grown by this many pixels (LSST's ISR grows them by 1)."""
    bright_trail_rate: float = pydantic.Field(default=0.2, ge=0.0)
    """Bright satellite trails (masked STREAK, residue left in the image) per patch."""
    bright_trail_peak_range: _Range = (20.0, 200.0)
    """Peak of a bright trail before subtraction, in σ of the background noise per pixel."""
    trail_residue_range: _Range = (0.1, 0.3)
    """Fraction of a bright trail left in the image after subtraction."""
    faint_trail_rate: float = pydantic.Field(default=0.3, ge=0.0)
    """Faint, unmasked satellite trails per patch."""
    faint_trail_peak_range: _Range = (1.0, 3.0)
    """Peak of a faint trail, in σ of the background noise per pixel."""
    coverage_edge_probability: float = pydantic.Field(default=0.2, ge=0.0, le=1.0)
    """Probability that a strip along one side of the scene has no inputs (NO_DATA)."""
    coverage_edge_width_range: _Range = (0.02, 0.2)
    """Width of that strip, as a fraction of the scene's side."""
    chip_gap_rate: float = pydantic.Field(default=0.5, ge=0.0)
    """Chip gaps (strips with fewer inputs) per patch, scaled with the scene's side."""
    chip_gap_width_range: _Range = (8.0, 30.0)
    """Width of a chip gap (pixels)."""
    chip_gap_variance_range: _Range = (1.2, 2.0)
    """Factor by which a chip gap's variance is larger (N inputs over the N - k that cover it)."""
    chip_gap_edge_width: int = pydantic.Field(default=1, ge=1)
    """Width (pixels) of the EDGE border on each side of a chip gap."""
    cosmic_ray_rate: float = pydantic.Field(default=3.0, ge=0.0)
    """Cosmic-ray hits (1-4 pixels, one band) per patch."""
    cosmic_ray_peak_range: _Range = (10.0, 100.0)
    """Brightest pixel of a hit, in σ of the band's background noise."""
    cosmic_ray_masked_fraction: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    """Fraction of the hits masked CR (the others were missed by the coadd's clipping)."""
    correlated_noise_kernel: NoiseKernelConfig | None = None
    """Kernel correlating the noise, as resampling and coadding do; None: white noise."""
    correlated_noise_sigma_range: _Range | None = None
    """Range (pixels, within (0, 5]) of the σ of a Gaussian kernel correlating the noise, drawn
    uniformly per scene (training on many correlation lengths; σ = 0.2 px is nearly white); None:
    ``correlated_noise_kernel``. Give one of the two."""

    @pydantic.field_validator(
        "bright_star_mag_range",
        "psf_wing_fraction_range",
        "bright_trail_peak_range",
        "trail_residue_range",
        "faint_trail_peak_range",
        "coverage_edge_width_range",
        "chip_gap_width_range",
        "chip_gap_variance_range",
        "cosmic_ray_peak_range",
    )
    @classmethod
    def _ordered(cls, value: _Range) -> _Range:
        if not 0.0 <= value[0] <= value[1]:
            raise ValueError(f"a range must be (min, max) with 0 <= min <= max, not {value}")
        return value

    @pydantic.field_validator("psf_wing_fraction_range", "trail_residue_range", "coverage_edge_width_range")
    @classmethod
    def _fraction(cls, value: _Range) -> _Range:
        if value[1] >= 1.0:
            raise ValueError(f"a fraction range must stay below 1, not {value}")
        return value

    @pydantic.field_validator("chip_gap_variance_range")
    @classmethod
    def _more_variance(cls, value: _Range) -> _Range:
        if value[0] < 1.0:
            raise ValueError(f"chip gaps have fewer inputs: the variance factor is >= 1, not {value}")
        return value

    @pydantic.field_validator("correlated_noise_sigma_range")
    @classmethod
    def _kernel_widths(cls, value: _Range | None) -> _Range | None:
        if value is not None and not 0.0 < value[0] <= value[1] <= 5.0:
            raise ValueError(f"must be (min, max) with 0 < min <= max <= 5 pixels, not {value}")
        return value

    @pydantic.model_validator(mode="after")
    def _one_noise_kernel(self) -> Self:
        if self.correlated_noise_kernel is not None and self.correlated_noise_sigma_range is not None:
            raise ValueError("give correlated_noise_kernel or correlated_noise_sigma_range, not both")
        return self

    @pydantic.field_validator("saturation_level")
    @classmethod
    def _known_bands(cls, levels: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(levels or {}) - set(LSST_BANDS))
        if unknown:
            raise ValueError(f"saturation_level names unknown band(s) {', '.join(unknown)}")
        return levels

    @classmethod
    def without_artefacts(cls, **overrides: Any) -> Self:
        """A config that adds nothing (no stars, trails, gaps, hits or saturation) but ``overrides``.

        For example ``ArtefactConfig.without_artefacts(correlated_noise_kernel=NoiseKernelConfig())``
        gives a clean scene with correlated noise (and an all-zero MASK with LSST's planes).

        Raises
        ------
        ConfigError
            If an override is invalid.
        """
        nothing = {
            "bright_star_density": 0.0,
            "min_bright_stars": 0,
            "bright_star_mag_limit": None,
            "saturate": False,
            "bright_trail_rate": 0.0,
            "faint_trail_rate": 0.0,
            "coverage_edge_probability": 0.0,
            "chip_gap_rate": 0.0,
            "cosmic_ray_rate": 0.0,
        }
        return make_config(cls, "artefact options", **{**nothing, **overrides})


@dataclasses.dataclass
class ArtefactResult:
    """A scene's planes after `apply_artefacts`."""

    image: np.ndarray
    """(nbands, H, W) image."""
    variance: np.ndarray
    """(nbands, H, W) variance (+inf where there is no data)."""
    mask: np.ndarray
    """(nbands, H, W) int32 mask with the bits of ``mask_planes``."""
    mask_planes: dict[str, int]
    """LSST mask planes (`DEFAULT_MASK_PLANES`)."""
    truth: Truth
    """The truth with the bright stars added and the bright stars' halos in their stamps."""
    table: Table
    """The ``ARTEFACTS`` table (`lsst.meas.extensions.residual.scene`), with a ``footprint`` column."""
    metadata: dict[str, Any]
    """Header keys: ``ARTEFACT``, ``WINGFRAC``, ``SATLEV_<BAND>``, ``NOISEKER``."""


@functools.cache
def _nominal_peak_fraction(bands: tuple[str, ...], pixel_scale: float) -> np.ndarray:
    """(nbands,) fraction of a centred point source's flux in its peak pixel under nominal seeing."""
    psf = make_psfs(bands, NOMINAL_PSF_FWHM, 41, pixel_scale)
    return psf.image.max(axis=(1, 2))


def saturation_levels(config: ArtefactConfig, bands: tuple[str, ...], pixel_scale: float) -> np.ndarray:
    """(nbands,) saturation level (nJy per pixel) of each band (see `ArtefactConfig.saturation_mag`)."""
    levels = mag_to_flux(config.saturation_mag) * _nominal_peak_fraction(tuple(bands), float(pixel_scale))
    given = config.saturation_level or {}
    return np.array([given.get(band, level) for band, level in zip(bands, levels, strict=True)])


def _line_through_scene(
    x: float, y: float, angle: float, shape: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Where the line through (x, y) at ``angle`` (radians from +x) enters and leaves the scene."""
    height, width = shape
    dx, dy = np.cos(angle), np.sin(angle)
    t_low, t_high = -np.inf, np.inf
    for position, step, low, high in ((x, dx, -0.5, width - 0.5), (y, dy, -0.5, height - 0.5)):
        if abs(step) < 1e-12:
            continue
        t0, t1 = sorted(((low - position) / step, (high - position) / step))
        t_low, t_high = max(t_low, t0), min(t_high, t1)
    return x + t_low * dx, y + t_low * dy, x + t_high * dx, y + t_high * dy


class _Scratch:
    """What `apply_artefacts` builds up: the added light, variance factors, masks and rows."""

    def __init__(self, nbands: int, shape: tuple[int, int]):
        self.shape = shape
        self.light = np.zeros((nbands, *shape))  # noiseless light added (with its Poisson noise)
        self.variance_factor = np.ones(shape)
        self.mask = np.zeros((nbands, *shape), dtype=np.int32)
        self.rows: list[dict[str, Any]] = []
        self.nbands = nbands
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        self.yy, self.xx = yy.astype(np.float64), xx.astype(np.float64)

    def line(self, x: float, y: float, angle: float) -> tuple[np.ndarray, dict[str, float]]:
        """A straight line through (x, y) at ``angle`` (radians from +x), across the whole scene.

        Returns each pixel's distance to it, and the row columns of its geometry (`add_row`): where
        it enters and leaves the scene, its length there and its angle in degrees.
        """
        x_start, y_start, x_end, y_end = _line_through_scene(x, y, angle, self.shape)
        across = np.abs(-(self.xx - x) * np.sin(angle) + (self.yy - y) * np.cos(angle))
        geometry = {
            "x": x_start,
            "y": y_start,
            "x_end": x_end,
            "y_end": y_end,
            "length": float(np.hypot(x_end - x_start, y_end - y_start)),
            "angle": float(np.degrees(angle)),
        }
        return across, geometry

    def add_row(
        self,
        kind: str,
        pixels: np.ndarray,
        *,
        source_id: int = 0,
        band: int | None = None,
        mask_plane: str = "",
        x: float = np.nan,
        y: float = np.nan,
        x_end: float = np.nan,
        y_end: float = np.nan,
        length: float = np.nan,
        angle: float = np.nan,
        width: float = np.nan,
        flux: np.ndarray | float = 0.0,
    ) -> None:
        """Record an artefact (if it has pixels in the scene); ``band`` None: all bands."""
        footprint = Footprint.from_mask(pixels)
        if footprint is None:
            return
        if band is None:
            flux_row = np.broadcast_to(np.asarray(flux, dtype=np.float64), (self.nbands,)).copy()
        else:
            flux_row = np.zeros(self.nbands)
            flux_row[band] = float(flux)
        self.rows.append(
            {
                "type": kind,
                "source_id": int(source_id),
                "band": band,
                "masked": bool(mask_plane),
                "mask_plane": mask_plane,
                "x": float(x),
                "y": float(y),
                "x_end": float(x_end),
                "y_end": float(y_end),
                "length": float(length),
                "angle": float(angle),
                "width": float(width),
                "flux": flux_row,
                "footprint": footprint,
            }
        )


def apply_artefacts(
    seed: int,
    config: ArtefactConfig,
    *,
    image: np.ndarray,
    variance: np.ndarray,
    model: np.ndarray,
    truth: Truth,
    psf: ScenePsf,
    noise: NoiseModel,
    bands: tuple[str, ...],
    pixel_scale: float,
    star_density: float,
    survey_depth: str | float,
    background: np.ndarray | None = None,
) -> ArtefactResult:
    """Add a coadd's artefacts (module docstring) to a simulated scene.

    Parameters
    ----------
    seed : `int`
        The scene's seed; the artefacts are drawn from
        ``numpy.random.default_rng([seed, ARTEFACT_STREAM])``.
    config : `ArtefactConfig`
        What to add.
    image, variance : `numpy.ndarray`
        (nbands, H, W) the clean scene's image and its variance.
    model : `numpy.ndarray`
        (nbands, H, W) noiseless image of the truth (``truth.render``): the
        image less ``model`` and ``background`` is the noise.
    truth : `Truth`
        The scene's truth (not modified: the result has its own).
    psf : `ScenePsf`
        The PSFs that drew the sources.
    noise : `NoiseModel`
        The scene's noise (background noise, gain, and ``variance``).
    bands : `tuple` [`str`]
        The scene's bands.
    pixel_scale : `float`
        arcsec/pixel.
    star_density : `float`
        Stars per arcmin² brighter than the i-band depth (the population's).
    survey_depth : `str` or `float`
        The coadd's depth (``"10yr"``, ``"1yr"`` or years).
    background : `numpy.ndarray`, optional
        (nbands, H, W) background residual in ``image`` (not noise, not truth).

    Returns
    -------
    result : `ArtefactResult`
        The new image, variance, mask, truth and artefact table.
    """
    nbands = len(bands)
    shape = image.shape[1:]
    height, width = shape
    area_scale = height * width / _PATCH_PIXELS
    star_rng, wing_rng, spike_rng, trail_rng, gap_rng, ray_rng, edge_rng = np.random.default_rng(
        [int(seed), ARTEFACT_STREAM]
    ).spawn(7)
    reference = bands.index("i") if "i" in bands else nbands // 2
    sigma = np.asarray(noise.background_sigma, dtype=np.float64)
    psf_sigma = np.asarray(psf.fwhm, dtype=np.float64) / pixel_scale / _GAUSSIAN_FWHM
    planes = dict(DEFAULT_MASK_PLANES)
    bit = {name: np.int32(1 << planes[name]) for name in planes}
    scratch = _Scratch(nbands, shape)
    metadata: dict[str, Any] = {"ARTEFACT": True}

    # The coverage edge first: nothing else is recorded inside it.
    no_data = _coverage_edge(edge_rng, config, shape)

    # Bright stars (new ones join the truth) with their halos and spikes.
    table, stamps = truth.table.copy(), list(truth.stamps)
    n_before = len(table)
    new_flux, new_xy = _draw_bright_stars(
        star_rng, config, bands, shape, pixel_scale, star_density, survey_depth
    )
    table, stamps = _append_stars(table, stamps, new_xy, new_flux)
    wing_fraction = float(wing_rng.uniform(*config.psf_wing_fraction_range))
    metadata["WINGFRAC"] = round(wing_fraction, 6)
    mag_i = np.asarray(flux_to_mag(np.asarray(table["flux"], dtype=np.float64)[:, reference]))
    limit = -np.inf if config.bright_star_mag_limit is None else config.bright_star_mag_limit
    is_bright = (np.asarray(table["class"]) == STAR) & (mag_i < limit)
    is_bright[n_before:] = True  # the added stars, whatever the limit
    for index in np.flatnonzero(is_bright):
        _brighten_star(
            scratch,
            config,
            table,
            stamps,
            int(index),
            existing=index < n_before,
            psf=psf,
            pixel_scale=pixel_scale,
            sigma=sigma,
            wing_fraction=wing_fraction,
            rng=spike_rng,
            psf_sigma=psf_sigma,
            reference=reference,
        )
    new_truth = Truth(table, stamps)

    # Satellite trails, chip gaps (light, variance, masks), then the noise of it all.
    _satellite_trails(scratch, trail_rng, config, sigma, psf_sigma, reference, area_scale, bit["STREAK"])
    _chip_gaps(scratch, gap_rng, config, bit["EDGE"])
    new_model = model + scratch.light
    new_variance = np.asarray(noise.variance(new_model), dtype=np.float64) * scratch.variance_factor
    background = 0.0 if background is None else background
    white = (image - model - background) / np.sqrt(variance)
    noise_kernel = config.correlated_noise_kernel
    if config.correlated_noise_sigma_range is not None:
        # Its own generator: the other artefacts' draws do not change with it.
        width = np.random.default_rng([int(seed), ARTEFACT_STREAM, _NOISE_KERNEL_STREAM]).uniform(
            *config.correlated_noise_sigma_range
        )
        noise_kernel = NoiseKernelConfig(kind="gaussian", sigma=round(float(width), 4))
    if noise_kernel is not None:
        kernel = noise_kernel.kernel()
        # Periodic boundaries: every pixel is a sum of independent deviates with Σk² = 1, so unit variance.
        white = np.stack([ndimage.convolve(plane, kernel, mode="wrap") for plane in white])
        metadata["NOISEKER"] = noise_kernel.describe()
    new_image = new_model + white * np.sqrt(new_variance) + background

    _cosmic_rays(scratch, new_image, ray_rng, config, sigma, area_scale, bit["CR"])
    if config.saturate:
        levels = saturation_levels(config, bands, pixel_scale)
        for band, level in zip(bands, levels, strict=True):
            metadata[f"SATLEV_{band.upper()}"] = round(float(level), 3)
        _saturate(scratch, new_image, levels, no_data, config.saturation_grow, new_truth, bit)

    if no_data is not None:
        pixels, geometry = no_data
        new_image[:, pixels] = 0.0
        new_variance[:, pixels] = np.inf
        scratch.mask[:, pixels] = bit["NO_DATA"]
        for row in scratch.rows:
            row["footprint"] = _clip(row["footprint"], pixels)
        scratch.rows = [row for row in scratch.rows if row["footprint"] is not None]
        scratch.add_row("no_data", pixels, mask_plane="NO_DATA", **geometry)

    return ArtefactResult(
        image=new_image,
        variance=new_variance,
        mask=scratch.mask,
        mask_planes=planes,
        truth=new_truth,
        table=_artefact_table(scratch.rows, bands),
        metadata=metadata,
    )


def _clip(footprint: Footprint, excluded: np.ndarray) -> Footprint | None:
    """``footprint`` without the pixels of ``excluded`` ((H, W) bool), or None if nothing is left."""
    return Footprint.from_mask(footprint.mask & ~excluded[footprint.slices], footprint.box.origin)


def _coverage_edge(
    rng: np.random.Generator, config: ArtefactConfig, shape: tuple[int, int]
) -> tuple[np.ndarray, dict[str, float]] | None:
    """The no-data strip ((H, W) bool) and its geometry, or None."""
    if rng.uniform() >= config.coverage_edge_probability:
        return None
    height, width = shape
    side = int(rng.integers(4))  # left, right, bottom, top
    fraction = rng.uniform(*config.coverage_edge_width_range)
    across = width if side < 2 else height
    strip = int(np.clip(round(fraction * across), 1, across - 1))
    pixels = np.zeros(shape, dtype=bool)
    if side == 0:
        pixels[:, :strip] = True
        centre = (strip - 1) / 2.0
        geometry = {"x": centre, "y": -0.5, "x_end": centre, "y_end": height - 0.5, "angle": 90.0}
    elif side == 1:
        pixels[:, width - strip :] = True
        centre = width - (strip + 1) / 2.0
        geometry = {"x": centre, "y": -0.5, "x_end": centre, "y_end": height - 0.5, "angle": 90.0}
    elif side == 2:
        pixels[:strip, :] = True
        centre = (strip - 1) / 2.0
        geometry = {"x": -0.5, "y": centre, "x_end": width - 0.5, "y_end": centre, "angle": 0.0}
    else:
        pixels[height - strip :, :] = True
        centre = height - (strip + 1) / 2.0
        geometry = {"x": -0.5, "y": centre, "x_end": width - 0.5, "y_end": centre, "angle": 0.0}
    geometry["length"] = float(height if side < 2 else width)
    geometry["width"] = float(strip)
    return pixels, geometry


def _draw_bright_stars(
    rng: np.random.Generator,
    config: ArtefactConfig,
    bands: tuple[str, ...],
    shape: tuple[int, int],
    pixel_scale: float,
    star_density: float,
    survey_depth: str | float,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, nbands) fluxes and (n, 2) positions (x, y) of the added bright stars."""
    height, width = shape
    area = height * width * (pixel_scale / 60.0) ** 2
    bright, faint = config.bright_star_mag_range
    density = config.bright_star_density
    if density is None:
        # The population's counts: star_density between its bright limit and the i-band depth.
        slope, start = _STAR_COUNT_SLOPE, PopulationConfig.star_bright_limit
        limit = depth("i", survey_depth)
        density = star_density * (10.0 ** (slope * faint) - 10.0 ** (slope * bright))
        density /= 10.0 ** (slope * limit) - 10.0 ** (slope * start)
    count = max(int(rng.poisson(density * area)), config.min_bright_stars)
    mag_i = (
        _power_law_mags(rng, count, _STAR_COUNT_SLOPE, bright, faint)
        if faint > bright
        else np.full(count, bright)
    )
    temperature = 2800.0 + 9000.0 * rng.uniform(size=count) ** 2
    flux = np.zeros((0, len(bands)))
    if count:
        flux = mag_to_flux(mag_i)[:, None] * 10.0 ** (-0.4 * star_colors(temperature, bands))
    xy = np.column_stack([rng.uniform(-0.5, width - 0.5, count), rng.uniform(-0.5, height - 0.5, count)])
    return flux, xy


def _append_stars(
    table: Table, stamps: list[np.ndarray], xy: np.ndarray, flux: np.ndarray
) -> tuple[Table, list[np.ndarray]]:
    """The truth table with rows for stars at ``xy`` with ``flux`` (stamps drawn later: empty now)."""
    count = len(xy)
    if count == 0:
        return table, stamps
    nbands = flux.shape[1]
    new = Table()
    for name in table.colnames:
        column = table[name]
        fill = "" if column.dtype.kind in "US" else 0
        new[name] = np.full((count, *column.shape[1:]), fill, dtype=column.dtype)
        new[name].unit = column.unit
    first = int(np.max(table["id"])) + 1 if len(table) else 1
    # In place, so that the columns keep the truth's dtypes (stamp sizes stay 0 until drawn).
    new["id"][:] = np.arange(first, first + count)
    new["x"][:], new["y"][:] = xy[:, 0], xy[:, 1]
    new["class"][:] = STAR
    new["flux"][:] = flux
    new["mag"][:] = flux_to_mag(flux)
    combined = vstack([table, new], join_type="exact", metadata_conflicts="silent")
    return combined, stamps + [np.zeros((nbands, 0, 0), dtype=np.float32)] * count


def _brighten_star(
    scratch: _Scratch,
    config: ArtefactConfig,
    table: Table,
    stamps: list[np.ndarray],
    index: int,
    *,
    existing: bool,
    psf: ScenePsf,
    pixel_scale: float,
    sigma: np.ndarray,
    wing_fraction: float,
    rng: np.random.Generator,
    psf_sigma: np.ndarray,
    reference: int,
) -> None:
    """Draw star ``index`` with its halo (its truth stamp) and its four spikes."""
    row = table[index]
    source_id = int(row["id"])
    x, y = float(row["x"]), float(row["y"])
    flux = np.asarray(row["flux"], dtype=np.float64)
    alpha = config.psf_wing_fwhm / pixel_scale / (2.0 * np.sqrt(2.0 ** (1.0 / config.psf_wing_beta) - 1.0))
    beta = config.psf_wing_beta
    # Half-size: where the halo (or the core's own wings) fall below a small fraction of the noise.
    halo_peak = wing_fraction * flux * (beta - 1.0) / (np.pi * alpha**2)
    ratio = halo_peak / (_STAMP_NOISE_FRACTION * sigma)
    halo_radius = alpha * np.sqrt(np.clip(ratio, 1.0, None) ** (1.0 / beta) - 1.0)
    half = max(psf.wing_half_size(flux, sigma, pixel_scale), int(np.ceil(halo_radius.max())))
    half = int(min(4 * int(np.ceil(half / 4)), _MAX_STAMP_HALF))
    size = 2 * half + 1
    xc, yc = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    dx, dy = x - xc, y - yc
    offsets = np.arange(size, dtype=np.float64) - half
    radius = np.hypot(offsets[None, :] - dx, offsets[:, None] - dy)
    halo = np.where(radius <= half, (1.0 + (radius / alpha) ** 2) ** -beta, 0.0)
    halo /= halo.sum()
    core = np.stack([psf.point_source(b, (dx, dy), pixel_scale, size) for b in range(len(flux))])
    wing = (wing_fraction * flux)[:, None, None] * halo[None]
    stamp = (1.0 - wing_fraction) * flux[:, None, None] * core + wing
    y0, x0 = yc - half, xc - half
    if existing:
        old_y0, old_x0 = int(row["stamp_y0"]), int(row["stamp_x0"])
        _paste(scratch.light, -stamps[index], old_y0, old_x0)
    _paste(scratch.light, stamp, y0, x0)
    stamps[index] = stamp.astype(np.float32)
    table["stamp_x0"][index], table["stamp_y0"][index] = x0, y0
    table["stamp_height"][index], table["stamp_width"][index] = size, size

    wing_image = np.zeros((len(flux), *scratch.shape))
    _paste(wing_image, wing, y0, x0)
    scratch.add_row(
        "psf_wing",
        np.any(wing_image > _WING_FOOTPRINT_SIGMA * sigma[:, None, None], axis=0),
        source_id=source_id,
        x=x,
        y=y,
        width=config.psf_wing_fwhm / pixel_scale,
        flux=wing_image.sum(axis=(1, 2)),
    )
    _spikes(scratch, config, rng, source_id, x, y, flux, sigma, psf_sigma, reference)


def _paste(image: np.ndarray, stamp: np.ndarray, y0: int, x0: int) -> None:
    """Add the (nbands, h, w) ``stamp`` whose [0, 0] pixel is (y0, x0) to ``image``, clipped."""
    stamp_box = Box(int(y0), int(x0), *stamp.shape[1:])
    inside = stamp_box.intersect(Box(0, 0, *image.shape[1:]))
    if not inside.empty:
        image[:, *inside.slices()] += stamp[:, *inside.slices(stamp_box)]


def _spikes(
    scratch: _Scratch,
    config: ArtefactConfig,
    rng: np.random.Generator,
    source_id: int,
    x: float,
    y: float,
    flux: np.ndarray,
    sigma: np.ndarray,
    psf_sigma: np.ndarray,
    reference: int,
) -> None:
    """Draw the four diffraction spikes of the star at (x, y)."""
    base_angle = rng.uniform(0.0, 0.5 * np.pi)
    s0 = config.spike_core_length
    spike_flux = 0.25 * config.spike_flux_fraction * flux  # per spike, per band
    # Length: the ridge λ(s) / (√(2π) w) falls to spike_end_sigma × σ (λ(s) ≈ F s0 / (s0 + s)²).
    ridge = spike_flux[reference] / s0 / (np.sqrt(2.0 * np.pi) * psf_sigma[reference])
    threshold = config.spike_end_sigma * sigma[reference]
    length = s0 * (np.sqrt(ridge / threshold) - 1.0) if ridge > threshold else 0.0
    if length < 1.0:
        return
    # λ0 such that each spike holds spike_flux over its length.
    linear0 = spike_flux / (s0 * (1.0 - s0 / (s0 + length)))
    reach = _LINE_DRAW_SIGMA * psf_sigma.max()
    for k in range(4):
        angle = base_angle + 0.5 * np.pi * k
        ux, uy = np.cos(angle), np.sin(angle)
        x_end, y_end = x + length * ux, y + length * uy
        ya = max(int(np.floor(min(y, y_end) - reach)), 0)
        yb = min(int(np.ceil(max(y, y_end) + reach)) + 1, scratch.shape[0])
        xa = max(int(np.floor(min(x, x_end) - reach)), 0)
        xb = min(int(np.ceil(max(x, x_end) + reach)) + 1, scratch.shape[1])
        if ya >= yb or xa >= xb:
            continue
        px, py = scratch.xx[ya:yb, xa:xb] - x, scratch.yy[ya:yb, xa:xb] - y
        along, across = px * ux + py * uy, -px * uy + py * ux
        on_axis = (along >= 0.0) & (along <= length)
        profile = np.where(on_axis, (1.0 + np.clip(along, 0.0, None) / s0) ** -2, 0.0)
        spike = np.zeros((len(flux), yb - ya, xb - xa))
        for b in range(len(flux)):
            w = psf_sigma[b]
            gauss = np.where(np.abs(across) <= _LINE_DRAW_SIGMA * w, np.exp(-0.5 * (across / w) ** 2), 0.0)
            spike[b] = linear0[b] * profile * gauss / (np.sqrt(2.0 * np.pi) * w)
        scratch.light[:, ya:yb, xa:xb] += spike
        pixels = np.zeros(scratch.shape, dtype=bool)
        pixels[ya:yb, xa:xb] = on_axis & (np.abs(across) <= max(_LINE_FOOTPRINT_SIGMA * psf_sigma.max(), 0.5))
        scratch.add_row(
            "diffraction_spike",
            pixels,
            source_id=source_id,
            x=x,
            y=y,
            x_end=x_end,
            y_end=y_end,
            length=length,
            angle=float(np.degrees(angle)),
            width=float(psf_sigma[reference]),
            flux=spike.sum(axis=(1, 2)),
        )


def _satellite_trails(
    scratch: _Scratch,
    rng: np.random.Generator,
    config: ArtefactConfig,
    sigma: np.ndarray,
    psf_sigma: np.ndarray,
    reference: int,
    area_scale: float,
    streak_bit: np.int32,
) -> None:
    """Draw the bright (masked, residue left) and faint (unmasked) satellite trails."""
    height, width = scratch.shape
    n_bright = int(rng.poisson(config.bright_trail_rate * area_scale))
    n_faint = int(rng.poisson(config.faint_trail_rate * area_scale))
    for masked in [True] * n_bright + [False] * n_faint:
        x, y = rng.uniform(-0.5, width - 0.5), rng.uniform(-0.5, height - 0.5)
        angle = rng.uniform(0.0, np.pi)
        peak = rng.uniform(*(config.bright_trail_peak_range if masked else config.faint_trail_peak_range))
        residue = rng.uniform(*config.trail_residue_range) if masked else 1.0
        across, line = scratch.line(x, y, angle)
        trail = np.stack(
            [
                np.where(across <= _LINE_DRAW_SIGMA * w, peak * s * np.exp(-0.5 * (across / w) ** 2), 0.0)
                for s, w in zip(sigma, psf_sigma, strict=True)
            ]
        )
        added = residue * trail
        scratch.light += added
        if masked:
            # Where the unsubtracted trail was brighter than 1σ in any band.
            half_width = psf_sigma.max() * np.sqrt(2.0 * np.log(max(peak / _STREAK_MASK_SIGMA, 1.0))) + 1.0
            pixels = across <= half_width
            scratch.mask[:, pixels] |= streak_bit
        else:
            pixels = across <= max(_LINE_FOOTPRINT_SIGMA * psf_sigma.max(), 0.5)
        scratch.add_row(
            "satellite_trail",
            pixels,
            mask_plane="STREAK" if masked else "",
            **line,
            width=float(psf_sigma[reference]),
            flux=added.sum(axis=(1, 2)),
        )


def _chip_gaps(
    scratch: _Scratch, rng: np.random.Generator, config: ArtefactConfig, edge_bit: np.int32
) -> None:
    """Strips with fewer inputs: more variance inside, EDGE along their borders."""
    height, width = scratch.shape
    count = int(rng.poisson(config.chip_gap_rate * np.sqrt(height * width / _PATCH_PIXELS)))
    for _ in range(count):
        x, y = rng.uniform(-0.5, width - 0.5), rng.uniform(-0.5, height - 0.5)
        angle = rng.uniform(0.0, np.pi)
        gap_width = rng.uniform(*config.chip_gap_width_range)
        factor = rng.uniform(*config.chip_gap_variance_range)
        across, line = scratch.line(x, y, angle)
        pixels = across <= 0.5 * gap_width
        border = pixels & (across > 0.5 * gap_width - config.chip_gap_edge_width)
        scratch.variance_factor[pixels] *= factor
        scratch.mask[:, border] |= edge_bit
        scratch.add_row("chip_gap", pixels, mask_plane="EDGE", **line, width=float(gap_width))


def _cosmic_rays(
    scratch: _Scratch,
    image: np.ndarray,
    rng: np.random.Generator,
    config: ArtefactConfig,
    sigma: np.ndarray,
    area_scale: float,
    cr_bit: np.int32,
) -> None:
    """Add 1-4-pixel hits, each in one band, to ``image`` (after the noise: they are not light)."""
    nbands = image.shape[0]
    height, width = scratch.shape
    steps = np.array([(0, 1), (0, -1), (1, 0), (-1, 0)])
    for _ in range(int(rng.poisson(config.cosmic_ray_rate * area_scale))):
        band = int(rng.integers(nbands))
        y, x = int(rng.integers(height)), int(rng.integers(width))
        n_pixels = int(rng.integers(1, 5))
        peak = rng.uniform(*config.cosmic_ray_peak_range) * sigma[band]
        masked = bool(rng.uniform() < config.cosmic_ray_masked_fraction)
        pixels = np.zeros(scratch.shape, dtype=bool)
        pixels[y, x] = True
        hit = np.zeros(scratch.shape)
        hit[y, x] = peak
        for _ in range(n_pixels - 1):
            step_y, step_x = steps[int(rng.integers(4))]
            y, x = int(np.clip(y + step_y, 0, height - 1)), int(np.clip(x + step_x, 0, width - 1))
            pixels[y, x] = True
            hit[y, x] = max(hit[y, x], peak * rng.uniform(0.3, 1.0))
        image[band] += hit
        if masked:
            scratch.mask[band, pixels] |= cr_bit
        scratch.add_row(
            "cosmic_ray",
            pixels,
            band=band,
            mask_plane="CR" if masked else "",
            x=float(np.mean(np.nonzero(pixels)[1])),
            y=float(np.mean(np.nonzero(pixels)[0])),
            flux=float(hit.sum()),
        )


def _saturate(
    scratch: _Scratch,
    image: np.ndarray,
    levels: np.ndarray,
    no_data: tuple[np.ndarray, dict] | None,
    grow: int,
    truth: Truth,
    bit: dict[str, np.int32],
) -> None:
    """Saturate, bleed, mask SAT and interpolate each band of ``image`` (module docstring)."""
    height = scratch.shape[0]
    structure = np.ones((3, 3), dtype=bool)
    star_xy = truth.xy[truth.is_star] if len(truth) else np.zeros((0, 2))
    star_ids = truth.ids[truth.is_star] if len(truth) else np.zeros(0, dtype=np.int64)
    for band, level in enumerate(levels):
        plane = image[band]
        above = plane > level
        if no_data is not None:
            above &= ~no_data[0]
        if not above.any():
            continue
        labels, count = ndimage.label(above, structure=structure)
        saturated = np.zeros(scratch.shape, dtype=bool)
        for label in range(1, count + 1):
            core = labels == label
            rows, cols = np.nonzero(core)
            excess_total = float(np.sum(plane[core] - level))
            bleed = np.zeros(scratch.shape, dtype=bool)
            bled = 0.0
            for col in np.unique(cols):
                in_column = rows[cols == col]
                excess = float(np.sum(plane[in_column, col] - level))
                plane[in_column, col] = level
                # Half the column's excess runs up, half down, filling pixels to the level.
                for start, step in ((in_column.max() + 1, 1), (in_column.min() - 1, -1)):
                    remaining, row = 0.5 * excess, start
                    while remaining > 0.0 and 0 <= row < height:
                        room = level - plane[row, col]
                        if room > 0.0:
                            taken = min(room, remaining)
                            plane[row, col] += taken
                            remaining -= taken
                            bled += taken
                        if not core[row, col]:
                            bleed[row, col] = True
                        row += step
            core_grown = ndimage.binary_dilation(core, structure, iterations=grow) if grow else core
            bleed_grown = ndimage.binary_dilation(bleed, structure, iterations=grow) if grow else bleed
            bleed_grown &= ~core_grown
            saturated |= core_grown | bleed_grown
            cy, cx = float(rows.mean()), float(cols.mean())
            source_id = 0
            if len(star_ids):
                distance = np.hypot(star_xy[:, 0] - cx, star_xy[:, 1] - cy)
                nearest = int(np.argmin(distance))
                if distance[nearest] <= max(5.0, 0.5 * (np.ptp(rows) + np.ptp(cols)) + 3.0):
                    source_id = int(star_ids[nearest])
            scratch.add_row(
                "saturated_core",
                core_grown,
                source_id=source_id,
                band=band,
                mask_plane="SAT",
                x=cx,
                y=cy,
                width=float(2.0 * np.sqrt(core_grown.sum() / np.pi)),
                flux=excess_total,
            )
            if bleed_grown.any():
                trail_rows, trail_cols = np.nonzero(bleed_grown)
                trail_x = float(trail_cols.mean())
                scratch.add_row(
                    "bleed_trail",
                    bleed_grown,
                    source_id=source_id,
                    band=band,
                    mask_plane="SAT",
                    x=trail_x,
                    y=float(trail_rows.min()),
                    x_end=trail_x,
                    y_end=float(trail_rows.max()),
                    length=float(trail_rows.max() - trail_rows.min() + 1),
                    angle=90.0,
                    width=float(np.unique(trail_cols).size),
                    flux=bled,
                )
        usable = ~saturated
        if no_data is not None:
            saturated &= ~no_data[0]
            usable &= ~no_data[0]
        scratch.mask[band, saturated] |= bit["SAT"] | bit["INTRP"]
        _interpolate_rows(plane, saturated, usable, level)


def _interpolate_rows(plane: np.ndarray, masked: np.ndarray, usable: np.ndarray, fill: float) -> None:
    """Replace ``plane``'s ``masked`` pixels by linear interpolation along their row, in place.

    Each masked span takes the line between the nearest ``usable`` pixels on
    its left and right (the one neighbour's value at a scene edge); a row
    without usable pixels takes ``fill``.
    """
    columns = np.arange(plane.shape[1])
    for row in np.flatnonzero(masked.any(axis=1)):
        bad = masked[row]
        good = usable[row]
        if not good.any():
            plane[row] = fill
            continue
        plane[row, bad] = np.interp(columns[bad], columns[good], plane[row, good])


def _artefact_table(rows: list[dict[str, Any]], bands: tuple[str, ...]) -> Table:
    """The ``ARTEFACTS`` table (with its ``footprint`` object column) of the recorded ``rows``."""
    unknown = sorted({row["type"] for row in rows} - set(ARTEFACT_TYPES))
    if unknown:  # a programming error: the format lists every type
        raise ValueError(f"Artefact type(s) {unknown} are not in the scene format's ARTEFACT_TYPES.")
    table = Table()
    table["id"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    table["type"] = np.array([row["type"] for row in rows], dtype="U20")
    table["source_id"] = np.array([row["source_id"] for row in rows], dtype=np.int64)
    table["band"] = np.array(["" if row["band"] is None else bands[row["band"]] for row in rows], dtype="U8")
    table["masked"] = np.array([row["masked"] for row in rows], dtype=bool)
    table["mask_plane"] = np.array([row["mask_plane"] for row in rows], dtype="U20")
    for name in ("x", "y", "x_end", "y_end", "length", "angle", "width"):
        table[name] = np.array([row[name] for row in rows], dtype=np.float64)
    table["flux"] = np.array([row["flux"] for row in rows], dtype=np.float64).reshape(len(rows), len(bands))
    footprints = np.empty(len(rows), dtype=object)
    footprints[:] = [row["footprint"] for row in rows]
    table["footprint"] = footprints
    for name in ("x", "y", "x_end", "y_end", "length", "width"):
        table[name].unit = "pix"
    table["angle"].unit = "deg"
    table["flux"].unit = "nJy"
    return table
