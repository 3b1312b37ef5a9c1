"""FFT convolution of a multi-band model box with per-band kernels, and its adjoint.

The fit needs two linear maps per iteration: the forward convolution of the
model-frame cube with the difference kernels (cropped to the blend box, like
``mode="same"``) and its adjoint (correlation, to carry the likelihood
gradient back to the model frame). Both reuse one cached transform of the
kernels per box shape; the padding is large enough that nothing wraps around,
so the result equals the direct linear convolution.
"""

from __future__ import annotations

__all__ = ["BoxConvolver"]

import numpy as np
from scipy import fft


class BoxConvolver:
    """Convolve (nbands, H, W) cubes with per-band (K, K) kernels.

    Parameters
    ----------
    kernels : `numpy.ndarray`
        (nbands, K, K) kernels, K odd, centred.
    shape : `tuple` [`int`, `int`]
        (H, W) of the cubes to convolve.
    """

    def __init__(self, kernels: np.ndarray, shape: tuple[int, int]):
        kernels = np.asarray(kernels, dtype=np.float64)
        self.nbands, kh, kw = kernels.shape
        self.shape = (int(shape[0]), int(shape[1]))
        self.half = (kh // 2, kw // 2)
        self.kernel_shape = (kh, kw)
        # Linear (full) convolution has H + K - 1 rows: no wrap-around in this size.
        self.fft_shape = (
            fft.next_fast_len(self.shape[0] + kh - 1, real=True),
            fft.next_fast_len(self.shape[1] + kw - 1, real=True),
        )
        padded = np.zeros((self.nbands, *self.fft_shape))
        padded[:, :kh, :kw] = kernels
        self._kernel_fft = fft.rfft2(padded)
        self._kernel_fft_conj = np.conj(self._kernel_fft)

    @property
    def full_shape(self) -> tuple[int, int]:
        """(H + K - 1, W + K - 1): the support of the full convolution."""
        return self.shape[0] + self.kernel_shape[0] - 1, self.shape[1] + self.kernel_shape[1] - 1

    def _transform(self, cube: np.ndarray) -> np.ndarray:
        return fft.rfft2(cube, s=self.fft_shape)

    def convolve(self, cube: np.ndarray) -> np.ndarray:
        """(..., nbands, H, W) convolution cropped to the input box ("same").

        Leading axes (e.g. one per component) are broadcast.
        """
        full = fft.irfft2(self._transform(cube) * self._kernel_fft, s=self.fft_shape)
        hy, hx = self.half
        return full[..., hy : hy + self.shape[0], hx : hx + self.shape[1]]

    def convolve_full(self, cube: np.ndarray) -> np.ndarray:
        """(..., nbands, H + K - 1, W + K - 1) full convolution: the box grown by K // 2 on each side."""
        full = fft.irfft2(self._transform(cube) * self._kernel_fft, s=self.fft_shape)
        return full[..., : self.full_shape[0], : self.full_shape[1]]

    def adjoint(self, cube: np.ndarray) -> np.ndarray:
        """Adjoint of `convolve`: correlation of a (nbands, H, W) cube with the kernels."""
        hy, hx = self.half
        padded = np.zeros((cube.shape[0], *self.fft_shape))
        padded[:, hy : hy + self.shape[0], hx : hx + self.shape[1]] = cube
        result = fft.irfft2(fft.rfft2(padded) * self._kernel_fft_conj, s=self.fft_shape)
        return result[:, : self.shape[0], : self.shape[1]]
