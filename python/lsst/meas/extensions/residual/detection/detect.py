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
   brighter peak) is not significant; a peak on a pixel without data in any
   band, or whose matched filter has too little weight on usable pixels
   (``min_peak_support``, `peak_support`), is not kept.
"""

from __future__ import annotations

__all__ = [
    "DetectionConfig",
    "Detections",
    "detection_image",
    "detect_peaks",
    "peak_support",
    "psf_flux_at",
    "psf_sigma_pixels",
]

import dataclasses

import numpy as np
import pydantic
from astropy.table import Table
from scipy import ndimage

from ..configs import StrictModel
from ..scene import Scene
from .strips import convolve_same


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
    min_peak_support: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    """A peak needs at least this fraction of its matched filter's weight on
    usable pixels (`peak_support`): near a mask edge the S/N image is made
    from the few pixels on the good side, and a maximum there is a source's
    wing seen through the edge, not a source. A peak on a pixel without data
    in any band is never kept."""


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
    significance : `numpy.ndarray` or `None`
        (H, W) float32 S/N image of the scene the peaks were found on
        (`detection_image`), kept so that the deblender does not make it
        again; None where it is not at hand (detections read from disk),
        and the deblender then makes it.
    """

    peaks: Table
    footprints: np.ndarray
    bands: tuple[str, ...]
    significance: np.ndarray | None = None

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


def peak_support(scene: Scene, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Fraction of the matched filter's weight on usable pixels at each (y, x).

    For band b it is Σ good_b(q) psf_b(q − p)² / Σ psf_b², the share of a
    point source's S/N at p that the band's usable pixels can carry; the
    bands are combined with the weights of the detection image (their
    typical inverse noise variance). 1: no bad pixel within the PSF of p.

    Returns
    -------
    support : `numpy.ndarray`
        (N,) values in [0, 1].
    """
    ys, xs = np.asarray(ys, dtype=int), np.asarray(xs, dtype=int)
    size = scene.psf.shape[-1]
    half = size // 2
    total = np.zeros(len(ys))
    weight_sum = 0.0
    for band in range(scene.nbands):
        good = scene.good_at(band)
        if not good.any():
            continue
        weight = 1.0 / float(np.median(scene.variance[band][good]))
        padded = np.pad(good, half, constant_values=True)  # off the image: as in `detection_image`
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))[ys, xs]
        psf2 = scene.psf[band].astype(np.float64) ** 2
        total += weight * np.einsum("nhw,hw->n", windows, psf2 / psf2.sum())
        weight_sum += weight
    return total / weight_sum if weight_sum > 0 else total


#: Below this share of a band's matched filter on usable pixels, its PSF flux is not estimated (0).
MIN_BAND_SUPPORT = 0.1

#: Positions whose PSF-sized windows `psf_flux_at` gathers at once (memory: this × k² × 8 bytes).
_POINTS_PER_CHUNK = 2048


def psf_flux_at(scene: Scene, positions: np.ndarray) -> np.ndarray:
    """(N, nbands) matched-filter PSF fluxes at the pixels of ``positions``: `detection_image`'s
    ``psf_flux`` there, made from each position's PSF-sized window only.

    A patch's second pass asks for a few thousand positions: this costs a
    few milliseconds where the patch-wide filter costs seconds.

    Parameters
    ----------
    scene : `Scene`
        The scene.
    positions : `numpy.ndarray`
        (N, 2) positions (x, y) on the image; each is taken at its nearest pixel.
    """
    xy = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    px, py = np.floor(xy[:, 0] + 0.5).astype(int), np.floor(xy[:, 1] + 0.5).astype(int)
    size = scene.psf.shape[-1]
    half = size // 2
    flux = np.zeros((len(xy), scene.nbands), dtype=np.float64)
    for band in range(scene.nbands):
        good = scene.good_at(band)
        psf = scene.psf[band].astype(np.float64)
        psf_norm = np.sum(psf**2)
        # Off the image counts as usable and empty, as the patch-wide filter's zero padding does.
        image = np.pad(np.where(good, scene.image[band], 0.0), half)
        bad = np.pad(~good, half)
        image_windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
        bad_windows = np.lib.stride_tricks.sliding_window_view(bad, (size, size))
        for start in range(0, len(xy), _POINTS_PER_CHUNK):
            rows = slice(start, start + _POINTS_PER_CHUNK)
            ys, xs = py[rows], px[rows]
            # Correlation with the PSF at each pixel: the convolution with the flipped PSF.
            smoothed = np.einsum("nhw,hw->n", image_windows[ys, xs], psf)
            support = 1.0 - np.einsum("nhw,hw->n", bad_windows[ys, xs], psf**2) / psf_norm
            support = np.clip(support, 0.0, 1.0)
            seen = support >= MIN_BAND_SUPPORT
            flux[rows, band] = np.where(seen, smoothed / (psf_norm * np.where(seen, support, 1.0)), 0.0)
    return flux


def _matched_filter(scene: Scene, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One band's PSF-smoothed image, its inverse noise variance (float64, 0 where none), its support.

    Bad pixels are given no weight. The support is the share of Σ psf² on
    usable pixels at each pixel (None: 1 everywhere, the band has no bad
    pixel; off the image counts as usable, the smoothing's zero padding
    being harmless there). Each temporary is freed as soon as it is used,
    and the inverse variance is made in place: on a full patch these are
    the step's largest arrays.
    """
    good = scene.good_at(band)
    kernel = scene.psf[band, ::-1, ::-1].astype(np.float64)  # correlation with the PSF
    smoothed = convolve_same(np.where(good, scene.image[band], 0.0), kernel)
    support = None
    if not good.all():
        support = convolve_same(~good, kernel**2)
        support /= -np.sum(kernel**2)
        support += 1.0
        np.clip(support, 0.0, 1.0, out=support)
    variance = np.where(good, scene.variance[band], 0.0).astype(np.float64)
    del good
    inverse = convolve_same(variance, kernel**2)
    del variance
    np.clip(inverse, 0.0, None, out=inverse)
    np.sqrt(inverse, out=inverse)  # σ of the smoothed image
    positive = inverse > 0
    np.square(inverse, out=inverse)
    np.divide(1.0, inverse, out=inverse, where=positive)
    inverse[~positive] = 0.0
    return smoothed, inverse, support


def detection_image(scene: Scene, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multi-band S/N image (unit noise) and per-band PSF-flux image (or its values at ``positions``).

    The bands are filtered one at a time and the sums made in place: a
    patch-sized float64 cube (and its FFTs) would be most of the chain's
    peak memory on a full patch.

    Near bad pixels a band's smoothed image sees only part of a point
    source (the share ``s`` of Σ psf² on usable pixels, its support): its
    flux estimate is smoothed / (s Σ psf²), and the bands' estimates are
    combined with weights ∝ s² / σ²_smoothed, the inverse variance of those
    estimates. (Weighting by 1 / σ²_smoothed alone, which is the same where
    ``s`` = 1, lets a band whose PSF barely reaches usable pixels — tiny
    σ²_smoothed — dominate the sum with a few pixels' noise, and so turns a
    mask's edge into peaks.)

    Parameters
    ----------
    scene : `Scene`
        The scene.
    positions : `numpy.ndarray`, optional
        (N, 2) positions (x, y): give the PSF fluxes at their pixels only
        (`psf_flux_at`), without a patch-sized cube.

    Returns
    -------
    significance : `numpy.ndarray`
        (H, W) inverse-variance-weighted S/N of the PSF-smoothed bands.
    psf_flux : `numpy.ndarray`
        (nbands, H, W) flux of a point source centred on each pixel,
        estimated by the matched filter (smoothed / (s Σ psf²)); 0 where the
        band's support is below `MIN_BAND_SUPPORT`. With ``positions``:
        (N, nbands), its values at their pixels.
    """
    psf_norm = np.sum(scene.psf.astype(np.float64) ** 2, axis=(1, 2))
    psf_flux = None if positions is not None else np.empty(scene.image.shape, dtype=np.float32)
    weighted = np.zeros(scene.shape, dtype=np.float64)
    weight_sum = np.zeros(scene.shape, dtype=np.float64)
    for band in range(scene.nbands):
        smoothed, inverse, support = _matched_filter(scene, band)
        if psf_flux is not None:
            flux = psf_flux[band]
            if support is None:
                np.divide(smoothed, psf_norm[band], out=flux, casting="same_kind")
            else:
                seen = support >= MIN_BAND_SUPPORT
                flux[...] = 0.0
                np.divide(smoothed, psf_norm[band] * support, out=flux, where=seen, casting="same_kind")
                del seen
        if support is not None:
            np.multiply(inverse, support, out=inverse)  # now s/σ²: the numerator's weight
        np.multiply(smoothed, inverse, out=smoothed)
        weighted += smoothed
        if support is not None:
            np.multiply(inverse, support, out=inverse)  # s²/σ²
        weight_sum += inverse
        del smoothed, inverse, support
    # S/N = Σ s·smoothed/σ² ÷ √(Σ s²/σ²), where any band has weight (s = 1 without bad pixels).
    has_weight = weight_sum > 0
    np.sqrt(weight_sum, out=weight_sum)
    np.divide(weighted, weight_sum, out=weighted, where=has_weight)
    weighted[~has_weight] = 0.0
    significance = weighted.astype(np.float32)
    del weighted, weight_sum
    return significance, psf_flux if positions is None else psf_flux_at(scene, positions)


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
    significance, _ = detection_image(scene, positions=np.zeros((0, 2)))  # no PSF-flux cube
    grow = int(round(config.grow_psf_sigma * float(np.median(psf_sigma_pixels(scene.psf)))))
    footprints = _footprints(significance, config, grow)

    is_max = (significance == ndimage.maximum_filter(significance, size=3)) & (
        significance > config.threshold
    )
    is_max &= footprints > 0
    ys, xs = np.nonzero(is_max)
    # Masked pixels never make peaks (see ``min_peak_support``).
    keep = scene.has_data()[ys, xs] & (peak_support(scene, ys, xs) >= config.min_peak_support)
    ys, xs = ys[keep], xs[keep]
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
    table["psf_flux"] = psf_flux_at(scene, np.column_stack([peak_x, peak_y])).reshape(len(rows), nbands)
    return Detections(peaks=table, footprints=footprints, bands=scene.bands, significance=significance)
