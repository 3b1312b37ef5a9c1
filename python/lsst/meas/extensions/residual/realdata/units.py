"""Pixel units of survey images and their conversion to nJy (the scene format's unit)."""

from __future__ import annotations

__all__ = ["UNITS", "njy_per_unit"]

from ..errors import InputError
from ..simulation.survey import mag_to_flux

#: Pixel units `njy_per_unit` knows: ``nJy``; ``nanomaggies`` (SDSS/DESI Legacy Surveys: 1 nmgy is
#: AB 22.5, 3631 nJy); ``counts`` (an image unit of AB magnitude ``zeropoint``: HSC coadds have 27,
#: so 1 count is 57.5 nJy).
UNITS = ("nJy", "nanomaggies", "counts")


def njy_per_unit(unit: str, zeropoint: float | None = None) -> float:
    """nJy of one pixel unit.

    Parameters
    ----------
    unit : `str`
        One of `UNITS` (case-insensitive; ``nmgy`` is nanomaggies).
    zeropoint : `float`, optional
        AB magnitude of one count; required for ``counts``, refused otherwise.

    Raises
    ------
    InputError
        If the unit is unknown, or the zero point missing or given where it means nothing.
    """
    name = {
        "njy": "nJy",
        "nanomaggies": "nanomaggies",
        "nanomaggy": "nanomaggies",
        "nmgy": "nanomaggies",
    }.get(unit.strip().lower(), unit.strip().lower())
    if name == "counts":
        if zeropoint is None:
            raise InputError("Images in counts need a zero point (the AB magnitude of one count).")
        return float(mag_to_flux(float(zeropoint)))
    if name not in UNITS:
        raise InputError(f"Unknown image unit {unit!r}; known: {', '.join(UNITS)}.")
    if zeropoint is not None:
        raise InputError(f"A zero point goes with images in counts, not in {name}.")
    return 1.0 if name == "nJy" else float(mag_to_flux(22.5))
