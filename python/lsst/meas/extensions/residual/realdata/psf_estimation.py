"""A PSF per band from the stars of an image, for images that come without one.

Stars are chosen once for all bands, on the band-summed S/N image:

* peaks (``photutils.detection.find_peaks``) a stamp away from the edges,
  whose S/N in a 7×7 box, summed in quadrature over the bands, is at least
  ``min_snr``;
* isolated: no other peak of S/N >= 5 within half a stamp;
* unsaturated and unmasked: every pixel of the stamp usable in every band,
  and no flat top (saturated cores are flat: three pixels of the 3×3 core
  within 2% of the peak);
* point-like: the share of the light within 1 px of the peak, against the
  stamp's inner part, at least 0.9 of the stellar value (the 80th percentile
  of the candidates: stars are the most concentrated sources);
* the ``max_stars`` of highest S/N.

Each band's PSF is then the effective PSF (photutils' ``EPSFBuilder``,
oversampled 2×, which centres the stars on each other iteratively) of the
stars with a 7×7-box S/N >= ``min_snr`` in that band, sampled at the pixel centres
(an effective PSF already holds the pixel's response), negative wings set
to 0 and normalised to sum 1. Too few stars in a band is an error that
says how many were found.
"""

from __future__ import annotations

__all__ = ["PsfEstimate", "PsfEstimationError", "estimate_psfs", "psf_fwhm", "select_psf_stars", "box_snr"]

import dataclasses
import warnings

import numpy as np

from ..errors import InputError

#: S/N of the neighbours that make a star not isolated.
_NEIGHBOUR_SNR = 5.0
#: A flat top: at least this many pixels of the 3×3 core within `_FLAT_FRACTION` of the peak.
_FLAT_PIXELS = 3
_FLAT_FRACTION = 0.98
#: Point-like: concentration at least this fraction of the stellar value.
_CONCENTRATION_FRACTION = 0.9
#: Half-side of the box a star's S/N is measured in.
_SNR_HALF_BOX = 3


class PsfEstimationError(InputError):
    """The image has too few stars to estimate its PSF (the message says how many it has)."""


@dataclasses.dataclass
class PsfEstimate:
    """A band's estimated PSF and what it came from."""

    psf: np.ndarray
    """(K, K) PSF, centred, summing to 1."""
    fwhm: float
    """FWHM (pixels) of a 2-D Gaussian fitted to it (geometric mean of its axes)."""
    stars: np.ndarray
    """(N, 2) x, y of the stars it was built from."""

    @property
    def n_stars(self) -> int:
        return len(self.stars)


def psf_fwhm(psf: np.ndarray) -> float:
    """FWHM (pixels) of a 2-D Gaussian fitted to a PSF image: 2.3548 √(σx σy)."""
    from astropy.modeling import fitting, models

    psf = np.asarray(psf, dtype=np.float64)
    height, width = psf.shape
    y, x = np.mgrid[:height, :width]
    start = models.Gaussian2D(psf.max(), (width - 1) / 2, (height - 1) / 2, 1.5, 1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns when the fit is poorly conditioned
        fitted = fitting.LevMarLSQFitter()(start, x, y, psf)
    return float(
        2.0 * np.sqrt(2.0 * np.log(2.0)) * np.sqrt(abs(fitted.x_stddev.value * fitted.y_stddev.value))
    )


def box_snr(image: np.ndarray, variance: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(nbands, N) S/N of the light in the 7×7 box around each pixel (x, y) of (nbands, H, W) planes."""
    k = _SNR_HALF_BOX
    boxes = [
        (slice(None), slice(yy - k, yy + k + 1), slice(xx - k, xx + k + 1))
        for xx, yy in zip(x, y, strict=True)
    ]
    flux = np.array([image[box].sum(axis=(1, 2)) for box in boxes]).reshape(len(boxes), -1)
    noise = np.sqrt(np.array([variance[box].sum(axis=(1, 2)) for box in boxes])).reshape(len(boxes), -1)
    return (flux / noise).T


def select_psf_stars(
    chi: np.ndarray,
    good: np.ndarray,
    image: np.ndarray,
    variance: np.ndarray,
    size: int,
    min_snr: float,
    max_stars: int,
) -> np.ndarray:
    """(N, 2) x, y of the stars to build the PSF from (module docstring), brightest first.

    Parameters
    ----------
    chi : `numpy.ndarray`
        (H, W) band-summed S/N image (per pixel).
    good : `numpy.ndarray`
        (H, W) bool: usable in every band.
    image, variance : `numpy.ndarray`
        (nbands, H, W) images and variances.
    """
    from photutils.detection import find_peaks

    half = size // 2
    data = np.where(good, chi, 0.0)
    # A point source holds about a tenth of its S/N in its peak pixel: a loose first cut.
    peaks = find_peaks(data, threshold=min_snr / 10.0, box_size=5, border_width=half + 1)
    if peaks is None or len(peaks) == 0:
        return np.zeros((0, 2))
    neighbours = find_peaks(data, threshold=_NEIGHBOUR_SNR, box_size=3)
    others = np.column_stack([neighbours["x_peak"], neighbours["y_peak"]]).astype(float)
    x_all, y_all = np.asarray(peaks["x_peak"]), np.asarray(peaks["y_peak"])
    total = np.sqrt(np.sum(np.maximum(box_snr(image, variance, x_all, y_all), 0.0) ** 2, axis=0))
    chosen = []
    for x, y, value in zip(x_all, y_all, total, strict=True):
        if value < min_snr:
            continue
        distance = np.hypot(others[:, 0] - x, others[:, 1] - y)
        if np.any((distance > 0) & (distance < half)):
            continue
        cut = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
        if not good[cut].all():
            continue
        core = image[:, y - 1 : y + 2, x - 1 : x + 2]
        top = image[:, y, x][:, None, None]
        if np.any(np.sum(core >= _FLAT_FRACTION * top, axis=(1, 2)) >= _FLAT_PIXELS):
            continue
        inner = data[y - half // 2 : y + half // 2 + 1, x - half // 2 : x + half // 2 + 1].sum()
        concentration = data[y - 1 : y + 2, x - 1 : x + 2].sum() / inner if inner > 0 else 0.0
        chosen.append((x, y, value, concentration))
    if not chosen:
        return np.zeros((0, 2))
    chosen = np.array(chosen, dtype=np.float64)
    stellar = np.percentile(chosen[:, 3], 80)
    chosen = chosen[chosen[:, 3] >= _CONCENTRATION_FRACTION * stellar]
    chosen = chosen[np.argsort(-chosen[:, 2], kind="stable")][:max_stars]
    return chosen[:, :2]


def _effective_psf(image: np.ndarray, stars: np.ndarray, size: int) -> np.ndarray:
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    cutouts = extract_stars(
        NDData(np.asarray(image, dtype=np.float64)), Table({"x": stars[:, 0], "y": stars[:, 1]}), size=size
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils' convergence and centring notes
        epsf, _ = EPSFBuilder(oversampling=2, maxiters=10, progress_bar=False)(cutouts)
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    psf = np.asarray(epsf.evaluate(x, y, flux=1.0, x_0=0.0, y_0=0.0), dtype=np.float64)
    psf = np.maximum(psf, 0.0)
    return psf / psf.sum()


def estimate_psfs(
    image: np.ndarray,
    variance: np.ndarray,
    good: np.ndarray,
    bands: tuple[str, ...],
    *,
    size: int = 25,
    min_stars: int = 5,
    max_stars: int = 30,
    min_snr: float = 20.0,
) -> list[PsfEstimate]:
    """One `PsfEstimate` per band of (nbands, H, W) images (module docstring).

    Parameters
    ----------
    image, variance, good : `numpy.ndarray`
        (nbands, H, W) images, variances and usable pixels.
    bands : `tuple` [`str`]
        Their bands (for messages).
    size : `int`
        Odd side of the PSF images and of the star stamps.
    min_stars : `int`
        Fewest stars a band's PSF is built from.
    max_stars : `int`
        Most stars used (the highest S/N).
    min_snr : `float`
        Least S/N of a star, over the bands and in each band it is used in.

    Raises
    ------
    PsfEstimationError
        If a band has fewer than ``min_stars`` such stars.
    """
    if size % 2 == 0 or size < 7:
        raise InputError(f"The PSF size must be odd and at least 7, not {size}.")
    image = np.asarray(image, dtype=np.float64)
    variance = np.where(good, np.asarray(variance, dtype=np.float64), np.inf)
    chi = np.where(good, image / np.sqrt(variance), 0.0)
    usable = np.all(good, axis=0)
    stars = select_psf_stars(
        chi.sum(axis=0) / np.sqrt(len(bands)), usable, image, variance, size, min_snr, max_stars
    )
    snr = box_snr(image, variance, stars[:, 0].astype(int), stars[:, 1].astype(int)) if len(stars) else None
    estimates = []
    for band_index, band in enumerate(bands):
        in_band = stars if snr is None else stars[snr[band_index] >= min_snr]
        if len(in_band) < min_stars:
            raise PsfEstimationError(
                f"Band {band}: {len(in_band)} bright, isolated, unsaturated stars (S/N >= {min_snr:g}) to "
                f"estimate the PSF from; at least {min_stars} are needed. Give the PSF (--psf {band}=FILE) "
                "or a larger image."
            )
        psf = _effective_psf(image[band_index], in_band, size)
        estimates.append(PsfEstimate(psf=psf, fwhm=psf_fwhm(psf), stars=in_band))
    return estimates
