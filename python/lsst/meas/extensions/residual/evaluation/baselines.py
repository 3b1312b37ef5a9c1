"""Classical detectors run on the same inputs as the network, for comparison.

All work on the multi-band χ image: the inverse-variance-weighted sum of the
bands divided by its noise, Σ_b x_b/σ_b² / √(Σ_b 1/σ_b²), which has unit noise
and is the optimal combination for a flat-spectrum source. ``x`` is the
residual (image − first-pass model) in residual mode and the image in image
mode.

- `sep_detect`: SEP (SExtractor's algorithm) with its default 3×3 matched
  filter, at ``nsigma`` times the filtered noise, with its multi-threshold
  deblending.
- `photutils_detect`: photutils segmentation of the χ image smoothed with a
  Gaussian of the PSF's width, thresholded at ``nsigma`` times the smoothed
  noise, then photutils' multi-threshold deblending.
"""

from __future__ import annotations

__all__ = ["chi_image", "sep_detect", "photutils_detect"]

import numpy as np

from ..detection.detect import psf_sigma_pixels


def chi_image(data: np.ndarray, variance: np.ndarray, good: np.ndarray) -> np.ndarray:
    """(H, W) unit-noise inverse-variance-weighted combination of the bands (0 where no band is usable)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(good, 1.0 / np.where(good, variance, 1.0), 0.0)
        total = weight.sum(axis=0)
        chi = np.where(total > 0, (np.where(good, data, 0.0) * weight).sum(axis=0) / np.sqrt(total), 0.0)
    return chi.astype(np.float64)


def sep_detect(
    chi: np.ndarray, nsigma: float, usable: np.ndarray | None = None, min_area: int = 5
) -> np.ndarray:
    """(N, 2) x, y of SEP detections above ``nsigma`` in a unit-noise image."""
    import sep

    data = np.ascontiguousarray(chi, dtype=np.float64)
    mask = None if usable is None else np.ascontiguousarray(~usable)
    objects = sep.extract(data, nsigma, err=1.0, mask=mask, minarea=min_area)
    return np.column_stack([objects["x"], objects["y"]]).astype(np.float64).reshape(-1, 2)


def photutils_detect(
    chi: np.ndarray,
    psf: np.ndarray,
    nsigma: float = 3.0,
    usable: np.ndarray | None = None,
    min_pixels: int = 5,
) -> np.ndarray:
    """(N, 2) x, y of photutils segmentation + deblending of a unit-noise image."""
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    sigma = float(np.median(psf_sigma_pixels(psf)))
    kernel = Gaussian2DKernel(sigma)
    kernel.normalize()
    smoothed = convolve(chi, kernel, normalize_kernel=False)
    # White unit noise smoothed by kernel k has σ = √Σk².
    threshold = nsigma * float(np.sqrt(np.sum(kernel.array**2)))
    mask = None if usable is None else ~usable
    segments = detect_sources(smoothed, threshold, n_pixels=min_pixels, mask=mask)
    if segments is None:
        return np.zeros((0, 2))
    deblended = deblend_sources(smoothed, segments, n_pixels=min_pixels)
    catalog = SourceCatalog(chi, deblended, convolved_data=smoothed)
    return np.column_stack([catalog.x_centroid, catalog.y_centroid]).astype(np.float64).reshape(-1, 2)
