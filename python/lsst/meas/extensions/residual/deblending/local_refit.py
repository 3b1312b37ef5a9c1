"""Re-fit only the part of a blend around its new sources (second pass, warm start).

A first-pass blend that gains a source is, in a crowded patch, mostly far
from it: a 20-peak footprint that gains one faint neighbour has a dozen
sources whose light the new one never meets at a level the fit can see.
Fitting them all again costs what the first fit of the blend cost (the
convolutions run over the whole blend box every iteration) and moves them
only by the noise. So with ``second_pass_refit="local"``:

* the sources fitted again are the new ones (and any other source without a
  usable first-pass model) and the warm-started sources whose peak lies
  within ``local_refit_radius`` pixels of a new one's, or whose first-pass
  model holds at least ``local_refit_share`` of the image at a new one's
  peak, i.e. took much of its light (`free_sources`);
* every other source keeps its first-pass components unchanged ("held");
* the fit runs on the window that the free components' boxes cover, grown by
  the difference kernels' half-width (the reach of their light) and the
  component padding (room to grow), against the image less the held
  sources' model convolved to the observed PSFs (`window_observation`), so
  each iteration's transforms are of the window, not of the blend.

A fit that ends with a worse likelihood on the window than it started from
keeps its start (see ``_fit_near_new_sources`` in `deblend`).

The held sources' light inside the window is exact: their model is rendered
on the window grown by the kernel half-width before it is convolved, so
light from just outside reaches in as it does in a full fit.
"""

from __future__ import annotations

__all__ = ["free_sources", "refit_window", "window_observation"]

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..geometry import Box
from .component import FactorizedComponent
from .convolution import BoxConvolver
from .initialization import BlendObservation


def free_sources(
    obs: BlendObservation,
    sources: Sequence[Sequence[FactorizedComponent]],
    centers: Sequence[tuple[int, int]],
    warm: Sequence[bool],
    radius: float,
    share: float,
) -> list[bool]:
    """Which sources of a blend are fitted again: the cold ones and the warm ones near a cold one.

    Parameters
    ----------
    obs : `BlendObservation`
        The blend.
    sources : `list` [`list` [`FactorizedComponent`]]
        Components of each source as they start.
    centers : `list` [`tuple` [`int`, `int`]]
        (y, x) peak pixel of each source.
    warm : `list` [`bool`]
        Whether each source starts from its first-pass components (`start_sources`).
    radius : `float`
        A warm source is fitted again if its peak lies within this many
        pixels of a cold source's peak,
    share : `float`
        or if its model holds at least this share of the image at a cold
        source's peak pixel (model frame, bands weighted by inverse noise
        variance): the light it took from the missed source.

    Returns
    -------
    free : `list` [`bool`]
        True for the sources to fit (all of them if none is warm).
    """
    warm = np.asarray(warm, dtype=bool)
    centers = np.asarray(centers, dtype=np.int64).reshape(-1, 2)
    if not (len(warm) == len(centers) == len(sources)):
        raise ValueError(f"{len(warm)} start flags and {len(sources)} sources for {len(centers)} centres.")
    cold = centers[~warm]
    if len(cold) == 0:
        return [True] * len(warm)
    distance2 = ((centers[:, None, :] - cold[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    free = ~warm | (distance2 <= radius * radius)
    weight = 1.0 / obs.noise_rms**2
    local = cold - np.array(obs.box.origin)
    image_there = np.maximum(np.einsum("b,bn->n", weight, obs.image[:, local[:, 0], local[:, 1]]), 0.0)
    for index in np.flatnonzero(~free):
        light = np.zeros(len(cold))
        for component in sources[index]:
            inside = [component.box.contains(int(y), int(x)) for y, x in cold]
            for k in np.flatnonzero(inside):
                y, x = cold[k] - np.array(component.box.origin)
                light[k] += float(weight @ component.spectrum) * component.morph[y, x]
        free[index] = bool(np.any((light > 0) & (light >= share * image_there)))
    return list(free)


def window_observation(
    obs: BlendObservation, window: Box, held: list[FactorizedComponent]
) -> BlendObservation:
    """The blend's data on ``window``, less the model of the ``held`` components (observed PSFs).

    Parameters
    ----------
    obs : `BlendObservation`
        The whole blend.
    window : `Box`
        Part of the blend box to fit.
    held : `list` [`FactorizedComponent`]
        Components whose model is fixed.

    Returns
    -------
    window_obs : `BlendObservation`
        ``obs`` cut to ``window``, its image less the held model there.
    """
    sl = (slice(None), *window.slices(obs.box))
    image = obs.image[sl].copy()
    if held:
        # Held light from up to a kernel half-width outside the window falls inside it.
        half = max(obs.kernels.shape[1], obs.kernels.shape[2]) // 2
        reach = window.grow(half).intersect(obs.box)
        near = [c for c in held if not c.box.intersect(reach).empty]
        if near:
            frame = np.zeros((obs.nbands, *reach.shape))
            for component in near:
                part = component.box.intersect(reach)
                frame[:, *part.slices(reach)] += component.model()[:, *part.slices(component.box)]
            convolved = BoxConvolver(
                obs.kernels, reach.shape, obs.convolver.transform_dtype, obs.convolver.transforms
            ).convolve(frame)
            image -= convolved[:, *window.slices(reach)]
    return dataclasses.replace(
        obs,
        box=window,
        image=image,
        weights=obs.weights[sl],
        footprint=obs.footprint[sl[1:]],
        detect=obs.detect[sl[1:]],
        significance=obs.significance[sl[1:]],
        convolver=BoxConvolver(
            obs.kernels, window.shape, obs.convolver.transform_dtype, obs.convolver.transforms
        ),
    )


def refit_window(obs: BlendObservation, free: list[FactorizedComponent], padding: int) -> Box:
    """The window on which ``free`` is fitted: their boxes, grown by the kernels' reach and ``padding``.

    The free components' boxes lie in the blend box, so they lie in the
    window too, and each can grow (`FactorizedComponent.resize`) up to its
    edge.
    """
    if not free:
        raise ValueError("No component to fit.")
    y0 = min(c.box.y0 for c in free)
    x0 = min(c.box.x0 for c in free)
    y1 = max(c.box.y1 for c in free)
    x1 = max(c.box.x1 for c in free)
    reach = max(obs.kernels.shape[1], obs.kernels.shape[2]) // 2 + padding
    return Box(y0, x0, y1 - y0, x1 - x0).grow(reach).intersect(obs.box)
