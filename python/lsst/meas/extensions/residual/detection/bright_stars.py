"""Bright-star zones: where a saturated star's wings, spikes and bleed trails dominate the image.

A star bright enough to saturate leaves a connected region of SAT pixels
(core and bleed trails, `lsst.meas.extensions.residual.masks`). Around it the
image holds the star's wings and diffraction spikes, which no PSF model
describes to the star's full depth, so sources measured there are suspect
(LSST flags them from its bright-star masks). The zone of each region is the
disk around it whose radius grows with the region's size: ``radius_factor``
times its equivalent radius √(area / π), and at least ``min_radius`` pixels.
"""

from __future__ import annotations

__all__ = ["bright_star_zones"]

import numpy as np
from scipy import ndimage

from ..masks import BRIGHT_STAR_PLANES
from ..scene import Scene


def bright_star_zones(scene: Scene, radius_factor: float = 8.0, min_radius: float = 16.0) -> np.ndarray:
    """(H, W) bool: pixels within a bright star's zone (all False without SAT planes).

    Parameters
    ----------
    scene : `Scene`
        The scene; its MASK must declare planes (`Scene.mask_planes`) for
        saturated pixels to be known.
    radius_factor : `float`
        Zone radius in units of the saturated region's equivalent radius.
    min_radius : `float`
        Smallest zone radius (pixels).
    """
    saturated = scene.plane(*BRIGHT_STAR_PLANES)
    zones = np.zeros(scene.shape, dtype=bool)
    if saturated is None:
        return zones
    labels, count = ndimage.label(saturated.any(axis=0), structure=np.ones((3, 3)))
    if count == 0:
        return zones
    areas = np.bincount(labels.ravel())[1:]
    for index, region in enumerate(ndimage.find_objects(labels)):
        radius = max(min_radius, radius_factor * np.sqrt(areas[index] / np.pi))
        pad = int(np.ceil(radius))
        box = tuple(
            slice(max(s.start - pad, 0), min(s.stop + pad, n))
            for s, n in zip(region, scene.shape, strict=True)
        )
        # Distance of each pixel of the padded box to the region's nearest pixel.
        distance = ndimage.distance_transform_edt(labels[box] != index + 1)
        zones[box] |= distance <= radius
    return zones
