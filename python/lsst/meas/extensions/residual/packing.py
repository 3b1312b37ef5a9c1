"""Many small arrays of different shapes stored as one flat array (the project's file layout).

The scene file's ``TRUTH_STAMPS`` (one (nbands, h, w) stamp per true source),
the sources file's ``FOOTPRINTS`` and the training cache's ``fp_masks`` (one
(h, w) footprint mask per source) hold their arrays flattened in C order and
concatenated in table order, in one 1-D array; a table beside it gives each
array's shape. `pack_arrays` and `unpack_arrays` are that layout, and
`pack_footprints` and `unpack_footprints` add the footprint geometry columns
``fp_x0``, ``fp_y0``, ``fp_height``, ``fp_width`` (int32) that both footprint
formats use.
"""

from __future__ import annotations

__all__ = ["FOOTPRINT_COLUMNS", "pack_arrays", "unpack_arrays", "pack_footprints", "unpack_footprints"]

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .errors import InputError
from .geometry import Footprint

#: Geometry columns of a footprint table, in the order the files hold them.
FOOTPRINT_COLUMNS = ("fp_x0", "fp_y0", "fp_height", "fp_width")


def pack_arrays(arrays: Sequence[np.ndarray], dtype: npt.DTypeLike) -> np.ndarray:
    """The arrays flattened in C order and concatenated, as one 1-D array of ``dtype``."""
    if not len(arrays):
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a).astype(dtype, copy=False).ravel() for a in arrays])


def unpack_arrays(
    flat: np.ndarray | None, shapes: Sequence[tuple[int, ...]], what: str = "the flat array"
) -> list[np.ndarray]:
    """Split a `pack_arrays` array back into arrays of ``shapes`` (views of ``flat``).

    Parameters
    ----------
    flat : `numpy.ndarray` or None
        The 1-D array (None, as FITS gives for an empty image, means empty).
    shapes : `list` [`tuple` [`int`, ...]]
        Shape of each array, in order.
    what : `str`
        Name of the flat array in error messages (e.g. ``"TRUTH_STAMPS"``).

    Raises
    ------
    InputError
        If a shape is negative or the shapes do not add up to ``flat``'s size.
    """
    flat = np.zeros(0) if flat is None else np.asarray(flat).ravel()
    shapes = [tuple(int(n) for n in shape) for shape in shapes]
    if any(n < 0 for shape in shapes for n in shape):
        raise InputError(f"{what}: the table gives a negative array shape.")
    sizes = np.array([int(np.prod(shape)) for shape in shapes], dtype=np.int64)
    if sizes.sum() != flat.size:
        raise InputError(f"{what} has {flat.size} values; the table describes {int(sizes.sum())}.")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [flat[offsets[i] : offsets[i + 1]].reshape(shape) for i, shape in enumerate(shapes)]


def pack_footprints(
    footprints: Sequence[Footprint], dtype: npt.DTypeLike = np.uint8
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Geometry columns (`FOOTPRINT_COLUMNS`, int32) and the flat masks (of ``dtype``) of ``footprints``."""
    columns = {
        "fp_x0": np.array([f.x0 for f in footprints], dtype=np.int32),
        "fp_y0": np.array([f.y0 for f in footprints], dtype=np.int32),
        "fp_height": np.array([f.mask.shape[0] for f in footprints], dtype=np.int32),
        "fp_width": np.array([f.mask.shape[1] for f in footprints], dtype=np.int32),
    }
    return columns, pack_arrays([f.mask for f in footprints], dtype)


def unpack_footprints(
    columns: Mapping[str, np.ndarray], flat: np.ndarray | None, what: str = "the footprint masks"
) -> list[Footprint]:
    """The footprints described by `FOOTPRINT_COLUMNS` of ``columns`` (a table or a mapping) and ``flat``.

    Raises
    ------
    InputError
        If a geometry column is missing or the masks do not add up (see `unpack_arrays`).
    """
    names = set(columns.colnames if hasattr(columns, "colnames") else columns.keys())
    missing = [name for name in FOOTPRINT_COLUMNS if name not in names]
    if missing:
        raise InputError(f"{what}: no {', '.join(missing)} column(s).")
    x0, y0, height, width = (np.asarray(columns[name], dtype=np.int64) for name in FOOTPRINT_COLUMNS)
    masks = unpack_arrays(
        None if flat is None else np.asarray(flat).astype(bool, copy=False),
        list(zip(height, width, strict=True)),
        what,
    )
    return [Footprint(int(y), int(x), mask) for y, x, mask in zip(y0, x0, masks, strict=True)]
