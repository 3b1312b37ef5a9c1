"""LSST survey numbers used by the simulator.

Depths are 5σ point-source AB magnitudes of the 10-year coadd (Ivezić et al.
2019, ApJ 873, 111, Table 1). A coadd of N years has N/10 of the visits, so
its noise is √(10/N) larger and its depth shallower by 1.25 log10(10/N) mag:
1.25 mag for the 1-year coadd. Sky brightnesses are dark-sky zenith values in
AB mag/arcsec² from the same table.
"""

from __future__ import annotations

__all__ = [
    "PIXEL_SCALE",
    "NJY_ZEROPOINT",
    "DEPTH_10YR",
    "SKY_BRIGHTNESS",
    "EFFECTIVE_WAVELENGTH",
    "NOMINAL_PSF_FWHM",
    "RUBIN_DIAMETER",
    "RUBIN_OBSCURATION",
    "depth",
    "mag_to_flux",
    "flux_to_mag",
]

import numpy as np

#: LSST pixel scale, arcsec/pixel.
PIXEL_SCALE = 0.2
#: AB magnitude of 1 nJy: images are in nJy, as LSST coadds.
NJY_ZEROPOINT = 31.4

DEPTH_10YR = {"u": 26.1, "g": 27.4, "r": 27.5, "i": 26.8, "z": 26.1, "y": 24.9}
SKY_BRIGHTNESS = {"u": 22.99, "g": 22.26, "r": 21.20, "i": 20.48, "z": 19.60, "y": 18.61}
#: Effective wavelengths (nm) of the LSST bandpasses, for the PSF's chromatic scaling.
EFFECTIVE_WAVELENGTH = {"u": 367.0, "g": 482.5, "r": 622.2, "i": 754.5, "z": 869.1, "y": 971.0}
#: Seeing (r band FWHM, arcsec) at which the tabulated depths are reached.
NOMINAL_PSF_FWHM = 0.7
#: Diameter (m) of Rubin's primary mirror, for the diffraction part of the PSF.
RUBIN_DIAMETER = 8.36
#: Linear central obscuration of Rubin's pupil (the 5.1 m inner edge of M1 over
#: its 8.36 m; imSim's value).
RUBIN_OBSCURATION = 0.61

_DEPTH_OFFSET = {"10yr": 0.0, "1yr": -2.5 * np.log10(np.sqrt(10.0))}


def depth(band: str, survey_depth: str | float = "10yr") -> float:
    """5σ point-source depth (AB mag) of ``band`` in the ``survey_depth`` coadd.

    Parameters
    ----------
    band : `str`
        LSST band.
    survey_depth : `str` or `float`
        ``"10yr"`` or ``"1yr"``, or the coadd's length in years (any
        positive number): 1.25 log10(years / 10) mag from the 10-year depth.
    """
    if isinstance(survey_depth, str):
        if survey_depth not in _DEPTH_OFFSET:
            raise ValueError(f"Unknown depth {survey_depth!r}; choose one of {', '.join(_DEPTH_OFFSET)}.")
        return DEPTH_10YR[band] + _DEPTH_OFFSET[survey_depth]
    years = float(survey_depth)
    if not years > 0.0:
        raise ValueError(f"A coadd depth in years must be positive, not {survey_depth!r}.")
    return DEPTH_10YR[band] + 1.25 * np.log10(years / 10.0)


def mag_to_flux(mag):
    """AB magnitude to flux in nJy."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - NJY_ZEROPOINT))


def flux_to_mag(flux):
    """Flux in nJy to AB magnitude (NaN for non-positive flux)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, NJY_ZEROPOINT - 2.5 * np.log10(np.where(flux > 0, flux, 1.0)), np.nan)
