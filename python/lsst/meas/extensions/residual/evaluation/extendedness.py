"""LSST's extendedness on the network's detections: the classification baseline of image mode.

LSST calls a source extended when its PSF flux falls short of its model
flux: ``base_ClassificationExtendedness`` is 1 where psfFlux / cModelFlux <
0.985, in the reference band. Without CModel here, the model flux of a
detection is its segment flux (the image summed over the pixels of its
mask, where detections overlap the better-scoring one's) divided by the
share of a point source's light that segment holds (the band's PSF at the
detection's centroid, summed over the same pixels): the flux a point source
would need to put that light in that segment. A star has ratio 1 whatever
its mask's size, so the cut keeps its meaning; a galaxy, whose light spreads
beyond the PSF's, has less. The PSF flux is the PSF fitted at that
centroid (`extendedness_ratio`).

`extendedness_ratio` gives the statistic; the evaluation sweeps the cut on
it (star: ratio ≥ cut; galaxy: below it) to compare with the network's class
scores at the same recall, and reports LSST's own cut as well.
"""

from __future__ import annotations

__all__ = ["LSST_EXTENDEDNESS_CUT", "RATIO_GRID", "extendedness_ratio", "reference_band"]

import warnings

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning

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


def _centroid(
    image: np.ndarray, weights: np.ndarray, psf: np.ndarray, y: float, x: float
) -> tuple[float, float]:
    """Sub-pixel position of the matched-filter maximum within a pixel of (y, x).

    The network's position is its mask's centroid, off the light's centre by
    a fraction of a pixel for faint or blended sources; a PSF flux measured
    there would come out low for stars alone. As LSST measures it at its own
    centroid, the correlation of the weighted image with the PSF is made on
    the 5×5 pixels round the detection (zero off the image), and its peak
    found by photutils' 2-D quadratic fit to the 3×3 pixels round the
    maximum of the inner 3×3.
    """
    from photutils.centroids import centroid_quadratic
    from scipy.signal import correlate

    half = psf.shape[0] // 2
    reach = half + 2
    cy, cx = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    padded = np.pad(image * weights, reach)  # pixel (cy, cx) is padded[cy + reach, cx + reach]
    stamp = padded[cy : cy + 2 * reach + 1, cx : cx + 2 * reach + 1]
    response = correlate(stamp, psf, mode="valid")  # (5, 5), the detection's pixel at [2, 2]
    ky, kx = np.unravel_index(np.argmax(response[1:4, 1:4]), (3, 3))
    with warnings.catch_warnings():
        # A response whose maximum is not inside its 3×3 leaves too few pixels to fit: no refinement.
        warnings.simplefilter("ignore", AstropyUserWarning)
        fx, fy = centroid_quadratic(response[ky : ky + 3, kx : kx + 3], fit_boxsize=3)
    if not (np.isfinite(fx) and np.isfinite(fy)):
        fx = fy = 1.0
    # (ky, kx) + (fy, fx) is the peak in the 5×5, whose [2, 2] is the detection's pixel.
    return cy + ky + float(np.clip(fy, 0, 2)) - 2, cx + kx + float(np.clip(fx, 0, 2)) - 2


def _placed_psf(
    psf: np.ndarray, y: float, x: float, shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The PSF shifted to the sub-pixel position (y, x) and its slices in an image of ``shape``."""
    from scipy import ndimage

    half = psf.shape[0] // 2
    py, px = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    shifted = ndimage.shift(psf, (y - py, x - px), order=3, mode="constant")
    y0, x0 = py - half, px - half
    ya, yb = max(y0, 0), min(y0 + psf.shape[0], shape[0])
    xa, xb = max(x0, 0), min(x0 + psf.shape[1], shape[1])
    return shifted[ya - y0 : yb - y0, xa - x0 : xb - x0], (slice(ya, yb), slice(xa, xb))


def extendedness_ratio(scene: Scene, detections: SourceDetections, band: int | None = None) -> np.ndarray:
    """PSF flux / point-source-equivalent segment flux of each detection (NaN where undefined).

    Both are measured in one band, at the detection's centroid (`_centroid`):
    the PSF flux by the PSF, shifted there, fitted to the image with inverse-
    variance weights (Σ w P D / Σ w P²); the segment's share of a point
    source's light with the same shifted PSF.

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
    usable = scene.good[band]
    labels = np.where(usable, detections.label_image(), 0)
    ids = np.asarray(detections.table["id"], dtype=np.int64)
    image = np.where(usable, scene.image[band], 0.0).astype(np.float64)
    weights = np.zeros(scene.shape)
    np.divide(1.0, scene.variance[band], out=weights, where=usable)
    segment_flux = np.bincount(labels.ravel(), weights=image.ravel(), minlength=int(ids.max()) + 1)
    segment_pixels = np.bincount(labels.ravel(), minlength=int(ids.max()) + 1)
    psf = scene.psf[band].astype(np.float64)
    psf = psf / psf.sum()
    ratio = np.full(n, np.nan)
    for index, ((x, y), source_id) in enumerate(zip(detections.xy, ids, strict=True)):
        flux = float(segment_flux[source_id])
        if segment_pixels[source_id] == 0 or flux <= 0:
            continue
        cy, cx = _centroid(image, weights, psf, float(y), float(x))
        placed, (sy, sx) = _placed_psf(psf, cy, cx, scene.shape)
        norm = float((weights[sy, sx] * placed**2).sum())
        share = float((placed * (labels[sy, sx] == source_id)).sum())
        if norm <= 0 or share <= 0:
            continue
        psf_flux = float((weights[sy, sx] * placed * image[sy, sx]).sum()) / norm
        ratio[index] = psf_flux / (flux / share)
    return ratio
