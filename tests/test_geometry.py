"""Pixel boxes, footprints and their overlaps; the flat-array layout of truth stamps and footprint masks."""

from __future__ import annotations

import numpy as np
import pytest
from lsst.meas.extensions.residual.errors import InputError
from lsst.meas.extensions.residual.geometry import Box, Footprint, boxes_overlap, mask_overlap
from lsst.meas.extensions.residual.packing import (
    pack_arrays,
    pack_footprints,
    unpack_arrays,
    unpack_footprints,
)


def test_box_intersection_and_relative_slices():
    a, b = Box(2, 3, 4, 5), Box(4, 6, 10, 10)
    inside = a.intersect(b)
    assert inside == Box(4, 6, 2, 2) and not inside.empty
    assert inside.slices() == (slice(4, 6), slice(6, 8))
    assert inside.slices(a) == (slice(2, 4), slice(3, 5))
    assert inside.slices(b) == (slice(0, 2), slice(0, 2))
    # Disjoint boxes (also ones that only touch) meet in an empty box, never a negative shape.
    for other in (Box(6, 3, 2, 2), Box(2, -20, 4, 5), Box(50, 50, 1, 1)):
        meet = a.intersect(other)
        assert meet.empty and meet.height >= 0 and meet.width >= 0
    assert a.grow(1) == Box(1, 2, 6, 7) and a.contains(5, 7) and not a.contains(6, 3)


def test_boxes_overlap_matches_pixel_sets():
    rng = np.random.default_rng(4)
    boxes = [
        Box(*map(int, rng.integers(0, 12, 2)), *map(int, rng.integers(0, 5, 2)))  # some are empty
        for _ in range(40)
    ]
    overlap = boxes_overlap(boxes, boxes[:25])
    assert overlap.shape == (40, 25)
    for i, a in enumerate(boxes):
        pixels_a = {(y, x) for y in range(a.y0, a.y1) for x in range(a.x0, a.x1)}
        for j, b in enumerate(boxes[:25]):
            pixels_b = {(y, x) for y in range(b.y0, b.y1) for x in range(b.x0, b.x1)}
            assert overlap[i, j] == bool(pixels_a & pixels_b), (a, b)
    # Arrays of (y0, x0, height, width) rows are the same boxes.
    rows = np.array([(b.y0, b.x0, b.height, b.width) for b in boxes])
    np.testing.assert_array_equal(boxes_overlap(rows, rows[:25]), overlap)
    assert boxes_overlap([], boxes).shape == (0, 40)


def test_mask_overlap_and_cut():
    a = Footprint(0, 0, np.ones((4, 4), bool))
    b = Footprint(2, 3, np.array([[True, False], [True, True]]))
    assert mask_overlap(a, b) == 2 and mask_overlap(b, a) == 2  # only column 3 is shared
    assert mask_overlap(a, Footprint(4, 0, np.ones((2, 2), bool))) == 0  # touching, no shared pixel
    cut = b.cut(Box(1, 2, 3, 3))
    np.testing.assert_array_equal(cut, [[0, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert not b.cut(Box(10, 10, 2, 2)).any() and b.cut(Box(10, 10, 2, 2)).shape == (2, 2)
    assert b.box == Box(2, 3, 2, 2) and b.slices == (slice(2, 4), slice(3, 5)) and b.area == 3


def test_pack_unpack_round_trip_and_errors():
    rng = np.random.default_rng(2)
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in [(2, 3, 4), (2, 0, 5), (2, 1, 1)]]
    flat = pack_arrays(arrays, np.float32)
    assert flat.dtype == np.float32 and flat.ndim == 1 and flat.size == 24 + 0 + 2
    np.testing.assert_array_equal(flat[:24], arrays[0].ravel())  # C order, table order
    back = unpack_arrays(flat, [a.shape for a in arrays], "STAMPS")
    assert all(np.array_equal(x, y) and x.shape == y.shape for x, y in zip(back, arrays, strict=True))
    assert pack_arrays([], np.uint8).dtype == np.uint8 and unpack_arrays(None, []) == []
    with pytest.raises(InputError, match="STAMPS has 26 values; the table describes 27"):
        unpack_arrays(flat, [(2, 3, 4), (3,)], "STAMPS")
    with pytest.raises(InputError, match="negative"):
        unpack_arrays(flat, [(-2, 3)], "STAMPS")


def test_footprint_columns_round_trip():
    footprints = [Footprint(5, 7, np.array([[True, False, True]])), Footprint(0, 1, np.ones((2, 2), bool))]
    columns, flat = pack_footprints(footprints)
    assert list(columns) == ["fp_x0", "fp_y0", "fp_height", "fp_width"]
    assert all(values.dtype == np.int32 for values in columns.values())
    assert flat.dtype == np.uint8 and flat.tolist() == [1, 0, 1, 1, 1, 1, 1]
    back = unpack_footprints(columns, flat)
    for a, b in zip(back, footprints, strict=True):
        assert (a.y0, a.x0) == (b.y0, b.x0) and a.mask.dtype == bool and np.array_equal(a.mask, b.mask)
    with pytest.raises(InputError, match="fp_width"):
        unpack_footprints({k: v for k, v in columns.items() if k != "fp_width"}, flat)
    with pytest.raises(InputError, match="has 6 values"):
        unpack_footprints(columns, flat[:-1])


def test_bounding_box_and_footprint_of_a_mask():
    pixels = np.zeros((6, 8), dtype=bool)
    pixels[2, 3] = pixels[4, 6] = True
    assert Box.bounding(pixels, (10, 20)) == Box(12, 23, 3, 4)
    assert Box.bounding(np.zeros((3, 3), dtype=bool), (5, 5)).empty
    footprint = Footprint.from_mask(pixels, (10, 20))
    assert footprint.box == Box(12, 23, 3, 4) and footprint.area == 2
    assert footprint.mask[0, 0] and footprint.mask[2, 3] and not footprint.mask[0, 3]
    assert Footprint.from_mask(np.zeros((2, 2), dtype=bool)) is None
