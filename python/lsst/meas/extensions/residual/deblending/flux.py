"""Flux conservation: share the observed image among the sources by their model ratio.

meas_extensions_scarlet measures deblended sources on "flux-redistributed"
images: each pixel of the data (inside the footprint) is split among the
sources in proportion to their observed-PSF models there. The fluxes then
add up to the data even where the model is imperfect. Negative model pixels
(difference-kernel ringing) are clipped first, as LSST does, and so is the
round-off of the FFT convolution where a source has no light.

Each source's share is kept only on its own box (its components' boxes grown
by the kernel radius), so memory grows with the sources' areas, not with
sources × blend area.
"""

from __future__ import annotations

__all__ = ["SourceShare", "source_shares", "conserved_fluxes", "weighted_sums"]

import dataclasses

import numpy as np

from ..geometry import Box
from .component import FactorizedComponent
from .convolution import BoxConvolver
from .initialization import BlendObservation

_ROUND_OFF = 1e-9
"""Convolved model values below this fraction of the source's peak in the band are not model flux."""


@dataclasses.dataclass
class SourceShare:
    """The fraction of each pixel of ``box`` (patch coordinates) that belongs to one source."""

    box: Box
    fraction: np.ndarray
    """(nbands, h, w) float32 in [0, 1]."""
    masked_fraction: np.ndarray
    """(nbands,) fraction of the source's observed model inside the footprint that falls on
    pixels without data (zero weight) in each band: the part of its flux the data do not see."""


def _source_box(obs: BlendObservation, components: list[FactorizedComponent]) -> Box:
    y0 = min(c.box.y0 for c in components)
    x0 = min(c.box.x0 for c in components)
    y1 = max(c.box.y1 for c in components)
    x1 = max(c.box.x1 for c in components)
    pad = max(obs.kernels.shape[1], obs.kernels.shape[2]) // 2
    return Box(y0, x0, y1 - y0, x1 - x0).grow(pad).intersect(obs.box)


def source_shares(obs: BlendObservation, sources: list[list[FactorizedComponent]]) -> list[SourceShare]:
    """Each source's share of the pixels of the blend (zero where no source has model flux)."""
    nbands = obs.nbands
    total = np.zeros((nbands, *obs.box.shape))
    shares = []
    for components in sources:
        box = _source_box(obs, components)
        cube = np.zeros((nbands, *box.shape))
        for component in components:
            cube[:, *component.box.slices(box)] += component.model()
        convolved = BoxConvolver(
            obs.kernels, box.shape, obs.convolver.transform_dtype, obs.convolver.transforms
        ).convolve(cube)
        # Beyond the reach of a source's light the FFT leaves round-off (~1e-16 of its peak, either
        # sign); counting it as model flux would let that sign decide who gets those pixels.
        convolved[convolved <= _ROUND_OFF * np.abs(convolved).max(axis=(1, 2), keepdims=True)] = 0.0
        total[:, *box.slices(obs.box)] += convolved
        inside = obs.footprint[box.slices(obs.box)][None] * convolved
        unseen = np.where(obs.weights[:, *box.slices(obs.box)] > 0, 0.0, inside).sum(axis=(1, 2))
        in_footprint = inside.sum(axis=(1, 2))
        masked = np.divide(unseen, in_footprint, out=np.zeros_like(unseen), where=in_footprint > 0)
        shares.append(SourceShare(box, convolved.astype(np.float32), masked))
    for share in shares:
        local_total = total[:, *share.box.slices(obs.box)]
        np.divide(share.fraction, local_total, out=share.fraction, where=local_total > 0)
        share.fraction[local_total <= 0] = 0.0
    return shares


def weighted_sums(shares: list[SourceShare], image: np.ndarray, origin: Box) -> np.ndarray:
    """(nsources, nbands) Σ fraction × ``image`` over each share's box (``image`` covers ``origin``)."""
    result = np.zeros((len(shares), image.shape[0]))
    for index, share in enumerate(shares):
        result[index] = np.einsum("bhw,bhw->b", share.fraction, image[:, *share.box.slices(origin)])
    return result


def conserved_fluxes(obs: BlendObservation, shares: list[SourceShare]) -> np.ndarray:
    """(nsources, nbands) flux of each source's share of the image inside the footprint's good pixels."""
    data = np.where(obs.weights > 0, obs.image, 0.0)
    return weighted_sums(shares, data, obs.box)
