"""Draw the galaxies and stars of a scene: positions, magnitudes, colours, shapes.

Number counts follow power laws in the i band, dN/dm ∝ 10^(α m): α = 0.31 for
galaxies (the LSST Science Book's i-band counts) and a flatter α = 0.1 for
high-latitude stars. Galaxies are a de Vaucouleurs bulge plus an exponential
disk with their own SEDs (CWW E for bulges, Sbc/Scd/Im for disks) at one
redshift, so colour gradients and colour-magnitude trends come out of the
templates. Sizes shrink with magnitude as in deep HST counts (median disk
half-light radius ≈ 0.7″ at i = 22, 0.3″ at i = 26).

Two options widen this (both draw from their own generator, so the rest of
the population is the same with or without them):

- ``size_relation="compact"``: median disk half-light radius
  0.7″ × 10^(−0.15 (i − 22)) with 0.3 dex log-normal scatter and a 0.05″
  floor (0.25″ at i = 25, 0.13″ at i = 27), so compact, barely resolved
  galaxies are common at the faint end, as in HST deep fields.
- ``knot_fraction``: that fraction of galaxies carries star-forming knots:
  10–50% of the disk's i-band flux moved into 5–30 point-like knots placed
  by `galsim.RandomKnots` on the disk's exponential profile (and sheared with
  it), with the SED of the bluest template (CWW Im), so knots also change
  the colours across the galaxy.
"""

from __future__ import annotations

__all__ = ["GalaxySizes", "PopulationConfig", "draw_population"]

import dataclasses
from typing import Literal

import numpy as np
from astropy.table import Table

from .sed import GALAXY_TEMPLATES, galaxy_colors, star_colors
from .survey import depth, mag_to_flux

_GALAXY_COUNT_SLOPE = 0.31
_STAR_COUNT_SLOPE = 0.10
_DISK_TEMPLATES = GALAXY_TEMPLATES[1:]

#: Size–magnitude relations of the galaxies.
GalaxySizes = Literal["standard", "compact"]
# Standard relation: log10 r50 = log10(0.7″) - 0.1 (i - 22), 0.15 dex scatter, in [0.08″, 4″].
_STANDARD_SIZES = {"slope": 0.1, "scatter": 0.15, "floor": 0.08}
# Compact relation: steeper and wider, down to 0.05″.
_COMPACT_SIZES = {"slope": 0.15, "scatter": 0.3, "floor": 0.05}
_SIZE_AT_22 = 0.7
_MAX_DISK_HLR = 4.0
# Star-forming knots: how many, what share of the disk's i-band light, which SED.
_KNOT_COUNT_RANGE = (5, 30)
_KNOT_SHARE_RANGE = (0.1, 0.5)
_KNOT_TEMPLATE = "Im"


@dataclasses.dataclass
class PopulationConfig:
    """How many sources to draw and from which distributions."""

    galaxy_density: float = 60.0
    """Galaxies per arcmin² brighter than the i-band 5σ depth."""
    star_density: float = 8.0
    """Stars per arcmin² brighter than the i-band 5σ depth."""
    faint_extension: float = 0.5
    """Sources are drawn down to this many magnitudes below the i-band depth
    (undetectable ones still add to the blends)."""
    galaxy_bright_limit: float = 18.0
    star_bright_limit: float = 17.0
    early_type_fraction: float = 0.25
    """Fraction of bulge-dominated galaxies (bulge-to-total 0.5-1)."""
    depth: str | float = "10yr"
    """``"10yr"``, ``"1yr"`` or the coadd's length in years."""
    size_relation: GalaxySizes = "standard"
    """Galaxy size–magnitude relation: ``"standard"`` or ``"compact"`` (see the module)."""
    knot_fraction: float = 0.0
    """Fraction of galaxies with star-forming knots."""


def _power_law_mags(rng, n, slope, bright, faint):
    """Inverse-CDF draw from dN/dm ∝ 10^(slope m) on [bright, faint]."""
    lo, hi = 10.0 ** (slope * bright), 10.0 ** (slope * faint)
    return np.log10(lo + rng.uniform(size=n) * (hi - lo)) / slope


def _expected_count(density, area, slope, bright, limit, faint):
    """Sources on [bright, faint] given ``density`` per arcmin² on [bright, limit]."""
    total = 10.0 ** (slope * faint) - 10.0 ** (slope * bright)
    to_limit = 10.0 ** (slope * limit) - 10.0 ** (slope * bright)
    return density * area * total / to_limit


def _shears(rng, n, sigma, max_g):
    g = np.minimum(np.abs(rng.normal(0.0, sigma, size=n)), max_g)
    angle = rng.uniform(0.0, np.pi, size=n)
    return g * np.cos(2 * angle), g * np.sin(2 * angle), angle


def _compact_disk_hlr(rng: np.random.Generator, mag_i: np.ndarray) -> np.ndarray:
    """Disk half-light radii (arcsec) from the compact size–magnitude relation."""
    relation = _COMPACT_SIZES
    log_size = np.log10(_SIZE_AT_22) - relation["slope"] * (mag_i - 22.0)
    return np.clip(
        10.0 ** (log_size + rng.normal(0.0, relation["scatter"], len(mag_i))),
        relation["floor"],
        _MAX_DISK_HLR,
    )


def draw_population(
    rng: np.random.Generator,
    shape: tuple[int, int],
    bands: tuple[str, ...],
    pixel_scale: float,
    config: PopulationConfig,
    variety: np.random.Generator | None = None,
) -> Table:
    """Draw the sources of a scene.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random numbers of the standard population.
    shape : `tuple` [`int`, `int`]
        (height, width) of the scene, pixels.
    bands : `tuple` [`str`]
        Bands.
    pixel_scale : `float`
        arcsec/pixel.
    config : `PopulationConfig`
        Counts and distributions.
    variety : `numpy.random.Generator`, optional
        Random numbers of the compact sizes and the knots (needed when
        ``config`` asks for them); ``rng`` draws the same numbers either way.

    Returns
    -------
    table : `astropy.table.Table`
        One row per source with ``class``, ``x``, ``y``, ``mag`` and ``flux``
        (per band, the total), ``redshift``, ``bulge_fraction`` (i band),
        ``disk_hlr``/``bulge_hlr`` (arcsec), disk and bulge shears
        ``disk_g1``, ``disk_g2``, ``bulge_g1``, ``bulge_g2``, per-band
        bulge flux ``bulge_flux`` and knot flux ``knot_flux`` (the smooth
        disk has the rest), and ``knot_count`` and ``knot_seed`` (the
        `galsim.RandomKnots` that place the knots; 0 knots for most).
        Stars have zero sizes, shears and knots.
    """
    if config.size_relation not in ("standard", "compact"):
        raise ValueError(f"Unknown size relation {config.size_relation!r}; choose 'standard' or 'compact'.")
    if not 0.0 <= config.knot_fraction <= 1.0:
        raise ValueError(f"knot_fraction must be in [0, 1], not {config.knot_fraction}.")
    widened = config.size_relation != "standard" or config.knot_fraction > 0.0
    if widened and variety is None:
        raise ValueError("Compact sizes and knots need their own random generator (variety=).")
    size_rng, knot_rng = variety.spawn(2) if widened else (None, None)
    height, width = shape
    area = height * width * (pixel_scale / 60.0) ** 2
    limit = depth("i", config.depth)
    faint = limit + config.faint_extension

    n_gal = rng.poisson(
        _expected_count(
            config.galaxy_density, area, _GALAXY_COUNT_SLOPE, config.galaxy_bright_limit, limit, faint
        )
    )
    n_star = rng.poisson(
        _expected_count(config.star_density, area, _STAR_COUNT_SLOPE, config.star_bright_limit, limit, faint)
    )
    nbands = len(bands)

    # Galaxies.
    mag_i = _power_law_mags(rng, n_gal, _GALAXY_COUNT_SLOPE, config.galaxy_bright_limit, faint)
    z_median = np.clip(0.2 + 0.15 * (mag_i - 20.0), 0.1, 1.6)
    redshift = np.clip(z_median * np.exp(rng.normal(0.0, 0.4, size=n_gal)), 0.02, 3.0)
    early = rng.uniform(size=n_gal) < config.early_type_fraction
    bulge_fraction = np.where(early, rng.uniform(0.5, 1.0, n_gal), rng.uniform(0.0, 0.35, n_gal))
    standard = _STANDARD_SIZES
    disk_hlr = np.clip(
        10.0
        ** (
            np.log10(_SIZE_AT_22)
            - standard["slope"] * (mag_i - 22.0)
            + rng.normal(0.0, standard["scatter"], n_gal)
        ),
        standard["floor"],
        _MAX_DISK_HLR,
    )
    if config.size_relation == "compact":
        disk_hlr = _compact_disk_hlr(size_rng, mag_i)
    bulge_hlr = disk_hlr * rng.uniform(0.3, 0.7, n_gal)
    disk_g1, disk_g2, angle = _shears(rng, n_gal, 0.3, 0.75)
    bulge_g = np.minimum(np.hypot(disk_g1, disk_g2), rng.uniform(0.0, 0.3, n_gal))
    bulge_g1, bulge_g2 = bulge_g * np.cos(2 * angle), bulge_g * np.sin(2 * angle)
    disk_template = rng.integers(0, len(_DISK_TEMPLATES), n_gal)

    flux_i = mag_to_flux(mag_i)
    bulge_flux = np.zeros((n_gal, nbands))
    disk_flux = np.zeros((n_gal, nbands))
    if n_gal:
        bulge_color = galaxy_colors("E", redshift, bands)
        bulge_flux = (bulge_fraction * flux_i)[:, None] * 10.0 ** (-0.4 * bulge_color)
        for index, template in enumerate(_DISK_TEMPLATES):
            chosen = disk_template == index
            if np.any(chosen):
                color = galaxy_colors(template, redshift[chosen], bands)
                disk_flux[chosen] = ((1 - bulge_fraction[chosen]) * flux_i[chosen])[:, None] * 10.0 ** (
                    -0.4 * color
                )
    knot_flux = np.zeros((n_gal, nbands))
    knot_count = np.zeros(n_gal, dtype=np.int32)
    knot_seed = np.zeros(n_gal, dtype=np.int64)
    if config.knot_fraction > 0.0 and n_gal:
        # Every galaxy draws the same numbers, so the knotted ones depend only on the fraction.
        knotted = knot_rng.uniform(size=n_gal) < config.knot_fraction
        share = knot_rng.uniform(*_KNOT_SHARE_RANGE, n_gal)
        count = knot_rng.integers(_KNOT_COUNT_RANGE[0], _KNOT_COUNT_RANGE[1] + 1, n_gal)
        seed = knot_rng.integers(1, 2**31 - 1, n_gal)
        if np.any(knotted):
            knot_share = np.where(knotted, share, 0.0)
            knot_i = knot_share * (1 - bulge_fraction) * flux_i
            knot_flux[knotted] = knot_i[knotted, None] * 10.0 ** (
                -0.4 * galaxy_colors(_KNOT_TEMPLATE, redshift[knotted], bands)
            )
            disk_flux[knotted] *= (1.0 - knot_share[knotted])[:, None]
            knot_count[knotted] = count[knotted]
            knot_seed[knotted] = seed[knotted]

    # Stars: black bodies, more cool than hot ones.
    star_mag_i = _power_law_mags(rng, n_star, _STAR_COUNT_SLOPE, config.star_bright_limit, faint)
    temperature = 2800.0 + 9000.0 * rng.uniform(size=n_star) ** 2
    star_flux = (
        mag_to_flux(star_mag_i)[:, None] * 10.0 ** (-0.4 * star_colors(temperature, bands))
        if n_star
        else (np.zeros((0, nbands)))
    )

    n = n_gal + n_star
    galaxy_flux = bulge_flux + disk_flux
    if np.any(knot_count):
        galaxy_flux = galaxy_flux + knot_flux
    flux = np.concatenate([galaxy_flux, star_flux])
    zeros = np.zeros(n_star)
    table = Table()
    table["class"] = np.array(["galaxy"] * n_gal + ["star"] * n_star, dtype="U6")
    table["x"] = rng.uniform(-0.5, width - 0.5, n)
    table["y"] = rng.uniform(-0.5, height - 0.5, n)
    table["flux"] = flux
    table["redshift"] = np.concatenate([redshift, zeros])
    table["bulge_fraction"] = np.concatenate([bulge_fraction, zeros])
    table["disk_hlr"] = np.concatenate([disk_hlr, zeros])
    table["bulge_hlr"] = np.concatenate([bulge_hlr, zeros])
    table["disk_g1"] = np.concatenate([disk_g1, zeros])
    table["disk_g2"] = np.concatenate([disk_g2, zeros])
    table["bulge_g1"] = np.concatenate([bulge_g1, zeros])
    table["bulge_g2"] = np.concatenate([bulge_g2, zeros])
    table["bulge_flux"] = np.concatenate([bulge_flux, np.zeros((n_star, nbands))])
    table["temperature"] = np.concatenate([np.zeros(n_gal), temperature])
    table["knot_flux"] = np.concatenate([knot_flux, np.zeros((n_star, nbands))])
    table["knot_count"] = np.concatenate([knot_count, np.zeros(n_star, dtype=np.int32)])
    table["knot_seed"] = np.concatenate([knot_seed, np.zeros(n_star, dtype=np.int64)])
    return table
