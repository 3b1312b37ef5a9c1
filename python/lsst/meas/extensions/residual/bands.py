"""LSST band names and their canonical order."""

from __future__ import annotations

__all__ = ["LSST_BANDS", "parse_bands", "check_band_order"]

from collections.abc import Iterable

from .errors import InputError

#: The six LSST bands in wavelength order; every multi-band array in this
#: package is ordered this way (a subset keeps the order).
LSST_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")


def parse_bands(bands: str | Iterable[str]) -> tuple[str, ...]:
    """Parse a band list such as ``"ugrizy"``, ``"g,r,i"`` or ``["g", "r"]``.

    Parameters
    ----------
    bands : `str` or iterable of `str`
        Band names. A string is split on commas if it has any, else into
        single characters (whitespace ignored).

    Returns
    -------
    bands : `tuple` [`str`]
        Band names in LSST wavelength order.

    Raises
    ------
    InputError
        If the list is empty, has an empty entry (a stray comma), an unknown
        band or a repeated band.
    """
    if isinstance(bands, str):
        text = bands.strip()
        if "," in text:
            names = [b.strip() for b in text.split(",")]
            _check_no_empty_entry(names, f"Band list {bands!r}")
        else:
            names = [b for b in text if not b.isspace()]
    else:
        names = [str(b).strip() for b in bands]
        _check_no_empty_entry(names, f"Band list {list(bands)!r}")
    if not names:
        raise InputError("No bands given; expected a subset of 'ugrizy'.")
    unknown = [b for b in names if b not in LSST_BANDS]
    if unknown:
        raise InputError(f"Unknown band(s) {unknown}; LSST bands are {','.join(LSST_BANDS)}.")
    repeated = sorted({b for b in names if names.count(b) > 1})
    if repeated:
        raise InputError(f"Band(s) {repeated} given more than once.")
    return tuple(b for b in LSST_BANDS if b in names)


def check_band_order(bands: Iterable[str], what: str = "bands") -> tuple[str, ...]:
    """Check that ``bands`` are known LSST bands in wavelength order.

    Unlike `parse_bands`, which sorts, this refuses an out-of-order list:
    data arrays indexed by such a list would be silently mislabelled if it
    were reordered.

    Raises
    ------
    InputError
        If a band is empty, unknown, repeated or out of order.
    """
    given = tuple(bands)
    _check_no_empty_entry(given, f"{what} {','.join(given)!r}")
    ordered = parse_bands(given)
    if ordered != given:
        raise InputError(
            f"{what} {','.join(given)} are not in LSST wavelength order (expected {','.join(ordered)})."
        )
    return given


def _check_no_empty_entry(names, what: str) -> None:
    """Refuse an empty band name: a stray comma, as in ``'u,g,r,'``, is a typo to point out."""
    empty = [i + 1 for i, name in enumerate(names) if not str(name).strip()]
    if empty and len(empty) == len(names):
        raise InputError(f"{what} names no band; expected a subset of 'ugrizy'.")
    if empty:
        where = ", ".join(str(i) for i in empty)
        raise InputError(
            f"{what} has an empty band name at position {where} of {len(names)} (a stray or doubled comma?)."
        )
