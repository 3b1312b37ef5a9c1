"""Fit all sources of one blend jointly (scarlet_lite's ``Blend.fit``).

Each iteration renders the model-frame cube (sum of the components),
convolves it to the observed PSFs, evaluates the Gaussian log-likelihood
``-½ Σ w (image − model)²``, carries the gradient back to the model frame
with the adjoint convolution, and lets every component take one proximal
ADAM step. The fit stops when the log-likelihood changes by less than
``relative_error`` of itself, after at least ``min_iter`` iterations.
"""

from __future__ import annotations

__all__ = ["BlendFit", "fit_blend", "model_frame"]

import dataclasses

import numpy as np

from .component import FactorizedComponent
from .config import DeblendConfig
from .initialization import BlendObservation


@dataclasses.dataclass
class BlendFit:
    """How the fit of a blend went."""

    n_iter: int
    converged: bool
    log_likelihood: list[float]


def model_frame(obs: BlendObservation, components: list[FactorizedComponent]) -> np.ndarray:
    """(nbands, H, W) sum of the component models on the blend box."""
    model = np.zeros(obs.image.shape)
    for component in components:
        model[:, *component.box.slices(obs.box)] += component.model()
    return model


def log_likelihood(obs: BlendObservation, components: list[FactorizedComponent]) -> float:
    """Gaussian log-likelihood (up to a constant) of the components' model of the blend's data."""
    residual = obs.convolver.convolve(model_frame(obs, components)) - obs.image
    return -0.5 * float(np.einsum("bhw,bhw->", obs.weights * residual, residual))


def fit_blend(
    obs: BlendObservation, components: list[FactorizedComponent], config: DeblendConfig
) -> BlendFit:
    """Fit ``components`` (in place) to the blend's data.

    Returns
    -------
    fit : `BlendFit`
        Iterations, convergence and the log-likelihood history.
    """
    history: list[float] = []
    converged = False
    iteration = 0
    while iteration < config.max_iter:
        residual = obs.convolver.convolve(model_frame(obs, components))
        residual -= obs.image
        weighted = obs.weights * residual
        # einsum's own loop, not BLAS: a threaded ddot on a busy machine costs more than the sum.
        history.append(-0.5 * float(np.einsum("bhw,bhw->", weighted, residual)))
        grad = obs.convolver.adjoint(weighted)
        resize = iteration > 0 and iteration % config.resize_frequency == 0
        for component in components:
            component.update(iteration, grad[:, *component.box.slices(obs.box)])
            if resize:
                component.resize(obs.box)
        iteration += 1
        if iteration > config.min_iter and abs(history[-1] - history[-2]) < config.relative_error * abs(
            history[-1]
        ):
            converged = True
            break
    return BlendFit(n_iter=iteration, converged=converged, log_likelihood=history)
