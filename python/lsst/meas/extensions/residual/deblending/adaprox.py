"""Proximal ADAM ("adaprox", AMSGrad variant) as scarlet_lite uses it.

Each parameter keeps ADAM's first and second moment estimates; after the
gradient step the parameter is projected by its proximal operator (the
constraints). Following scarlet_lite: AMSGrad (the running maximum of the
second moment, floored at ``eps``), no bias correction, and a first step a
tenth of the nominal size to tame ADAM's known overshoot at start.
"""

from __future__ import annotations

__all__ = ["AdaproxState"]

import numpy as np


class AdaproxState:
    """ADAM moments of one array parameter.

    Parameters
    ----------
    shape : `tuple` [`int`, ...]
        Shape of the parameter.
    b1, b2, eps : `float`
        ADAM's decay rates and the floor of the second moment.
    """

    def __init__(self, shape: tuple[int, ...], b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.vhat = np.full(shape, -np.inf)
        self.b1, self.b2, self.eps = b1, b2, eps

    def step(self, iteration: int, x: np.ndarray, grad: np.ndarray, step: np.ndarray | float) -> np.ndarray:
        """Return ``x`` after one (unconstrained) AMSGrad step of size ``step``."""
        self.m *= self.b1
        self.m += (1.0 - self.b1) * grad
        self.v *= self.b2
        self.v += (1.0 - self.b2) * grad * grad
        np.maximum(self.vhat, self.v, out=self.vhat)
        psi = np.sqrt(np.maximum(self.vhat, self.eps))
        scale = step if iteration > 0 else np.asarray(step) / 10.0
        return x - scale * self.m / psi

    def embed(
        self, slices_new: tuple[slice, slice], slices_old: tuple[slice, slice], shape: tuple[int, int]
    ) -> None:
        """Move the moments of a 2-D parameter into a resized box (new cells start at zero)."""
        for name, fill in (("m", 0.0), ("v", 0.0), ("vhat", -np.inf)):
            old = getattr(self, name)
            new = np.full(shape, fill)
            new[slices_new] = old[slices_old]
            setattr(self, name, new)
