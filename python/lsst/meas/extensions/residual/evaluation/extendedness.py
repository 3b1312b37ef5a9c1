"""LSST's extendedness on the network's detections: the classification baseline of image mode.

LSST calls a source extended when its PSF flux falls short of its model
flux: ``base_ClassificationExtendedness`` is 1 where psfFlux / cModelFlux <
0.985, in the reference band. Without CModel here, the model flux of a
detection is its segment flux (the image summed over the pixels of its
mask, where detections overlap the better-scoring one's) divided by the
share of a point source's light that segment holds (the band's PSF centred
on the detection, summed over the same pixels): the flux a point source
would need to put that light in that segment. A star has ratio 1 whatever
its mask's size, so the cut keeps its meaning; a galaxy, whose light spreads
beyond the PSF's, has less. The PSF flux is the detection step's matched
filter at the detection's pixel (`detection_image`).

`extendedness_ratio` gives the statistic; the evaluation sweeps the cut on
it (star: ratio ≥ cut; galaxy: below it) to compare with the network's class
scores at the same recall, and reports LSST's own cut as well.
"""

from __future__ import annotations

__all__ = ["LSST_EXTENDEDNESS_CUT", "RATIO_GRID", "extendedness_ratio", "reference_band"]

import numpy as np

from ..detection.detect import detection_image
from ..network.footprints import SourceDetections
from ..scene import Scene

#: psfFlux / modelFlux below which LSST's ``base_ClassificationExtendedness`` calls a source extended.
LSST_EXTENDEDNESS_CUT = 0.985
#: Cuts swept for the precision-recall curves of the ratio.
RATIO_GRID = np.round(np.arange(0.50, 1.5001, 0.005), 3)


def reference_band(bands) -> int:
    """Index of LSST's reference band for the measurement: i where present, else the middle band."""
    bands = list(bands)
    return bands.index("i") if "i" in bands else len(bands) // 2


def extendedness_ratio(scene: Scene, detections: SourceDetections, band: int | None = None) -> np.ndarray:
    """PSF flux / point-source-equivalent segment flux of each detection (NaN where undefined).

    Parameters
    ----------
    scene : `Scene`
        The image the detections were found on.
    detections : `SourceDetections`
        The detections (positions and masks).
    band : `int`, optional
        Band index; default `reference_band`.

    Returns
    -------
    ratio : `numpy.ndarray`
        (N,) ratio; NaN where the segment holds no usable pixel or no light.
    """
    band = reference_band(scene.bands) if band is None else int(band)
    n = len(detections)
    if n == 0:
        return np.zeros(0)
    _, psf_flux = detection_image(scene, positions=detections.xy)
    usable = scene.good[band]
    labels = np.where(usable, detections.label_image(), 0)
    ids = np.asarray(detections.table["id"], dtype=np.int64)
    image = np.where(usable, scene.image[band], 0.0).astype(np.float64)
    segment_flux = np.bincount(labels.ravel(), weights=image.ravel(), minlength=int(ids.max()) + 1)
    segment_pixels = np.bincount(labels.ravel(), minlength=int(ids.max()) + 1)
    psf = scene.psf[band].astype(np.float64)
    psf = psf / psf.sum()
    half_y, half_x = psf.shape[0] // 2, psf.shape[1] // 2
    height, width = scene.shape
    ratio = np.full(n, np.nan)
    for index, ((x, y), source_id) in enumerate(zip(detections.xy, ids, strict=True)):
        flux = float(segment_flux[source_id])
        if segment_pixels[source_id] == 0 or flux <= 0:
            continue
        # The PSF centred on the detection's pixel, placed on the image (clipped at its edges).
        py, px = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
        y0, x0 = py - half_y, px - half_x
        ya, yb = max(y0, 0), min(y0 + psf.shape[0], height)
        xa, xb = max(x0, 0), min(x0 + psf.shape[1], width)
        segment = labels[ya:yb, xa:xb] == source_id
        share = float((psf[ya - y0 : yb - y0, xa - x0 : xb - x0] * segment).sum())
        if share > 0:
            ratio[index] = float(psf_flux[index, band]) / (flux / share)
    return ratio
