"""Colours of galaxies and stars through the LSST bandpasses.

Galaxy colours come from the Coleman-Wu-Weedman templates shipped with galsim,
redshifted; star colours from black bodies. Both go through galsim's LSST
total-throughput bandpasses. Colours are tabulated once per process on a grid
(redshift or temperature) and interpolated.
"""

from __future__ import annotations

__all__ = ["GALAXY_TEMPLATES", "galaxy_colors", "star_colors"]

import functools

import numpy as np

#: CWW templates shipped with galsim; "E" is used for bulges, the others for disks.
GALAXY_TEMPLATES = ("E", "Sbc", "Scd", "Im")
_REDSHIFT_GRID = np.linspace(0.0, 3.0, 61)
_TEMPERATURE_GRID = np.geomspace(2500.0, 30000.0, 60)
# hc/k in nm K, for the Planck function.
_HC_OVER_K = 1.438777e7


@functools.cache
def _bandpasses(bands: tuple[str, ...]):
    import galsim

    return [galsim.Bandpass(f"LSST_{b}.dat", "nm").withZeropoint("AB") for b in bands]


@functools.cache
def _galaxy_color_table(template: str, bands: tuple[str, ...]) -> np.ndarray:
    """(nz, nbands) AB magnitudes of a unit-normalised template at each grid redshift."""
    import galsim

    sed = galsim.SED(f"CWW_{template}_ext.sed", "A", "flambda")
    bandpasses = _bandpasses(bands)
    return np.array([[sed.atRedshift(z).calculateMagnitude(bp) for bp in bandpasses] for z in _REDSHIFT_GRID])


@functools.cache
def _star_color_table(bands: tuple[str, ...]) -> np.ndarray:
    """(ntemp, nbands) AB magnitudes of black bodies at the grid temperatures."""
    import galsim

    bandpasses = _bandpasses(bands)
    table = []
    for temperature in _TEMPERATURE_GRID:

        def planck(wave_nm, temperature=temperature):
            wave_nm = np.asarray(wave_nm, dtype=np.float64)
            return wave_nm**-5 / np.expm1(_HC_OVER_K / (wave_nm * temperature))

        sed = galsim.SED(planck, "nm", "flambda")
        table.append([sed.calculateMagnitude(bp) for bp in bandpasses])
    return np.array(table)


def _relative(mags: np.ndarray, bands: tuple[str, ...], reference: str) -> np.ndarray:
    return mags - mags[:, [bands.index(reference)]]


def galaxy_colors(template: str, redshift, bands: tuple[str, ...], reference: str = "i") -> np.ndarray:
    """Magnitude offsets m_band - m_reference of a template at ``redshift``.

    Parameters
    ----------
    template : `str`
        One of `GALAXY_TEMPLATES`.
    redshift : `float` or array
        Redshift(s) in [0, 3].
    bands : `tuple` [`str`]
        Bands wanted; ``reference`` is added internally if absent.

    Returns
    -------
    offsets : `numpy.ndarray`
        (N, nbands) colour offsets.
    """
    if template not in GALAXY_TEMPLATES:
        raise ValueError(f"Unknown galaxy template {template!r}; choose from {GALAXY_TEMPLATES}.")
    all_bands = tuple(dict.fromkeys((*bands, reference)))
    table = _relative(_galaxy_color_table(template, all_bands), all_bands, reference)
    z = np.clip(np.atleast_1d(np.asarray(redshift, dtype=np.float64)), _REDSHIFT_GRID[0], _REDSHIFT_GRID[-1])
    columns = [np.interp(z, _REDSHIFT_GRID, table[:, all_bands.index(b)]) for b in bands]
    return np.column_stack(columns)


def star_colors(temperature, bands: tuple[str, ...], reference: str = "i") -> np.ndarray:
    """Magnitude offsets m_band - m_reference of black bodies at ``temperature`` (K)."""
    all_bands = tuple(dict.fromkeys((*bands, reference)))
    table = _relative(_star_color_table(all_bands), all_bands, reference)
    log_t = np.log(np.clip(np.atleast_1d(temperature), _TEMPERATURE_GRID[0], _TEMPERATURE_GRID[-1]))
    columns = [np.interp(log_t, np.log(_TEMPERATURE_GRID), table[:, all_bands.index(b)]) for b in bands]
    return np.column_stack(columns)
