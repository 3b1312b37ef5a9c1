"""Patch-wide inputs of the deblender, computed once and cut per blend."""

from __future__ import annotations

__all__ = ["DeblendContext"]

import dataclasses

import numpy as np
from scipy.signal import fftconvolve

from ..detection import detection_image
from ..geometry import Box
from ..scene import Scene
from .config import DeblendConfig
from .convolution import BoxConvolver
from .initialization import BlendObservation
from .monotonicity import Monotonicity
from .psf import difference_kernels, integrated_gaussian_psf


@dataclasses.dataclass
class DeblendContext:
    """Scene-level arrays shared by all blends.

    Attributes
    ----------
    image : `numpy.ndarray`
        (nbands, H, W) float32 image, zero at bad pixels.
    weights : `numpy.ndarray`
        (nbands, H, W) float32 inverse variance, zero at bad pixels.
    noise_rms : `numpy.ndarray`
        (nbands,) mean noise σ over the good pixels (scarlet_lite's ``noise_rms``).
    detect : `numpy.ndarray`
        (H, W) χ detection image for the morphologies: Σ_b image_b / σ_b²,
        smoothed by the model PSF and scaled to unit noise.
    significance, psf_flux : `numpy.ndarray`
        The detection step's S/N image and PSF-flux images.
    model_psf : `numpy.ndarray`
        (k, k) model-frame PSF.
    kernels : `numpy.ndarray`
        (nbands, K, K) difference kernels.
    """

    scene: Scene
    config: DeblendConfig
    image: np.ndarray
    weights: np.ndarray
    noise_rms: np.ndarray
    detect: np.ndarray
    significance: np.ndarray
    psf_flux: np.ndarray
    model_psf: np.ndarray
    kernels: np.ndarray
    monotonicity: Monotonicity | None

    @classmethod
    def build(cls, scene: Scene, config: DeblendConfig) -> DeblendContext:
        good = scene.good
        image = scene.clean_image()
        weights = scene.weights()
        sigma = np.sqrt(np.where(good, scene.variance, np.nan))
        with np.errstate(invalid="ignore"):
            noise_rms = np.nanmean(sigma.reshape(scene.nbands, -1), axis=1)
        if not np.all(np.isfinite(noise_rms)):
            bad = [b for b, v in zip(scene.bands, noise_rms, strict=True) if not np.isfinite(v)]
            raise ValueError(f"Band(s) {','.join(bad)} have no usable pixel (all masked or non-finite).")
        model_psf = integrated_gaussian_psf(config.model_psf_sigma, config.model_psf_size)
        kernels = difference_kernels(scene.psf, model_psf)
        inverse = 1.0 / noise_rms**2
        chi = np.tensordot(inverse, image.astype(np.float64), axes=1)
        detect = fftconvolve(chi, model_psf, mode="same")
        detect /= np.sqrt(inverse.sum() * np.sum(model_psf**2))
        significance, psf_flux = detection_image(scene)
        return cls(
            scene=scene,
            config=config,
            image=image,
            weights=weights,
            noise_rms=noise_rms.astype(np.float64),
            detect=detect.astype(np.float32),
            significance=significance,
            psf_flux=psf_flux,
            model_psf=model_psf,
            kernels=kernels,
            monotonicity=Monotonicity() if config.monotonic else None,
        )

    def observation(self, box: Box, footprint: np.ndarray) -> BlendObservation:
        """The `BlendObservation` of a footprint (``footprint``: (h, w) bool in ``box``)."""
        sl = box.slices()
        weights = self.weights[:, sl[0], sl[1]].astype(np.float64) * footprint[None]
        return BlendObservation(
            box=box,
            image=self.image[:, sl[0], sl[1]].astype(np.float64),
            weights=weights,
            footprint=footprint,
            detect=self.detect[sl].astype(np.float64),
            significance=self.significance[sl].astype(np.float64),
            psf_flux=self.psf_flux[:, sl[0], sl[1]].astype(np.float64),
            noise_rms=self.noise_rms,
            kernels=self.kernels,
            model_psf=self.model_psf,
            convolver=BoxConvolver(self.kernels, box.shape),
        )
