"""Classical detectors run on the same inputs as the network, for comparison.

All work on the multi-band χ image: the inverse-variance-weighted sum of the
bands divided by its noise, Σ_b x_b/σ_b² / √(Σ_b 1/σ_b²), which has unit noise
and is the optimal combination for a flat-spectrum source. ``x`` is the
residual (image − first-pass model) in residual mode and the image in image
mode.

- `sep_detect`: SEP (SExtractor's algorithm) filtering with the PSF, at
  ``nsigma`` times the filtered noise (a point-source S/N threshold, as in
  LSST's detection), at least 3 pixels, with its multi-threshold
  deblending.
- `photutils_detect`: photutils segmentation of the χ image smoothed with a
  Gaussian of the PSF's width, thresholded at ``nsigma`` times the smoothed
  noise, then photutils' multi-threshold deblending.
"""

from __future__ import annotations

__all__ = ["chi_image", "psf_kernel", "sep_detect", "photutils_detect"]

import numpy as np

from ..detection.detect import psf_sigma_pixels


def chi_image(data: np.ndarray, variance: np.ndarray, good: np.ndarray) -> np.ndarray:
    """(H, W) unit-noise inverse-variance-weighted combination of the bands (0 where no band is usable)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(good, 1.0 / np.where(good, variance, 1.0), 0.0)
        total = weight.sum(axis=0)
        chi = np.where(total > 0, (np.where(good, data, 0.0) * weight).sum(axis=0) / np.sqrt(total), 0.0)
    return chi.astype(np.float64)


def psf_kernel(psf: np.ndarray) -> np.ndarray:
    """The median-width band's PSF, cropped to ±3σ and normalised: a matched filter for the χ image."""
    sigma = psf_sigma_pixels(psf)
    band = int(np.argsort(sigma)[len(sigma) // 2])
    half = min(int(np.ceil(3 * sigma[band])), psf.shape[-1] // 2)
    c = psf.shape[-1] // 2
    kernel = np.asarray(psf[band, c - half : c + half + 1, c - half : c + half + 1], dtype=np.float64)
    return kernel / kernel.sum()


def sep_detect(
    chi: np.ndarray,
    nsigma: float,
    usable: np.ndarray | None = None,
    psf: np.ndarray | None = None,
    min_area: int = 3,
) -> np.ndarray:
    """(N, 2) x, y of SEP detections in a unit-noise image.

    With ``psf``, SEP filters with the PSF (`psf_kernel`) and ``nsigma`` is
    in units of the *filtered* noise: a point-source S/N threshold, as in
    LSST's detection. (SEP, like SExtractor, normalises its kernel and
    compares the filtered image with ``nsigma`` × the unfiltered noise,
    which for a PSF-wide kernel is a ~6× higher S/N cut, so the noise passed
    to it is the filtered one.) Without ``psf``: SEP's default 3×3 kernel
    and its own per-pixel threshold convention.
    """
    import sep

    data = np.ascontiguousarray(chi, dtype=np.float64)
    mask = None if usable is None else np.ascontiguousarray(~usable)
    if psf is None:
        objects = sep.extract(data, nsigma, err=1.0, mask=mask, minarea=min_area)
    else:
        kernel = psf_kernel(psf)
        filtered_noise = float(np.sqrt(np.sum(kernel**2)))
        objects = sep.extract(
            data, nsigma, err=filtered_noise, mask=mask, minarea=min_area, filter_kernel=kernel
        )
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
