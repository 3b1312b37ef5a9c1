"""FFT convolution of a multi-band model box with per-band kernels, and its adjoint.

The fit needs two linear maps per iteration: the forward convolution of the
model-frame cube with the difference kernels (cropped to the blend box, like
``mode="same"``) and its adjoint (correlation, to carry the likelihood
gradient back to the model frame). Both reuse one cached transform of the
kernels per box shape, and transform all bands (and any leading axes, e.g.
one per component) in one ``rfft2`` call.

Sizes. Only the box (H, W) of the result is kept, so the transform need not
hold the whole linear convolution (H + K − 1): with the kernel stored centred
on the origin (wrapped), a cyclic convolution of length N ≥ H + K // 2
already equals the linear one on the box, because the terms that wrap
around land only outside it (for a box narrower than the kernel, the kernel
folds onto itself, harmlessly for the same reason). N is then rounded up to
a size with small prime factors (`scipy.fft.next_fast_len`). The adjoint is
the same product with the conjugate transform (the mirrored kernel), again
with the box at the origin, so neither map pads or shifts anything in real
space. `BoxConvolver.convolve_full`, which keeps the whole support, uses its
own transform of size ≥ H + K − 1. Each transform is made on first use.

Precision. The fit's transforms may run in single precision
(``transform_dtype=np.float32``; the results are float64 either way). A
single-precision transform of a cube errs by about 1e-7 of the cube's RMS
per pixel: for a source with S/N 1e4 at its peak that is at most 1e-3 of
the noise, far below what moves the fit (its stopping rule is a 1e-3 change
of the likelihood). It takes under a third of the time of a double one once
a box passes ~100 pixels a side (the cube then leaves the CPU's L2 cache),
and these large boxes are where a blend's iterations spend their time.
Rendering stored models keeps double precision: its output is compared with
scarlet_lite's to 1e-5.
"""

from __future__ import annotations

__all__ = ["BoxConvolver", "KernelTransforms", "same_fft_shape"]

import functools

import numpy as np
from scipy import fft


def same_fft_shape(shape: tuple[int, int], kernel_shape: tuple[int, int]) -> tuple[int, int]:
    """Fast transform shape for a convolution cropped to ``shape`` (odd ``kernel_shape``)."""
    return (
        fft.next_fast_len(int(shape[0]) + kernel_shape[0] // 2, real=True),
        fft.next_fast_len(int(shape[1]) + kernel_shape[1] // 2, real=True),
    )


class KernelTransforms:
    """The transforms of one set of kernels, by transform shape and precision, for many boxes.

    A pass makes a convolver for every blend, window and source box, and
    transforms sized to fast lengths repeat: a 2048² first pass made 4817
    "same" transforms of its kernels in 202 shapes (and its patch render 1811
    full ones in 158). The convolvers of a pass share one of these, so each
    shape is transformed once; beyond ``max_bytes`` of stored transforms new
    shapes are transformed for their convolver alone (the common shapes are
    the small ones, met first and most).

    Parameters
    ----------
    kernels : `numpy.ndarray`
        (nbands, K, K) kernels, K odd, centred.
    max_bytes : `int`
        Most bytes of transforms kept.
    """

    def __init__(self, kernels: np.ndarray, max_bytes: int = 64_000_000):
        self.kernels = np.asarray(kernels, dtype=np.float64)
        self.max_bytes = int(max_bytes)
        self._kept: dict[tuple, np.ndarray] = {}
        self._bytes = 0

    def get(self, key: tuple, make) -> np.ndarray:
        """The transform stored under ``key``, else ``make()`` (stored while there is room)."""
        found = self._kept.get(key)
        if found is not None:
            return found
        made = make()
        if self._bytes + made.nbytes <= self.max_bytes:
            made.flags.writeable = False  # shared: no convolver may change it in place
            self._kept[key] = made
            self._bytes += made.nbytes
        return made


class BoxConvolver:
    """Convolve (nbands, H, W) cubes with per-band (K, K) kernels.

    Parameters
    ----------
    kernels : `numpy.ndarray`
        (nbands, K, K) kernels, K odd, centred.
    shape : `tuple` [`int`, `int`]
        (H, W) of the cubes to convolve.
    transform_dtype : `numpy.dtype`
        float64 (default) or float32: the precision of the transforms of
        `convolve`, `convolve_bands` and `adjoint` (see the module's
        docstring). Their results are float64 either way; `convolve_full`
        is always double.
    transforms : `KernelTransforms`, optional
        Transforms of ``kernels`` shared with other convolvers (default: this
        convolver's own).
    """

    def __init__(
        self,
        kernels: np.ndarray,
        shape: tuple[int, int],
        transform_dtype=np.float64,
        transforms: KernelTransforms | None = None,
    ):
        if transforms is not None and not (
            kernels is transforms.kernels or np.array_equal(kernels, transforms.kernels)
        ):
            raise ValueError("The shared kernel transforms are of other kernels.")
        self.transforms = KernelTransforms(kernels, max_bytes=0) if transforms is None else transforms
        kernels = self.transforms.kernels
        self.transform_dtype = np.dtype(transform_dtype)
        if self.transform_dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"transform_dtype must be float64 or float32, not {self.transform_dtype}.")
        self.nbands, kh, kw = kernels.shape
        self.shape = (int(shape[0]), int(shape[1]))
        self.half = (kh // 2, kw // 2)
        self.kernel_shape = (kh, kw)
        self._kernels = kernels
        self.fft_shape = same_fft_shape(self.shape, self.kernel_shape)
        self.full_fft_shape = (
            fft.next_fast_len(self.shape[0] + kh - 1, real=True),
            fft.next_fast_len(self.shape[1] + kw - 1, real=True),
        )

    # The kernel transforms are made on first use: the fit uses only the "same" pair, rendering
    # only the full one.
    def _centred_kernel_fft(self) -> np.ndarray:
        # The kernel centred on pixel (0, 0), offset d stored at d mod N. For a box narrower than the
        # kernel, N < K and offsets fold onto one another: the folded terms only ever meet pixels
        # outside the box, so the sum stays exact there.
        kh, kw = self.kernel_shape
        rows = (np.arange(kh) - self.half[0]) % self.fft_shape[0]
        cols = (np.arange(kw) - self.half[1]) % self.fft_shape[1]
        centred = np.zeros((self.nbands, *self.fft_shape))
        np.add.at(centred, (slice(None), rows[:, None], cols[None, :]), self._kernels)
        return fft.rfft2(centred.astype(self.transform_dtype, copy=False))

    def _padded_kernel_fft(self) -> np.ndarray:
        kh, kw = self.kernel_shape
        padded = np.zeros((self.nbands, *self.full_fft_shape))
        padded[:, :kh, :kw] = self._kernels
        return fft.rfft2(padded)

    @functools.cached_property
    def _kernel_fft(self) -> np.ndarray:
        key = ("same", self.fft_shape, self.transform_dtype.str)
        return self.transforms.get(key, self._centred_kernel_fft)

    @functools.cached_property
    def _kernel_fft_conj(self) -> np.ndarray:
        key = ("same, conjugate", self.fft_shape, self.transform_dtype.str)
        return self.transforms.get(key, lambda: np.conj(self._kernel_fft))

    @functools.cached_property
    def _full_kernel_fft(self) -> np.ndarray:
        return self.transforms.get(("full", self.full_fft_shape), self._padded_kernel_fft)

    @property
    def full_shape(self) -> tuple[int, int]:
        """(H + K - 1, W + K - 1): the support of the full convolution."""
        return self.shape[0] + self.kernel_shape[0] - 1, self.shape[1] + self.kernel_shape[1] - 1

    def _apply(self, cube: np.ndarray, kernel_fft: np.ndarray) -> np.ndarray:
        product = fft.rfft2(cube.astype(self.transform_dtype, copy=False), s=self.fft_shape)
        product *= kernel_fft
        result = fft.irfft2(product, s=self.fft_shape)
        return result[..., : self.shape[0], : self.shape[1]].astype(np.float64, copy=False)

    def convolve(self, cube: np.ndarray) -> np.ndarray:
        """(..., nbands, H, W) convolution cropped to the input box ("same").

        Leading axes (e.g. one per component) are broadcast.
        """
        return self._apply(cube, self._kernel_fft)

    def convolve_bands(self, images: np.ndarray):
        """Yield, band by band, the (..., H, W) convolution of ``images`` with that band's kernel,
        cropped as `convolve`.

        For many images that are the same in every band (the morphologies of the fit's
        least-squares spectra): transformed once for all bands, and a band's result at a time
        instead of broadcasting them over every band.
        """
        transformed = fft.rfft2(images.astype(self.transform_dtype, copy=False), s=self.fft_shape)
        for band in range(self.nbands):
            result = fft.irfft2(transformed * self._kernel_fft[band], s=self.fft_shape)
            yield result[..., : self.shape[0], : self.shape[1]].astype(np.float64, copy=False)

    def adjoint(self, cube: np.ndarray) -> np.ndarray:
        """Adjoint of `convolve`: correlation of a (..., nbands, H, W) cube with the kernels."""
        return self._apply(cube, self._kernel_fft_conj)

    def convolve_full(self, cube: np.ndarray) -> np.ndarray:
        """(..., nbands, H + K - 1, W + K - 1) full convolution: the box grown by K // 2 on each side."""
        shape = self.full_fft_shape
        full = fft.irfft2(fft.rfft2(cube, s=shape) * self._full_kernel_fft, s=shape)
        return full[..., : self.full_shape[0], : self.full_shape[1]]
