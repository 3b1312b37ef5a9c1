"""Flux conservation: share the observed image among the sources by their model ratio.

meas_extensions_scarlet measures deblended sources on "flux-redistributed"
images: each pixel of the data (inside the footprint) is split among the
sources in proportion to their observed-PSF models there. The fluxes then
add up to the data even where the model is imperfect. Negative model pixels
(difference-kernel ringing) are clipped first, as LSST does.
"""

from __future__ import annotations

__all__ = ["source_fractions", "conserved_fluxes"]

import numpy as np

from .component import FactorizedComponent
from .initialization import BlendObservation


def source_fractions(obs: BlendObservation, sources: list[list[FactorizedComponent]]) -> np.ndarray:
    """(nsources, nbands, H, W) float32 share of each pixel belonging to each source.

    Where no source has model flux the shares are zero.
    """
    nbands = obs.nbands
    fractions = np.zeros((len(sources), nbands, *obs.box.shape), dtype=np.float32)
    if not sources:
        return fractions
    for index, components in enumerate(sources):
        cube = np.zeros((nbands, *obs.box.shape))
        for component in components:
            cube[:, *component.box.slices(obs.box)] += component.model()
        fractions[index] = np.clip(obs.convolver.convolve(cube), 0.0, None)
    total = fractions.sum(axis=0)
    np.divide(fractions, total[None], out=fractions, where=total[None] > 0)
    fractions[:, total <= 0] = 0.0
    return fractions


def conserved_fluxes(obs: BlendObservation, fractions: np.ndarray) -> np.ndarray:
    """(nsources, nbands) flux of each source's share of the image inside the footprint's good pixels."""
    data = np.where(obs.weights > 0, obs.image, 0.0)
    return np.einsum("sbhw,bhw->sb", fractions, data)
