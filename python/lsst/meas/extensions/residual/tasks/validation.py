"""Config checks shared by the tasks (used in pex_config ``validate``)."""

from __future__ import annotations

__all__ = ["validate_band_list"]

from collections.abc import Iterable

from ..bands import check_band_order


def validate_band_list(bands: Iterable[str] | None, field: str, allow_empty: bool = False) -> tuple[str, ...]:
    """Check a band-list config field: known LSST bands, no repeats, LSST order.

    Raises
    ------
    ValueError
        Naming ``field`` and the problem.
    """
    bands = tuple(bands or ())
    if not bands:
        if allow_empty:
            return bands
        raise ValueError(f"{field}: at least one band is required.")
    try:
        return check_band_order(bands, field)
    except ValueError as err:
        raise ValueError(f"{err} Band-indexed data would be mislabelled; list the bands in order.") from None
