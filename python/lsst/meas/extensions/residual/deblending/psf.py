"""The model-frame PSF and the kernels that carry a model to each band's PSF.

Scarlet fits every source in a common "model frame" whose PSF is a narrow
circular Gaussian (σ ≈ 0.8 px, nearly the pixel scale), so a model is a
slightly smoothed picture of the source and the same model serves every band.
Each band's observed image is then the model convolved with a *difference
kernel* k_b, defined in Fourier space by  k̂_b = P̂_b / M̂  (P_b the observed
PSF of band b, M the model PSF). Since M is narrower than any observed PSF,
M̂ is broad and the division is well conditioned.
"""

from __future__ import annotations

__all__ = ["integrated_gaussian_psf", "difference_kernels", "check_psfs"]

import functools

import numpy as np
from scipy import fft
from scipy.special import erf


def integrated_gaussian_psf(sigma: float = 0.8, size: int = 15) -> np.ndarray:
    """Circular Gaussian integrated over pixels, (size, size), summing to 1.

    Parameters
    ----------
    sigma : `float`
        Standard deviation in pixels.
    size : `int`
        Odd side of the image; the Gaussian is centred on the central pixel.
    """
    if size % 2 == 0 or size < 1:
        raise ValueError(f"Model PSF size must be odd and positive, not {size}.")
    if not sigma > 0:
        raise ValueError(f"Model PSF sigma must be positive, not {sigma}.")
    edges = np.arange(size + 1, dtype=np.float64) - size / 2.0
    cdf = 0.5 * (1.0 + erf(edges / (np.sqrt(2.0) * sigma)))
    profile = np.diff(cdf)
    image = np.outer(profile, profile)
    return image / image.sum()


def check_psfs(psfs: np.ndarray, what: str = "PSF") -> np.ndarray:
    """Return ``psfs`` as float64 (nbands, K, K), K odd, finite; else raise ValueError."""
    psfs = np.asarray(psfs, dtype=np.float64)
    if psfs.ndim == 2:
        psfs = psfs[None]
    if psfs.ndim != 3 or psfs.shape[1] % 2 == 0 or psfs.shape[2] % 2 == 0:
        raise ValueError(f"{what} must be (nbands, K, K) with odd sides; got shape {psfs.shape}.")
    if not np.all(np.isfinite(psfs)):
        raise ValueError(f"{what} has non-finite values.")
    sums = psfs.sum(axis=(1, 2))
    if np.any(sums <= 0):
        raise ValueError(f"{what} must have a positive sum in every band; sums are {sums}.")
    return psfs


def _centred_fft(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rFFT of ``image`` (..., h, w) zero-padded to ``shape`` with its central pixel at the origin."""
    h, w = image.shape[-2:]
    padded = np.zeros(image.shape[:-2] + tuple(shape), dtype=np.float64)
    padded[..., :h, :w] = image
    padded = np.roll(padded, (-(h // 2), -(w // 2)), axis=(-2, -1))
    return fft.rfft2(padded)


def difference_kernels(observed_psfs: np.ndarray, model_psf: np.ndarray) -> np.ndarray:
    """Per-band kernels k_b with  model_psf ⊗ k_b = observed_psf_b.

    The result is read-only and shared between calls with equal PSFs.

    Parameters
    ----------
    observed_psfs : `numpy.ndarray`
        (nbands, K, K) observed PSF per band, K odd.
    model_psf : `numpy.ndarray`
        (k, k) model-frame PSF, k odd.

    Returns
    -------
    kernels : `numpy.ndarray`
        (nbands, K, K) float64 difference kernels, centred, each summing to
        the ratio of the PSF sums (1 for normalised PSFs).
    """
    observed = check_psfs(observed_psfs, "Observed PSF")
    model = check_psfs(model_psf, "Model PSF")[0]
    # Keyed by the PSFs' bytes: rendering a patch asks for the same kernels once per blend.
    return _kernels_of(observed.shape, observed.tobytes(), model.shape, model.tobytes())


@functools.lru_cache(maxsize=8)
def _kernels_of(observed_shape, observed_bytes: bytes, model_shape, model_bytes: bytes) -> np.ndarray:
    """`difference_kernels` of float64 PSFs given by shape and bytes (hashable), read-only."""
    observed = np.frombuffer(observed_bytes, dtype=np.float64).reshape(observed_shape)
    model = np.frombuffer(model_bytes, dtype=np.float64).reshape(model_shape)
    kernels = _difference_kernels(observed, model)
    kernels.flags.writeable = False
    return kernels


def _difference_kernels(observed: np.ndarray, model: np.ndarray) -> np.ndarray:
    """`difference_kernels` of checked (nbands, K, K) and (k, k) PSFs."""
    size = observed.shape[-1]
    height = observed.shape[-2]
    # Pad generously so the kernel's (small) wings do not wrap around.
    shape = (
        fft.next_fast_len(2 * (height + model.shape[0]) + 1, real=True),
        fft.next_fast_len(2 * (size + model.shape[1]) + 1, real=True),
    )
    ratio = _centred_fft(observed, shape) / _centred_fft(model, shape)[None]
    kernel = fft.irfft2(ratio, s=shape)
    kernel = np.roll(kernel, (height // 2, size // 2), axis=(-2, -1))[..., :height, :size]
    return kernel
