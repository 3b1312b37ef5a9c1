"""Noise of a background-subtracted LSST coadd.

The per-pixel noise of each band is set so that a point source at the band's
5σ depth is detected at 5σ under nominal seeing (worse seeing then gives a
shallower scene, as on the sky). That noise is split into sky Poisson noise
and read noise; the effective gain follows from the sky level, so sources add
their own Poisson noise on top.

Real coadds also carry what background subtraction left behind: `background_residual`
draws a small constant offset and a linear gradient per band, added to the image
but not to the truth or the variance.
"""

from __future__ import annotations

__all__ = ["NoiseModel", "BackgroundResidual", "background_residual", "make_noise_model"]

import dataclasses
import functools

import numpy as np

from .psf import make_psfs
from .survey import NOMINAL_PSF_FWHM, SKY_BRIGHTNESS, depth, mag_to_flux


@dataclasses.dataclass
class NoiseModel:
    """Per-band noise parameters (image units: nJy)."""

    sky: np.ndarray
    """(nbands,) sky level per pixel that was subtracted."""
    gain: np.ndarray
    """(nbands,) effective gain, counts per image unit."""
    read_sigma: np.ndarray
    """(nbands,) read noise per pixel."""

    @property
    def background_sigma(self) -> np.ndarray:
        """(nbands,) noise per pixel where there is no source."""
        return np.sqrt(self.sky / self.gain + self.read_sigma**2)

    def variance(self, model: np.ndarray) -> np.ndarray:
        """Expected variance (nbands, H, W) of an image whose noiseless value is ``model``."""
        source = np.clip(model, 0.0, None) / self.gain[:, None, None]
        return (self.background_sigma**2)[:, None, None] + source

    def add_noise(self, rng: np.random.Generator, model: np.ndarray) -> np.ndarray:
        """Poisson (sky + source) plus Gaussian read noise, sky subtracted."""
        sky = self.sky[:, None, None]
        gain = self.gain[:, None, None]
        counts = rng.poisson((np.clip(model, 0.0, None) + sky) * gain)
        read = rng.normal(0.0, 1.0, size=model.shape) * self.read_sigma[:, None, None]
        return counts / gain - sky + read


@functools.cache
def _nominal_effective_area(bands: tuple[str, ...], pixel_scale: float) -> np.ndarray:
    """Effective number of pixels 1/Σpsf² of the nominal-seeing PSF in each band."""
    psf = make_psfs(bands, NOMINAL_PSF_FWHM, 41, pixel_scale)
    return 1.0 / np.sum(psf.image**2, axis=(1, 2))


def make_noise_model(
    bands: tuple[str, ...], survey_depth: str | float, pixel_scale: float, read_noise_fraction: float = 0.05
) -> NoiseModel:
    """Noise of the ``survey_depth`` coadd in ``bands``.

    Parameters
    ----------
    survey_depth : `str` or `float`
        ``"10yr"``, ``"1yr"`` or the coadd's length in years (see
        `~lsst.meas.extensions.residual.simulation.survey.depth`).
    read_noise_fraction : `float`
        Fraction of the background variance due to read noise.
    """
    if not 0.0 <= read_noise_fraction < 1.0:
        raise ValueError(f"read_noise_fraction must be in [0, 1), not {read_noise_fraction}.")
    five_sigma_flux = mag_to_flux([depth(b, survey_depth) for b in bands])
    sigma2 = (five_sigma_flux / 5.0) ** 2 / _nominal_effective_area(tuple(bands), pixel_scale)
    sky = mag_to_flux([SKY_BRIGHTNESS[b] for b in bands]) * pixel_scale**2
    gain = sky / ((1.0 - read_noise_fraction) * sigma2)
    return NoiseModel(sky=sky, gain=gain, read_sigma=np.sqrt(read_noise_fraction * sigma2))


@dataclasses.dataclass
class BackgroundResidual:
    """A per-band background left in the image: constant offset plus linear gradient (nJy)."""

    offset: np.ndarray
    """(nbands,) level at the scene centre."""
    gradient: np.ndarray
    """(nbands, 2) change (x, y) of the level from one edge of the scene to the other."""

    def image(self, shape: tuple[int, int]) -> np.ndarray:
        """The (nbands, H, W) background of a scene of ``shape``."""
        height, width = shape
        # Pixel coordinates as fractions of the scene, -0.5 at one edge, +0.5 at the other.
        x = np.arange(width) / max(width - 1, 1) - 0.5
        y = np.arange(height) / max(height - 1, 1) - 0.5
        return (
            self.offset[:, None, None]
            + self.gradient[:, 0, None, None] * x[None, None, :]
            + self.gradient[:, 1, None, None] * y[None, :, None]
        )


def background_residual(
    rng: np.random.Generator, background_sigma: np.ndarray, offset_sigma: float, gradient_sigma: float
) -> BackgroundResidual:
    """Draw a background residual in each band, in units of that band's background noise.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random numbers (three normal deviates per band are drawn, always in the same order).
    background_sigma : `numpy.ndarray`
        (nbands,) background noise per pixel (nJy).
    offset_sigma : `float`
        Scatter of the constant offset, in units of ``background_sigma``.
    gradient_sigma : `float`
        Scatter of each gradient component (the change across the scene), in
        units of ``background_sigma``.
    """
    if offset_sigma < 0.0 or gradient_sigma < 0.0:
        raise ValueError(
            "Background residual scatters must be >= 0, not "
            f"offset {offset_sigma}, gradient {gradient_sigma}."
        )
    sigma = np.asarray(background_sigma, dtype=np.float64)
    draws = rng.normal(0.0, 1.0, size=(len(sigma), 3))
    return BackgroundResidual(
        offset=draws[:, 0] * offset_sigma * sigma,
        gradient=draws[:, 1:] * gradient_sigma * sigma[:, None],
    )
