"""One proximal ADAM step of a factorised component, compiled.

Every iteration of a blend's fit moves each component once
(`FactorizedComponent.update`): both gradients from the loss gradient on the
component's box, an AMSGrad step of the spectrum and of the morphology
(`adaprox`), then the constraints (the spectrum floored; the morphology
monotonic about its peak, cut below the background threshold in every band,
positive at the peak, normalised to a peak of 1). Written with numpy that
is about fifteen array operations on boxes of a few hundred pixels: 32 µs
on a 12² box and 64 µs on a 25² one, nearly all of it per-call overhead.
Here it is one compiled call (7 and 23 µs) that does the same arithmetic in
the same order (the monotonic projection is `monotonicity._project`
itself), updating the parameters and the moments in place; the 2048²
first pass of ``bench.scaling`` went from 15.3–15.8 s to 12.8–13.2 s.

The two gradient contractions sum in a plain loop; numpy's ``einsum`` may
order the terms of a long sum differently, so one step of the two differs
by round-off (which, like any change of round-off, can lead a blend with
nearly equal optima into another one).
"""

from __future__ import annotations

__all__ = ["proximal_step"]

import math

import numba
import numpy as np

from .monotonicity import _OFFSET_X, _OFFSET_Y, Monotonicity, _project

FLOOR = 1e-20
"""Smallest spectrum value and peak morphology value (positive, so that both can regrow)."""


@numba.njit(cache=True, nogil=True)
def _adam(x, grad, step, first, m, v, vhat, b1, b2, eps):
    """``x`` after one AMSGrad step (in place), as `AdaproxState.step`; ``step`` per element."""
    flat_x, flat_g, flat_s = x.ravel(), grad.ravel(), step.ravel()
    flat_m, flat_v, flat_vhat = m.ravel(), v.ravel(), vhat.ravel()
    for i in range(flat_x.size):
        flat_m[i] = flat_m[i] * b1 + (1.0 - b1) * flat_g[i]
        flat_v[i] = flat_v[i] * b2 + (1.0 - b2) * flat_g[i] * flat_g[i]
        if flat_v[i] > flat_vhat[i]:
            flat_vhat[i] = flat_v[i]
        psi = math.sqrt(max(flat_vhat[i], eps))
        scale = flat_s[i] / 10.0 if first else flat_s[i]
        flat_x[i] = flat_x[i] - scale * flat_m[i] / psi


@numba.njit(cache=True, nogil=True)
def _step(
    spectrum,
    morph,
    grad,
    first,
    spectrum_moments,
    morph_moments,
    b1,
    b2,
    eps,
    noise_rms,
    spectrum_factor,
    morph_step,
    bg_cut,
    peak_y,
    peak_x,
    monotonic,
    fit_radius,
    weights,
    centre,
    order,
    offsets_y,
    offsets_x,
):
    nbands, height, width = grad.shape
    # Both gradients from the parameters before the step.
    morph_grad = np.zeros((height, width))
    spectrum_grad = np.zeros(nbands)
    for b in range(nbands):
        for y in range(height):
            for x in range(width):
                morph_grad[y, x] += spectrum[b] * grad[b, y, x]
                spectrum_grad[b] += grad[b, y, x] * morph[y, x]
    # Spectrum step: 1 % (spectrum_factor) of the spectrum's mean, at least a tenth of the noise.
    mean = spectrum.sum() / nbands
    spectrum_step = np.empty(nbands)
    for b in range(nbands):
        spectrum_step[b] = max(noise_rms[b] / 10.0, spectrum_factor * mean)
    _adam(spectrum, spectrum_grad, spectrum_step, first, *spectrum_moments, b1, b2, eps)
    _adam(morph, morph_grad, np.full((height, width), morph_step), first, *morph_moments, b1, b2, eps)
    for b in range(nbands):
        if not spectrum[b] >= FLOOR:  # also catches NaN
            spectrum[b] = FLOOR
    for y in range(height):
        for x in range(width):
            if not math.isfinite(morph[y, x]):
                morph[y, x] = 0.0
    if monotonic:
        # The brightest pixel within fit_radius of the peak (the first in row order, as np.argmax).
        best_y, best_x, best = peak_y, peak_x, -np.inf
        for y in range(max(peak_y - fit_radius, 0), min(peak_y + fit_radius + 1, height)):
            for x in range(max(peak_x - fit_radius, 0), min(peak_x + fit_radius + 1, width)):
                if morph[y, x] > best:
                    best_y, best_x, best = y, x, morph[y, x]
        _project(morph, best_y, best_x, weights, centre, order[0], order[1], order[2], offsets_y, offsets_x)
    # Sparsity: zero where the model is below the cut in every band. The cut is >= 0 (bg_cut >= 0,
    # spectrum >= FLOOR > 0), so this is also the positivity constraint.
    cutoff = np.inf
    for b in range(nbands):
        cutoff = min(cutoff, bg_cut[b] / spectrum[b])
    top = -np.inf
    for y in range(height):
        for x in range(width):
            if morph[y, x] < cutoff:
                morph[y, x] = 0.0
    morph[peak_y, peak_x] = max(morph[peak_y, peak_x], FLOOR)
    for y in range(height):
        for x in range(width):
            top = max(top, morph[y, x])
    if top > 0:
        for y in range(height):
            for x in range(width):
                morph[y, x] /= top


# Placeholders for a component without monotonicity: the compiled step takes arrays either way.
_NO_WEIGHTS = np.zeros((1, 1, 8))
_NO_ORDER = np.zeros((3, 1), dtype=np.int64)


def proximal_step(component, iteration: int, grad: np.ndarray) -> None:
    """Move ``component`` (a `FactorizedComponent`) by one proximal ADAM step, in place.

    Parameters
    ----------
    component : `FactorizedComponent`
        Its ``spectrum``, ``morph`` and optimizer moments are updated.
    iteration : `int`
        Iteration of the fit (the first step is a tenth of the nominal size).
    grad : `numpy.ndarray`
        (nbands, h, w) gradient of the loss on the component's box.
    """
    monotonicity: Monotonicity | None = component.monotonicity
    if monotonicity is None:
        weights, centre, order, fit_radius = _NO_WEIGHTS, 0, _NO_ORDER, 0
    else:
        weights, centre, order = monotonicity.compiled_arguments(component.morph.shape)
        fit_radius = monotonicity.fit_radius
    spectrum_adam, morph_adam = component._spectrum_adam, component._morph_adam
    peak_y, peak_x = component.local_peak
    _step(
        component.spectrum,
        component.morph,
        grad,
        iteration == 0,
        (spectrum_adam.m, spectrum_adam.v, spectrum_adam.vhat),
        (morph_adam.m, morph_adam.v, morph_adam.vhat),
        spectrum_adam.b1,
        spectrum_adam.b2,
        spectrum_adam.eps,
        component.noise_rms,
        component.spectrum_factor,
        component.morph_step,
        component.bg_cut,
        peak_y,
        peak_x,
        monotonicity is not None,
        fit_radius,
        weights,
        centre,
        order,
        _OFFSET_Y,
        _OFFSET_X,
    )
