"""LSST mask planes: names, bits, the FITS header that declares them, and which make a pixel bad.

An LSST mask is an integer image whose bits are named planes. afw writes the
names into the header of the MASK HDU as ``MP_<NAME> = <bit>`` (``MP_BAD =
0``, ``MP_SAT = 1``...); that is the convention here, and a scene's MASK
extension carries those cards. A mask without them (a plain integer image)
keeps this project's older meaning: nonzero is a bad pixel.

Which planes make a pixel unusable is a choice: DRP's deblender gives zero
weight to its ``badMask`` planes (BAD, CR, NO_DATA, SAT, SUSPECT, EDGE). Here
masked satellite trails (STREAK) are bad too, since a trail's residue would
otherwise be fitted as sources. INTRP (interpolated) pixels keep their
weight, as in DRP, unless they also carry a bad plane (saturated cores are
SAT and INTRP).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MASK_PLANES",
    "DEFAULT_BAD_PLANES",
    "BRIGHT_STAR_PLANES",
    "MaskPlaneError",
    "check_planes",
    "plane_bits",
    "planes_from_header",
    "planes_to_header",
    "bad_pixels",
]

from collections.abc import Iterable, Mapping

import numpy as np

from .errors import InputError

#: The planes afw defines for every mask, with its bit numbers, then those a coadd adds (their
#: order, and so their bits, vary between repositories: a scene's own header is what counts).
DEFAULT_MASK_PLANES: dict[str, int] = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
    "STREAK": 9,
    "CLIPPED": 10,
    "INEXACT_PSF": 11,
    "SENSOR_EDGE": 12,
    "REJECTED": 13,
}

#: Planes whose pixels get zero weight: DRP's deblender ``badMask`` plus STREAK (module doc).
DEFAULT_BAD_PLANES: tuple[str, ...] = ("BAD", "CR", "NO_DATA", "SAT", "SUSPECT", "EDGE", "STREAK")

#: Planes that mark a bright star's saturated core and bleed trails.
BRIGHT_STAR_PLANES: tuple[str, ...] = ("SAT",)

_PREFIX = "MP_"
_MAX_BITS = 31  # the scene format stores masks as int32


class MaskPlaneError(InputError):
    """A mask-plane declaration that is inconsistent or names an unknown plane."""


def check_planes(planes: Mapping[str, int]) -> dict[str, int]:
    """``planes`` as a dict, checked: upper-case names, distinct bits in 0..30 (int32 masks)."""
    checked: dict[str, int] = {}
    for name, bit in planes.items():
        if not isinstance(name, str) or not name or name != name.upper():
            raise MaskPlaneError(f"Mask plane names are upper-case strings, not {name!r}.")
        if not isinstance(bit, int | np.integer) or not 0 <= int(bit) < _MAX_BITS:
            raise MaskPlaneError(f"Mask plane {name} has bit {bit!r}; bits are integers 0..{_MAX_BITS - 1}.")
        checked[name] = int(bit)
    bits = list(checked.values())
    if len(set(bits)) != len(bits):
        shared = sorted({b for b in bits if bits.count(b) > 1})
        raise MaskPlaneError(f"Mask planes share bit(s) {shared}: {checked}.")
    return checked


def plane_bits(planes: Mapping[str, int], names: Iterable[str], *, missing_ok: bool = True) -> int:
    """The bit mask (OR of ``1 << bit``) of the planes ``names``.

    Planes the mask does not declare add nothing when ``missing_ok``
    (a repository without STREAK has no streak pixels), else raise.
    """
    value = 0
    for name in names:
        if name in planes:
            value |= 1 << int(planes[name])
        elif not missing_ok:
            raise MaskPlaneError(f"The mask has no plane {name!r}; it has {', '.join(planes)}.")
    return value


def planes_from_header(header: Mapping[str, object]) -> dict[str, int] | None:
    """The ``MP_<NAME> = bit`` cards of a MASK header, or None if it has none."""
    planes = {
        str(key)[len(_PREFIX) :].upper(): value
        for key, value in header.items()
        if str(key).upper().startswith(_PREFIX)
    }
    return check_planes(planes) if planes else None


def planes_to_header(planes: Mapping[str, int]) -> list[tuple[str, int, str]]:
    """FITS cards (key, bit, comment) declaring ``planes`` as afw does, in bit order.

    Names longer than five characters need HIERARCH cards (``MP_`` + 5 fits
    a plain 8-character key); astropy writes those itself.
    """
    checked = check_planes(planes)
    return [
        (f"{_PREFIX}{name}", bit, f"mask plane {name}")
        for name, bit in sorted(checked.items(), key=lambda item: item[1])
    ]


def bad_pixels(
    mask: np.ndarray, planes: Mapping[str, int] | None, bad_planes: Iterable[str] = DEFAULT_BAD_PLANES
) -> np.ndarray:
    """Boolean array: pixels of ``mask`` that are bad.

    With declared ``planes``, a pixel is bad if it has a bit of one of
    ``bad_planes``; without (a plain integer mask), if it is nonzero.
    """
    mask = np.asarray(mask)
    if planes is None:
        return mask != 0
    return np.bitwise_and(mask, plane_bits(planes, bad_planes)) != 0
