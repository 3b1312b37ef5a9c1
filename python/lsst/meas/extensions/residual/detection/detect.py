"""First-pass multi-band detection: footprints and peaks.

This is the first half of LSST's coadd detection and merge
(``detectCoaddPeaks`` + ``mergeObjectDetection``) done on one multi-band
detection image instead of per band:

1. each band is smoothed with its own PSF (the matched filter LSST uses for
   detection) and divided by the smoothed noise, giving a S/N map per band;
2. the bands are combined by inverse-variance weighting into one S/N image
   (the optimal statistic for a flat-spectrum point source), with unit noise;
3. footprints are the connected regions above ``threshold`` σ, grown by a
   multiple of the PSF width (LSST's ``nSigmaToGrow``) and merged where they
   then touch;
4. peaks are local maxima of the S/N image inside footprints; a peak is culled
   when its prominence (height above the highest saddle that joins it to a
   brighter peak) is not significant.
"""

from __future__ import annotations

__all__ = ["DetectionConfig", "Detections", "detection_image", "detect_peaks", "psf_sigma_pixels"]

import dataclasses

import numpy as np
import pydantic
from astropy.table import Table
from scipy import ndimage
from scipy.signal import fftconvolve

from ..configs import StrictModel
from ..scene import Scene


class DetectionConfig(StrictModel):
    """Parameters of the first-pass detection."""

    threshold: float = pydantic.Field(default=5.0, gt=0.0)
    """Detection threshold in σ of the multi-band S/N image (LSST: 5)."""
    grow_psf_sigma: float = pydantic.Field(default=2.4, ge=0.0)
    """Footprints are grown by this many PSF σ (LSST's ``nSigmaToGrow``)."""
    min_pixels: int = pydantic.Field(default=5, ge=1)
    """Footprints with fewer pixels above threshold are dropped."""
    min_prominence: float = pydantic.Field(default=3.0, ge=0.0)
    """A peak must rise this many σ above its saddle to a brighter peak."""
    min_contrast: float = pydantic.Field(default=0.05, ge=0.0)
    """... and at least this fraction of its own height above that saddle."""
    max_peaks_per_footprint: int = pydantic.Field(default=600, ge=1)
    """Keep at most this many (brightest) peaks per footprint (Scarlet's limit)."""


@dataclasses.dataclass
class Detections:
    """Footprints and peaks of a scene.

    Attributes
    ----------
    peaks : `astropy.table.Table`
        One row per peak: ``id`` (int64, from 1), ``footprint_id``, ``x``,
        ``y`` (integer pixel positions, as float), ``significance`` (S/N image
        at the peak), ``psf_flux`` (per band: PSF-weighted flux estimate of a
        point source at the peak). Sorted by footprint then decreasing
        significance.
    footprints : `numpy.ndarray`
        (H, W) int32 label image: ``footprint_id`` of each pixel, 0 outside.
    bands : `tuple` [`str`]
        Bands of ``psf_flux``.
    """

    peaks: Table
    footprints: np.ndarray
    bands: tuple[str, ...]

    @property
    def xy(self) -> np.ndarray:
        return np.column_stack([self.peaks["x"], self.peaks["y"]]).astype(np.float64)

    def footprint_slices(self) -> dict[int, tuple[slice, slice]]:
        """Bounding box of each footprint, by ``footprint_id``."""
        objects = ndimage.find_objects(self.footprints)
        return {i + 1: s for i, s in enumerate(objects) if s is not None}


def psf_sigma_pixels(psf: np.ndarray) -> np.ndarray:
    """(nbands,) Gaussian-equivalent σ (pixels) of each PSF from its second moments."""
    size = psf.shape[-1]
    y, x = np.indices((size, size), dtype=np.float64) - size // 2
    total = psf.sum(axis=(1, 2))
    r2 = ((x**2 + y**2)[None] * psf).sum(axis=(1, 2)) / total
    return np.sqrt(np.clip(r2, 0.0, None) / 2.0)


def _band_good(scene: Scene, band: int) -> np.ndarray:
    """(H, W) `Scene.good` of one band (without the scene-sized boolean cube)."""
    image, variance = scene.image[band], scene.variance[band]
    good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    if scene.mask is not None:
        good &= scene.mask[band] == 0
    return good


def _matched_filter(scene: Scene, band: int) -> tuple[np.ndarray, np.ndarray]:
    """One band's PSF-smoothed image and the inverse of its noise variance (float64, 0 where none).

    Bad pixels are given no weight. Each temporary is freed as soon as it is used, and the
    inverse variance is made in place: on a full patch these are the step's largest arrays.
    """
    good = _band_good(scene, band)
    kernel = scene.psf[band, ::-1, ::-1].astype(np.float64)  # correlation with the PSF
    smoothed = fftconvolve(np.where(good, scene.image[band], 0.0).astype(np.float64), kernel, mode="same")
    variance = np.where(good, scene.variance[band], 0.0).astype(np.float64)
    del good
    inverse = fftconvolve(variance, kernel**2, mode="same")
    del variance
    np.clip(inverse, 0.0, None, out=inverse)
    np.sqrt(inverse, out=inverse)  # σ of the smoothed image
    positive = inverse > 0
    np.square(inverse, out=inverse)
    np.divide(1.0, inverse, out=inverse, where=positive)
    inverse[~positive] = 0.0
    return smoothed, inverse


def detection_image(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Multi-band S/N image (unit noise) and per-band PSF-flux image.

    The bands are filtered one at a time and the sums made in place: a
    patch-sized float64 cube (and its FFTs) would be most of the chain's
    peak memory on a full patch.

    Returns
    -------
    significance : `numpy.ndarray`
        (H, W) inverse-variance-weighted S/N of the PSF-smoothed bands.
    psf_flux : `numpy.ndarray`
        (nbands, H, W) flux of a point source centred on each pixel,
        estimated by the matched filter (smoothed / Σ psf²).
    """
    psf_norm = np.sum(scene.psf.astype(np.float64) ** 2, axis=(1, 2))
    psf_flux = np.empty(scene.image.shape, dtype=np.float32)
    weighted = np.zeros(scene.shape, dtype=np.float64)
    weight_sum = np.zeros(scene.shape, dtype=np.float64)
    for band in range(scene.nbands):
        smoothed, inverse = _matched_filter(scene, band)
        np.divide(smoothed, psf_norm[band], out=psf_flux[band], casting="same_kind")
        weight_sum += inverse
        np.multiply(smoothed, inverse, out=smoothed)
        weighted += smoothed
        del smoothed, inverse
    # S/N = Σ smoothed/σ² ÷ √(Σ 1/σ²), where any band has weight.
    has_weight = weight_sum > 0
    np.sqrt(weight_sum, out=weight_sum)
    np.divide(weighted, weight_sum, out=weighted, where=has_weight)
    weighted[~has_weight] = 0.0
    return weighted.astype(np.float32), psf_flux


def _footprints(significance: np.ndarray, config: DetectionConfig, grow: int) -> np.ndarray:
    above = significance > config.threshold
    labels, n = ndimage.label(above, structure=np.ones((3, 3)))
    if n == 0:
        return labels.astype(np.int32)
    sizes = ndimage.sum_labels(above, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], sizes >= config.min_pixels])
    seeds = keep[labels]
    if grow > 0:
        yy, xx = np.mgrid[-grow : grow + 1, -grow : grow + 1]
        seeds = ndimage.binary_dilation(seeds, structure=(xx**2 + yy**2) <= grow**2)
    grown, _ = ndimage.label(seeds, structure=np.ones((3, 3)))
    return grown.astype(np.int32)


def _prominence(significance: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Height of each peak above the highest straight-line saddle to a brighter peak.

    Peaks are those of one footprint, sorted by decreasing height; the first
    (brightest) gets infinite prominence. A straight path is one of the paths
    to the brighter peak, so its lowest point is at most the true saddle: the
    prominence is overestimated, and culling on it never removes a peak that
    the exact (lowest-descent path) definition would keep.
    """
    heights = significance[ys, xs]
    prominence = np.full(len(ys), np.inf)
    for i in range(1, len(ys)):
        dy, dx = ys[:i] - ys[i], xs[:i] - xs[i]
        steps = int(np.max(np.maximum(np.abs(dy), np.abs(dx)))) + 1
        t = np.linspace(0.0, 1.0, steps + 1)
        path_y = np.rint(ys[i] + t[None, :] * dy[:, None]).astype(int)
        path_x = np.rint(xs[i] + t[None, :] * dx[:, None]).astype(int)
        saddle = significance[path_y, path_x].min(axis=1).max()
        prominence[i] = heights[i] - saddle
    return prominence


def detect_peaks(scene: Scene, config: DetectionConfig | None = None) -> Detections:
    """Detect footprints and peaks in a multi-band scene.

    Parameters
    ----------
    scene : `Scene`
        The scene; masked and non-finite pixels are ignored.
    config : `DetectionConfig`, optional
        Detection parameters.

    Returns
    -------
    detections : `Detections`
        Footprints and peaks (possibly none).
    """
    config = DetectionConfig() if config is None else config
    significance, psf_flux = detection_image(scene)
    grow = int(round(config.grow_psf_sigma * float(np.median(psf_sigma_pixels(scene.psf)))))
    footprints = _footprints(significance, config, grow)

    is_max = (significance == ndimage.maximum_filter(significance, size=3)) & (
        significance > config.threshold
    )
    is_max &= footprints > 0
    ys, xs = np.nonzero(is_max)
    rows = []
    fp_of_peak = footprints[ys, xs]
    for fp_id in np.unique(fp_of_peak):
        sel = np.flatnonzero(fp_of_peak == fp_id)
        order = sel[np.argsort(-significance[ys[sel], xs[sel]], kind="stable")]
        fy, fx = ys[order], xs[order]
        prominence = _prominence(significance, fy, fx)
        keep = (prominence >= config.min_prominence) & (
            prominence >= config.min_contrast * significance[fy, fx]
        )
        for y, x in list(zip(fy[keep], fx[keep], strict=True))[: config.max_peaks_per_footprint]:
            rows.append((int(fp_id), x, y))
    # Footprints whose peaks were all culled cannot happen (the brightest is
    # always kept); footprints without any local maximum above threshold can
    # (plateaus at the edge): drop them so every footprint has a peak.
    with_peaks = np.unique([r[0] for r in rows]) if rows else np.zeros(0, dtype=np.int32)
    relabel = np.zeros(int(footprints.max()) + 1, dtype=np.int32)
    relabel[with_peaks] = np.arange(1, len(with_peaks) + 1, dtype=np.int32)
    footprints = relabel[footprints]

    nbands = scene.nbands
    table = Table()
    table["id"] = np.arange(1, len(rows) + 1, dtype=np.int64)
    table["footprint_id"] = np.array([relabel[r[0]] for r in rows], dtype=np.int32)
    table["x"] = np.array([r[1] for r in rows], dtype=np.float64)
    table["y"] = np.array([r[2] for r in rows], dtype=np.float64)
    peak_y = np.array([r[2] for r in rows], dtype=int)
    peak_x = np.array([r[1] for r in rows], dtype=int)
    table["significance"] = significance[peak_y, peak_x].astype(np.float64)
    table["psf_flux"] = psf_flux[:, peak_y, peak_x].T.reshape(len(rows), nbands).astype(np.float64)
    return Detections(peaks=table, footprints=footprints, bands=scene.bands)
