"""Pixel geometry shared by every step: integer boxes, their overlaps, and footprints.

A `Box` is the half-open pixel rectangle with origin (``y0``, ``x0``) and shape
(``height``, ``width``): rows ``y0 .. y0 + height - 1``. Truth stamps, deblender
components, footprints and cut-outs are all placed with one; the place where
two of them meet is `Box.intersect`, and `Box.slices` turns it into array
indices relative to either. A `Footprint` is a boolean mask placed by its box.

`boxes_overlap` is the vectorised "do these boxes share a pixel" test used to
find candidate pairs before comparing masks (`mask_overlap`).
"""

from __future__ import annotations

__all__ = ["Box", "Footprint", "boxes_overlap", "mask_overlap"]

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Box:
    """Integer box: origin (y0, x0) and shape (height, width); may be empty."""

    y0: int
    x0: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def origin(self) -> tuple[int, int]:
        return self.y0, self.x0

    @property
    def y1(self) -> int:
        """First row past the box."""
        return self.y0 + self.height

    @property
    def x1(self) -> int:
        """First column past the box."""
        return self.x0 + self.width

    @property
    def empty(self) -> bool:
        """Whether the box holds no pixel."""
        return self.height <= 0 or self.width <= 0

    def slices(self, relative_to: Box | None = None) -> tuple[slice, slice]:
        """Row and column slices of this box in an array whose pixel [0, 0] is ``relative_to``'s origin.

        Without ``relative_to``, in image coordinates (origin (0, 0)).
        """
        oy, ox = (0, 0) if relative_to is None else relative_to.origin
        return slice(self.y0 - oy, self.y1 - oy), slice(self.x0 - ox, self.x1 - ox)

    def grow(self, pad: int) -> Box:
        """The box padded by ``pad`` pixels on every side."""
        return Box(self.y0 - pad, self.x0 - pad, self.height + 2 * pad, self.width + 2 * pad)

    def intersect(self, other: Box) -> Box:
        """The pixels in both boxes (an `empty` box, of zero height or width, if none)."""
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        return Box(y0, x0, max(y1 - y0, 0), max(x1 - x0, 0))

    def contains(self, y: int, x: int) -> bool:
        return self.y0 <= y < self.y1 and self.x0 <= x < self.x1

    @classmethod
    def bounding(cls, pixels: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Box:
        """The smallest box holding the True pixels of the (h, w) bool ``pixels`` (whose [0, 0] is
        at ``origin``); an `empty` box at ``origin`` if there are none."""
        rows = np.flatnonzero(pixels.any(axis=1))
        if rows.size == 0:
            return cls(int(origin[0]), int(origin[1]), 0, 0)
        cols = np.flatnonzero(pixels.any(axis=0))
        return cls(
            int(origin[0] + rows[0]),
            int(origin[1] + cols[0]),
            int(rows[-1] - rows[0] + 1),
            int(cols[-1] - cols[0] + 1),
        )


def _box_array(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    """(N, 4) int64 rows (y0, x0, height, width) of a list of boxes or of such an array."""
    if isinstance(boxes, np.ndarray):
        return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    return np.array([(b.y0, b.x0, b.height, b.width) for b in boxes], dtype=np.int64).reshape(-1, 4)


def boxes_overlap(a: Sequence[Box] | np.ndarray, b: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Which boxes of ``a`` share at least one pixel with which boxes of ``b``.

    Parameters
    ----------
    a, b : `list` [`Box`] or `numpy.ndarray`
        N and M boxes, or (N, 4) and (M, 4) arrays of (y0, x0, height, width).

    Returns
    -------
    overlap : `numpy.ndarray`
        (N, M) bool; empty boxes overlap nothing.
    """
    a, b = _box_array(a), _box_array(b)
    rows = np.maximum(a[:, None, 0], b[None, :, 0]) < np.minimum(
        a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]
    )
    cols = np.maximum(a[:, None, 1], b[None, :, 1]) < np.minimum(
        a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]
    )
    return rows & cols


@dataclasses.dataclass
class Footprint:
    """Pixels of one source: a boolean mask whose pixel [0, 0] is image pixel (y0, x0)."""

    y0: int
    x0: int
    mask: np.ndarray

    @property
    def box(self) -> Box:
        """The mask's box in the image."""
        return Box(int(self.y0), int(self.x0), *self.mask.shape)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Where the mask lies in the image."""
        return self.box.slices()

    @property
    def area(self) -> int:
        """Number of pixels in the footprint."""
        return int(np.count_nonzero(self.mask))

    @classmethod
    def from_mask(cls, pixels: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Footprint | None:
        """The True pixels of ``pixels`` ([0, 0] at ``origin``) cropped to their box; None if none."""
        box = Box.bounding(pixels, origin)
        if box.empty:
            return None
        return cls(
            box.y0, box.x0, pixels[box.slices(Box(int(origin[0]), int(origin[1]), *pixels.shape))].copy()
        )

    def cut(self, box: Box) -> np.ndarray:
        """The footprint's mask over ``box``: a ``box.shape`` bool array, False outside the footprint."""
        out = np.zeros(box.shape, dtype=bool)
        inside = self.box.intersect(box)
        if not inside.empty:
            out[inside.slices(box)] = self.mask[inside.slices(self.box)]
        return out


def mask_overlap(a: Footprint, b: Footprint) -> int:
    """Number of pixels in both footprints."""
    inside = a.box.intersect(b.box)
    if inside.empty:
        return 0
    return int(np.count_nonzero(a.mask[inside.slices(a.box)] & b.mask[inside.slices(b.box)]))
