"""Cut a crowded footprint into independent sub-blends along the valleys of the detection image.

A footprint's fit costs about its box area times its number of peaks in time
and memory (the quantity LSST's ``maxAreaTimesPeaks`` bounds), so one
crowded footprint, a few hundred peaks in a box the size of the patch, can
cost more than all the other footprints together. DRP's deblender avoids
most of that by fitting each footprint of the deconvolved image as its own
blend ("deconvolved parents"); there is no deconvolved image here, so the
footprint is cut where its sources interact least: along the valleys of the
detection image.

`split_footprint` does this in three steps:

1. every footprint pixel is given to one peak by flooding the detection image
   from the peaks downwards (a watershed, by quantile levels): each peak gets
   the basin of pixels that drain to it;
2. each pair of touching basins is joined at its *saddle*, the brightest
   pixel pair on their common border (the level at which the two would merge
   as a threshold is lowered);
3. basins are merged in order of decreasing saddle, the most strongly
   connected first, as long as a merged group stays within the limits (box
   area × peaks, peaks, box area); a merge that would exceed one is refused,
   and the groups that remain are the sub-blends.

The sub-blends therefore partition the footprint: every pixel and every peak
belongs to exactly one, so their conserved fluxes still add up to the image
of the footprint. A footprint within the limits is left whole (every merge is
allowed and the groups join back into one). Neighbouring sub-blends meet at
a valley, where each one's light is lowest; that is what the cut costs.
"""

from __future__ import annotations

__all__ = ["SubBlend", "split_footprint"]

import dataclasses

import numpy as np
from scipy import ndimage

from ..geometry import Box

#: Levels of the flooding (quantiles of the detection image in the footprint).
_FLOOD_LEVELS = 128

# The eight neighbours (dy, dx) of a pixel, and the four that cover each adjacent pair once.
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
_PAIRS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclasses.dataclass
class SubBlend:
    """One independent part of a footprint.

    Attributes
    ----------
    box : `Box`
        Bounding box of ``mask`` in the patch.
    mask : `numpy.ndarray`
        (h, w) bool: the pixels of the footprint that belong to this part.
    peaks : `numpy.ndarray`
        Indices (into the peaks given to `split_footprint`) of its peaks.
    """

    box: Box
    mask: np.ndarray
    peaks: np.ndarray


def _shifted(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """``array`` moved so that pixel (y, x) of the result holds ``array[y + dy, x + dx]``."""
    h, w = array.shape
    out = np.full_like(array, fill)
    out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = array[
        max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def _grow_labels(labels: np.ndarray, allowed: np.ndarray) -> None:
    """Extend the labels into the unlabelled ``allowed`` pixels they touch, until none is left reachable."""
    while True:
        free = (labels == 0) & allowed
        if not free.any():
            return
        grown = labels.copy()
        for dy, dx in _NEIGHBOURS:
            neighbour = _shifted(grown, dy, dx, 0)
            take = (grown == 0) & free & (neighbour > 0)
            grown[take] = neighbour[take]
        if np.array_equal(grown, labels):
            return
        labels[...] = grown


def _basins(detect: np.ndarray, footprint: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Label each footprint pixel with the seed it drains to (flooding ``detect`` from the top)."""
    labels = seeds.copy()
    values = detect[footprint]
    levels = np.unique(np.quantile(values, np.linspace(1.0, 0.0, _FLOOD_LEVELS)))[::-1]
    for level in levels:
        _grow_labels(labels, footprint & (detect >= level))
    # Pixels cut off from every seed at all levels (the footprint is connected, so only through
    # a diagonal the flooding did not take): give them their nearest labelled pixel.
    orphans = footprint & (labels == 0)
    if orphans.any():
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels[orphans] = labels[iy[orphans], ix[orphans]]
    return labels


def _saddles(detect: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of touching labels (a < b) and the highest min(detect) over their border pixel pairs."""
    firsts, seconds, heights = [], [], []
    h, w = labels.shape
    for dy, dx in _PAIRS:
        ya, yb = max(0, -dy), h - max(0, dy)
        xa, xb = max(0, -dx), w - max(0, dx)
        here = labels[ya:yb, xa:xb]
        there = labels[ya + dy : yb + dy, xa + dx : xb + dx]
        border = (here > 0) & (there > 0) & (here != there)
        if not border.any():
            continue
        height = np.minimum(
            detect[ya:yb, xa:xb][border], detect[ya + dy : yb + dy, xa + dx : xb + dx][border]
        )
        a, b = here[border], there[border]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        heights.append(height)
    if not firsts:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    a, b, height = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(heights)
    # The highest saddle of each pair: sort by pair, then by height, and keep each pair's last.
    order = np.lexsort((height, b, a))
    a, b, height = a[order], b[order], height[order]
    last = np.ones(len(a), dtype=bool)
    last[:-1] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[last], b[last], height[last]


def split_footprint(
    detect: np.ndarray,
    footprint: np.ndarray,
    box: Box,
    centers: np.ndarray,
    max_area_times_peaks: int,
    max_peaks: int = 0,
    max_area: int = 0,
) -> list[SubBlend]:
    """Cut a footprint into sub-blends within limits on box pixels × peaks, peaks and box pixels.

    Parameters
    ----------
    detect : `numpy.ndarray`
        (h, w) detection image of the footprint's box (unit noise).
    footprint : `numpy.ndarray`
        (h, w) bool: the footprint's pixels in ``box``.
    box : `Box`
        The footprint's bounding box in the patch.
    centers : `numpy.ndarray`
        (N, 2) integer (y, x) patch positions of its peaks, all in the footprint.
    max_area_times_peaks, max_peaks, max_area : `int`
        The most bounding-box pixels × peaks, peaks and bounding-box pixels
        a sub-blend may have (<= 0: no such limit). A single peak's basin is
        a sub-blend whatever its size.

    Returns
    -------
    sub_blends : `list` [`SubBlend`]
        Disjoint parts covering every pixel of the footprint and every peak,
        ordered by their first peak; one part (the whole footprint) when it is
        within the limits.
    """
    centers = np.asarray(centers, dtype=int).reshape(-1, 2)
    n_peaks = len(centers)
    ly, lx = centers[:, 0] - box.y0, centers[:, 1] - box.x0

    def within(area: int, peaks: int) -> bool:
        return (
            (max_area_times_peaks <= 0 or area * peaks <= max_area_times_peaks)
            and (max_peaks <= 0 or peaks <= max_peaks)
            and (max_area <= 0 or area <= max_area)
        )

    whole = [SubBlend(box, footprint, np.arange(n_peaks))]
    if n_peaks < 2 or within(box.height * box.width, n_peaks):
        return whole
    seeds = np.zeros(footprint.shape, dtype=np.int64)
    # Peaks on the same pixel share a seed (the later label wins; the peak-to-basin map below reads it back).
    seeds[ly, lx] = np.arange(1, n_peaks + 1)
    detect = np.where(footprint, detect, -np.inf)
    labels = _basins(detect, footprint, seeds)
    basin_of_peak = labels[ly, lx]
    basin_ids = np.unique(basin_of_peak)
    index = {int(b): i for i, b in enumerate(basin_ids)}

    # Union-find over basins, each group carrying its peak count and bounding box.
    parent = list(range(len(basin_ids)))
    count = np.bincount([index[int(b)] for b in basin_of_peak], minlength=len(basin_ids))
    slices = ndimage.find_objects(labels)
    bounds = np.array(
        [
            [slices[b - 1][0].start, slices[b - 1][1].start, slices[b - 1][0].stop, slices[b - 1][1].stop]
            for b in basin_ids
        ]
    )

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first, second, height = _saddles(detect, labels)
    for k in np.argsort(-height, kind="stable"):
        i, j = root(index[int(first[k])]), root(index[int(second[k])])
        if i == j:
            continue
        y0, x0 = min(bounds[i, 0], bounds[j, 0]), min(bounds[i, 1], bounds[j, 1])
        y1, x1 = max(bounds[i, 2], bounds[j, 2]), max(bounds[i, 3], bounds[j, 3])
        if not within((y1 - y0) * (x1 - x0), count[i] + count[j]):
            continue
        parent[j] = i
        count[i] += count[j]
        bounds[i] = (y0, x0, y1, x1)

    group_of_basin = np.array([root(i) for i in range(len(basin_ids))])
    # Relabel pixels: basin label -> group (by the group's root basin index, + 1).
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lookup[basin_ids] = group_of_basin + 1
    groups = lookup[labels]
    group_of_peak = groups[ly, lx]
    if len(np.unique(group_of_peak)) == 1:
        return whole
    parts = []
    for g in sorted(np.unique(group_of_peak), key=lambda g: np.flatnonzero(group_of_peak == g)[0]):
        mask = groups == g
        ys, xs = np.nonzero(mask)
        y0, x0 = int(ys.min()), int(xs.min())
        sub = Box(box.y0 + y0, box.x0 + x0, int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1)
        parts.append(SubBlend(sub, mask[sub.slices(box)], np.flatnonzero(group_of_peak == g)))
    return parts
