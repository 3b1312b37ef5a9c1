"""Patch-wide inputs of the deblender, computed once and cut per blend."""

from __future__ import annotations

__all__ = ["DeblendContext"]

import dataclasses

import numpy as np

from ..detection import bright_star_zones, detection_image
from ..detection.strips import convolve_same
from ..geometry import Box
from ..scene import Scene
from .config import DeblendConfig
from .convolution import BoxConvolver, KernelTransforms
from .initialization import BlendObservation
from .monotonicity import Monotonicity
from .psf import difference_kernels, integrated_gaussian_psf


@dataclasses.dataclass
class DeblendContext:
    """Scene-level arrays shared by all blends.

    The image and its weights are cut from the scene blend by blend
    (`pixels`): a full patch holds no cleaned copy of either cube.

    Attributes
    ----------
    noise_rms : `numpy.ndarray`
        (nbands,) mean noise σ over the good pixels (scarlet_lite's ``noise_rms``).
    detect : `numpy.ndarray`
        (H, W) χ detection image for the morphologies: Σ_b image_b / σ_b²,
        smoothed by the model PSF and scaled to unit noise.
    significance : `numpy.ndarray`
        The detection step's (H, W) S/N image.
    model_psf : `numpy.ndarray`
        (k, k) model-frame PSF.
    kernels : `numpy.ndarray`
        (nbands, K, K) difference kernels.
    near_bright_star : `numpy.ndarray`
        (H, W) bool: bright stars' zones (`bright_star_zones`).
    kernel_transforms : `KernelTransforms`
        The kernels' transforms, shared by every blend's, window's and
        source's convolver (made from ``kernels`` when not given).
    """

    scene: Scene
    config: DeblendConfig
    noise_rms: np.ndarray
    detect: np.ndarray
    significance: np.ndarray
    model_psf: np.ndarray
    kernels: np.ndarray
    monotonicity: Monotonicity | None
    near_bright_star: np.ndarray
    kernel_transforms: KernelTransforms | None = None

    def __post_init__(self):
        if self.kernel_transforms is None:
            self.kernel_transforms = KernelTransforms(self.kernels)

    @classmethod
    def build(
        cls, scene: Scene, config: DeblendConfig, significance: np.ndarray | None = None
    ) -> DeblendContext:
        """The context of ``scene``; ``significance``: its S/N image where the caller has it
        (`Detections.significance`), else made here."""
        if significance is None:
            # First, as its temporaries are the largest: the cubes below come after.
            significance, _ = detection_image(scene, positions=np.zeros((0, 2)))
        elif np.shape(significance) != scene.shape:
            raise ValueError(
                f"The S/N image has shape {np.shape(significance)}; the scene has {scene.shape}."
            )
        good = scene.good
        with np.errstate(invalid="ignore"):
            # Band by band: no patch-sized σ cube.
            noise_rms = np.array(
                [
                    np.nanmean(np.sqrt(np.where(band_good, band_variance, np.nan)))
                    for band_good, band_variance in zip(good, scene.variance, strict=True)
                ]
            )
        if not np.all(np.isfinite(noise_rms)):
            bad = [b for b, v in zip(scene.bands, noise_rms, strict=True) if not np.isfinite(v)]
            raise ValueError(f"Band(s) {','.join(bad)} have no usable pixel (all masked or non-finite).")
        model_psf = integrated_gaussian_psf(config.model_psf_sigma, config.model_psf_size)
        kernels = difference_kernels(scene.psf, model_psf)
        inverse = 1.0 / noise_rms**2
        # By blocks of rows: a float64 copy of the whole image cube would be a patch's largest temporary.
        chi = np.empty(scene.shape, dtype=np.float64)
        for y0 in range(0, scene.shape[0], 256):
            rows = slice(y0, y0 + 256)
            image = np.where(good[:, rows], scene.image[:, rows], np.float32(0))  # `Scene.clean_image`
            chi[rows] = np.tensordot(inverse, image.astype(np.float64), axes=1)
        del good
        detect = convolve_same(chi, model_psf)
        detect /= np.sqrt(inverse.sum() * np.sum(model_psf**2))
        return cls(
            scene=scene,
            config=config,
            noise_rms=noise_rms.astype(np.float64),
            detect=detect.astype(np.float32),
            significance=significance,
            model_psf=model_psf,
            kernels=kernels,
            monotonicity=Monotonicity() if config.monotonic else None,
            near_bright_star=bright_star_zones(
                scene, config.bright_star_zone_factor, config.bright_star_zone_min_radius
            ),
        )

    def pixels(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """(nbands, h, w) float32 image and inverse variance in ``box``, both zero at bad pixels.

        The same as `Scene.clean_image` and `Scene.weights` cut to the box (a
        pixel is bad as `Scene.good` says).
        """
        sl = (slice(None), *box.slices())
        image, variance = self.scene.image[sl], self.scene.variance[sl]
        good = self.scene.good_at(sl)
        weights = np.zeros_like(variance)
        np.divide(1.0, variance, out=weights, where=good)
        return np.where(good, image, np.float32(0)), weights

    def observation(
        self, box: Box, footprint: np.ndarray, psf_flux: dict[tuple[int, int], np.ndarray]
    ) -> BlendObservation:
        """The `BlendObservation` of a footprint (``footprint``: (h, w) bool in ``box``) whose peak
        pixels (y, x) have the PSF fluxes ``psf_flux``."""
        sl = box.slices()
        image, weights = self.pixels(box)
        return BlendObservation(
            box=box,
            image=image.astype(np.float64),
            weights=weights.astype(np.float64) * footprint[None],
            footprint=footprint,
            detect=self.detect[sl].astype(np.float64),
            significance=self.significance[sl].astype(np.float64),
            psf_flux=psf_flux,
            noise_rms=self.noise_rms,
            kernels=self.kernels,
            model_psf=self.model_psf,
            convolver=BoxConvolver(
                self.kernels, box.shape, self.config.fit_transform_dtype, self.kernel_transforms
            ),
        )
