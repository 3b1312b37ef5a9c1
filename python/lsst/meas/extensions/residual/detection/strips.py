"""Patch-sized "same" convolutions with a small kernel, strip by strip.

`scipy.signal.fftconvolve` on a whole patch makes complex temporaries of
the padded patch's size (at 4096² in float64, ~135 MB each, several at
once): the detection images' largest arrays. Convolving strips of rows, each
with the kernel's half-height of rows above and below, gives the same result
(the rows beyond the image are zeros either way) with temporaries of one
strip. A patch no taller than a strip is convolved in one call, exactly as
before.
"""

from __future__ import annotations

__all__ = ["STRIP_ROWS", "convolve_same"]

import numpy as np
from scipy.signal import fftconvolve

#: Rows per strip: transforms of 1024 rows keep the FFT's efficiency while bounding its memory.
STRIP_ROWS = 1024


def convolve_same(image: np.ndarray, kernel: np.ndarray, strip_rows: int = STRIP_ROWS) -> np.ndarray:
    """``fftconvolve(image, kernel, mode="same")`` of a 2-D image, strip by strip (float64).

    Parameters
    ----------
    image : `numpy.ndarray`
        (H, W) image.
    kernel : `numpy.ndarray`
        (k, l) kernel with odd sides.
    strip_rows : `int`
        Rows of the result made per call.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"convolve_same needs a kernel with odd sides, not {kernel.shape}.")
    height = image.shape[0]
    if height <= strip_rows:
        return fftconvolve(image, kernel, mode="same")
    half = kernel.shape[0] // 2
    result = np.empty(image.shape, dtype=np.float64)
    for y0 in range(0, height, strip_rows):
        y1 = min(y0 + strip_rows, height)
        lo, hi = max(y0 - half, 0), min(y1 + half, height)
        # "same" on the extended strip is centred on it: its rows y0..y1 are the image's.
        block = fftconvolve(image[lo:hi], kernel, mode="same")
        result[y0:y1] = block[y0 - lo : y0 - lo + (y1 - y0)]
    return result
