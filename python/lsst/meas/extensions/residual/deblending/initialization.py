"""Initial components of the sources of a blend, from the detection image at each peak.

Following scarlet_lite's ``FactorizedInitialization``:

* the morphology starts from the multi-band detection image (χ image, unit
  noise, lightly smoothed by the model PSF), made symmetric about the peak
  (the minimum of each pixel and its mirror image, which removes most of the
  neighbours' light), projected onto a monotonic profile, cut at
  ``initial_background_thresh`` σ and restricted to the region connected to
  the peak;
* a peak whose detection value is below that cut starts as the model PSF,
  with the PSF-flux estimate of the detection step as its fluxes;
* sources above ``2 * min_snr`` are split into two components: the part of
  the morphology above ``disk_percentile`` % of its peak ("bulge") and the
  rest, flattened at the top ("disk");
* finally all spectra are fitted jointly by weighted linear least squares
  given the morphologies (``spectrum_init``).
"""

from __future__ import annotations

__all__ = ["BlendObservation", "initialize_sources", "fit_spectra", "symmetrize"]

import dataclasses

import numpy as np
from scipy import ndimage

from ..geometry import Box
from .component import FactorizedComponent
from .config import DeblendConfig
from .convolution import BoxConvolver
from .monotonicity import Monotonicity


@dataclasses.dataclass
class BlendObservation:
    """The data of one blend (everything cut to its box)."""

    box: Box
    """The blend's box in the patch (the footprint's bounding box)."""
    image: np.ndarray
    """(nbands, H, W) image, zero at bad pixels."""
    weights: np.ndarray
    """(nbands, H, W) inverse variance, zero at bad pixels and outside the footprint."""
    footprint: np.ndarray
    """(H, W) bool: the footprint's pixels."""
    detect: np.ndarray
    """(H, W) detection image for the morphologies (unit noise)."""
    significance: np.ndarray
    """(H, W) multi-band PSF-matched S/N (the detection step's)."""
    psf_flux: dict[tuple[int, int], np.ndarray]
    """(nbands,) PSF-flux estimate of a point source at each peak pixel (y, x) of the blend, in
    patch pixels: the detection step's (the peaks' ``psf_flux``)."""
    noise_rms: np.ndarray
    """(nbands,) background noise RMS of the patch."""
    kernels: np.ndarray
    """(nbands, K, K) difference kernels model PSF → observed PSF."""
    model_psf: np.ndarray
    """(k, k) model-frame PSF."""
    convolver: BoxConvolver
    """Convolutions on the blend box."""

    @property
    def nbands(self) -> int:
        return self.image.shape[0]


def symmetrize(image: np.ndarray, center: tuple[int, int]) -> np.ndarray:
    """Minimum of ``image`` and its point reflection about ``center``; 0 where the mirror leaves the box."""
    h, w = image.shape
    cy, cx = center
    result = np.zeros_like(image)
    # Pixel (y, x) mirrors to (2cy - y, 2cx - x); keep the rows/cols whose mirror is inside.
    ya, yb = max(0, 2 * cy - (h - 1)), min(h, 2 * cy + 1)
    xa, xb = max(0, 2 * cx - (w - 1)), min(w, 2 * cx + 1)
    part = image[ya:yb, xa:xb]
    mirror = image[2 * cy - yb + 1 : 2 * cy - ya + 1, 2 * cx - xb + 1 : 2 * cx - xa + 1][::-1, ::-1]
    result[ya:yb, xa:xb] = np.minimum(part, mirror)
    return result


def _response_at_peak(morph: np.ndarray, local_peak: tuple[int, int], kernels: np.ndarray) -> np.ndarray:
    """(nbands,) value at the peak of ``morph`` convolved with each kernel (a direct dot product)."""
    ky, kx = kernels.shape[1] // 2, kernels.shape[2] // 2
    h, w = morph.shape
    py, px = local_peak
    ya, yb = max(py - ky, 0), min(py + ky + 1, h)
    xa, xb = max(px - kx, 0), min(px + kx + 1, w)
    patch = morph[ya:yb, xa:xb]
    # conv[p] = Σ_d morph[p + d] k[c - d]: pair the patch with the reversed kernel.
    flipped = kernels[:, ::-1, ::-1]
    kernel = flipped[:, ky + ya - py : ky + yb - py, kx + xa - px : kx + xb - px]
    return np.einsum("bhw,hw->b", kernel, patch)


def _psf_component(obs: BlendObservation, peak, config, monotonicity) -> FactorizedComponent:
    model_psf = obs.model_psf
    half = model_psf.shape[0] // 2
    box = Box(peak[0] - half, peak[1] - half, *model_psf.shape).intersect(obs.box)
    psf_box = Box(peak[0] - half, peak[1] - half, *model_psf.shape)
    morph = model_psf[box.slices(psf_box)] / model_psf.max()
    spectrum = np.clip(obs.psf_flux[tuple(peak)], 0.0, None) * model_psf.max()
    return FactorizedComponent(spectrum, morph, box, peak, obs.noise_rms, config, monotonicity)


def _extended_morphology(obs: BlendObservation, peak, config, monotonicity) -> tuple[np.ndarray, Box] | None:
    """Initial (unnormalised) morphology and its box, or None if there is no significant flux."""
    local = (peak[0] - obs.box.y0, peak[1] - obs.box.x0)
    threshold = config.initial_background_thresh
    if obs.detect[local] <= threshold:
        return None
    morph = symmetrize(obs.detect, local)
    morph[local] = obs.detect[local]
    if monotonicity is not None:
        morph = monotonicity(morph, local)
    above = morph > threshold
    labels, _ = ndimage.label(above)
    region = labels == labels[local]
    if not region[local]:
        return None
    morph = np.where(region, morph, 0.0)
    # scarlet_lite pads new morphologies by 2.
    box = Box.bounding(region, obs.box.origin).grow(2).intersect(obs.box)
    return morph[box.slices(obs.box)], box


def initialize_sources(
    obs: BlendObservation,
    peaks: list[tuple[int, int]],
    config: DeblendConfig,
    monotonicity: Monotonicity | None,
) -> list[list[FactorizedComponent]]:
    """Components of each source (one list per peak, in order).

    Parameters
    ----------
    obs : `BlendObservation`
        The blend.
    peaks : `list` [`tuple` [`int`, `int`]]
        (y, x) peak pixels in patch coordinates, inside ``obs.box``.
    """
    sources = []
    for peak in peaks:
        local = (peak[0] - obs.box.y0, peak[1] - obs.box.x0)
        initial = _extended_morphology(obs, peak, config, monotonicity)
        if initial is None:
            sources.append([_psf_component(obs, peak, config, monotonicity)])
            continue
        morph, box = initial
        morph = morph / morph.max()
        peak_in_box = (peak[0] - box.y0, peak[1] - box.x0)
        response = _response_at_peak(morph, peak_in_box, obs.kernels)
        with np.errstate(divide="ignore", invalid="ignore"):
            spectrum = np.where(
                response > 0, np.clip(obs.image[:, local[0], local[1]], 0.0, None) / response, 0.0
            )
        n_components = (
            2 if (config.max_components == 2 and obs.significance[local] >= 2 * config.min_snr) else 1
        )
        if n_components == 1:
            sources.append(
                [FactorizedComponent(spectrum, morph, box, peak, obs.noise_rms, config, monotonicity)]
            )
            continue
        cut = config.disk_percentile / 100.0
        bulge = np.clip(morph - cut, 0.0, None)
        bulge /= bulge.max()
        disk = np.minimum(morph, cut) / cut
        sources.append(
            [
                FactorizedComponent(
                    spectrum * (1 - cut), bulge, box, peak, obs.noise_rms, config, monotonicity
                ),
                FactorizedComponent(spectrum * cut, disk, box, peak, obs.noise_rms, config, monotonicity),
            ]
        )
    return sources


def fit_spectra(obs: BlendObservation, components: list[FactorizedComponent]) -> None:
    """Set all spectra to their joint weighted least-squares values given the morphologies.

    Negative solutions are set to zero (the spectrum prox then floors them).
    """
    if not components:
        return
    # The morphologies are the same in every band: one (K, H, W) stack, convolved band by band, so a
    # large blend's temporaries are those of one band, not of all.
    stack = np.zeros((len(components), *obs.box.shape))
    for k, component in enumerate(components):
        stack[k, *component.box.slices(obs.box)] = component.morph
    for b, convolved in enumerate(obs.convolver.convolve_bands(stack)):
        # Normal equations (K x K): far cheaper than an SVD of the (pixels x K) design matrix;
        # lstsq on them still copes with degenerate (e.g. coincident) components.
        design = convolved.reshape(len(components), -1)
        weighted = design * obs.weights[b].ravel()[None]
        normal = weighted @ design.T
        rhs = weighted @ obs.image[b].ravel()
        solution, *_ = np.linalg.lstsq(normal, rhs, rcond=None)
        for component, value in zip(components, solution, strict=True):
            component.spectrum[b] = max(value, 0.0)
    for component in components:
        component.spectrum[~(component.spectrum > 0)] = 1e-20
