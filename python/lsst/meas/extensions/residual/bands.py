"""LSST band names and their canonical order."""

from __future__ import annotations

__all__ = ["LSST_BANDS", "parse_bands", "check_band_order"]

from collections.abc import Iterable

#: The six LSST bands in wavelength order; every multi-band array in this
#: package is ordered this way (a subset keeps the order).
LSST_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")


def parse_bands(bands: str | Iterable[str]) -> tuple[str, ...]:
    """Parse a band list such as ``"ugrizy"``, ``"g,r,i"`` or ``["g", "r"]``.

    Parameters
    ----------
    bands : `str` or iterable of `str`
        Band names. A string is split on commas if it has any, else into
        single characters.

    Returns
    -------
    bands : `tuple` [`str`]
        Band names in LSST wavelength order.

    Raises
    ------
    ValueError
        If the list is empty, has an unknown band or a repeated band.
    """
    if isinstance(bands, str):
        text = bands.strip()
        names = [b.strip() for b in text.split(",")] if "," in text else list(text)
    else:
        names = [str(b).strip() for b in bands]
    names = [b for b in names if b]
    if not names:
        raise ValueError("No bands given; expected a subset of 'ugrizy'.")
    unknown = [b for b in names if b not in LSST_BANDS]
    if unknown:
        raise ValueError(f"Unknown band(s) {unknown}; LSST bands are {','.join(LSST_BANDS)}.")
    repeated = sorted({b for b in names if names.count(b) > 1})
    if repeated:
        raise ValueError(f"Band(s) {repeated} given more than once.")
    return tuple(b for b in LSST_BANDS if b in names)


def check_band_order(bands: Iterable[str], what: str = "bands") -> tuple[str, ...]:
    """Check that ``bands`` are known LSST bands in wavelength order.

    Unlike `parse_bands`, which sorts, this refuses an out-of-order list:
    data arrays indexed by such a list would be silently mislabelled if it
    were reordered.

    Raises
    ------
    ValueError
        If a band is unknown, repeated or out of order.
    """
    given = tuple(bands)
    ordered = parse_bands(given)
    if ordered != given:
        raise ValueError(
            f"{what} {','.join(given)} are not in LSST wavelength order (expected {','.join(ordered)})."
        )
    return given
