"""A variance plane for an image that has none: the sky's, and the sources' where a gain is given.

The sky noise is measured with photutils' ``Background2D`` (boxes of
``box_size`` pixels, sigma-clipped, the MAD standard deviation of each box,
median-filtered over 3×3 boxes and interpolated between them): a robust,
spatially varying σ that sources do not inflate. Without a gain that is the
whole variance, so bright sources get too little (their Poisson noise is
left out; the header says so). With a gain (electrons per image unit) each
pixel adds its own Poisson variance, max(image, 0) / gain.

Coadds have correlated noise (warping spreads each input pixel's noise over
its neighbours): a per-pixel σ measured on the image is then what the
pixels show, and sums over many pixels have more variance than it implies.
"""

from __future__ import annotations

__all__ = ["NoiseEstimate", "estimate_variance", "NO_POISSON_TERM"]

import dataclasses
import warnings

import numpy as np

from ..errors import InputError

#: How an estimate's method says that it holds no source Poisson term.
NO_POISSON_TERM = "no source Poisson term"


@dataclasses.dataclass
class NoiseEstimate:
    """An estimated variance plane and how it was made."""

    variance: np.ndarray
    """(H, W) float32 variance, in squared image units."""
    sky_sigma: float
    """Median sky σ over the image (image units)."""
    background: float
    """Median sky level left in the image (image units; ~0 for a background-subtracted image)."""
    method: str
    """What the variance holds, for the header."""


def estimate_variance(
    image: np.ndarray, good: np.ndarray | None = None, gain: float | None = None, box_size: int = 64
) -> NoiseEstimate:
    """The variance of ``image`` from its sky (module docstring).

    Parameters
    ----------
    image : `numpy.ndarray`
        (H, W) image.
    good : `numpy.ndarray`, optional
        (H, W) bool: pixels with data (default: the finite ones).
    gain : `float`, optional
        Electrons per image unit: adds the sources' Poisson variance.
    box_size : `int`
        Side of the background boxes (pixels); a smaller image uses its own size.

    Raises
    ------
    InputError
        If the image has too few usable pixels to measure a sky.
    """
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MADStdBackgroundRMS, MedianBackground

    image = np.asarray(image, dtype=np.float64)
    good = np.isfinite(image) if good is None else (np.asarray(good, dtype=bool) & np.isfinite(image))
    if good.sum() < 100:
        raise InputError(f"Only {int(good.sum())} usable pixels: too few to measure the sky noise.")
    if gain is not None and not gain > 0:
        raise InputError(f"The gain must be positive (electrons per image unit), not {gain}.")
    box = int(min(box_size, *image.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # photutils warns about boxes it had to drop: fine here
        background = Background2D(
            np.where(good, image, 0.0),
            box,
            mask=~good,
            filter_size=(3, 3),
            sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
            bkg_estimator=MedianBackground(),
            bkgrms_estimator=MADStdBackgroundRMS(),
        )
    sky = np.asarray(background.background_rms, dtype=np.float64)
    if not np.all(np.isfinite(sky)) or not np.any(sky > 0):
        raise InputError("The sky noise could not be measured (no usable background box).")
    variance = sky**2
    method = f"sky (photutils Background2D, {box}-px boxes, MAD std)"
    if gain is not None:
        variance = variance + np.maximum(image, 0.0) / gain
        method += f" + source Poisson (gain {gain:g} e-/unit)"
    else:
        method += f"; {NO_POISSON_TERM} (no gain given)"
    variance = np.where(good, variance, np.inf)
    return NoiseEstimate(
        variance=variance.astype(np.float32),
        sky_sigma=float(np.median(sky)),
        background=float(np.median(background.background)),
        method=method,
    )
