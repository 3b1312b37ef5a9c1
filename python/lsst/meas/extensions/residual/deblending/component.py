"""A factorised component: a spectrum times a morphology, with its constraints.

The model of a component in the model frame is ``spectrum[:, None, None] *
morph`` inside the component's box. Its constraints are applied as proximal
operators after each gradient step (scarlet_lite's ``FactorizedComponent``):

* spectrum: non-negative (floored at a tiny positive value so it can regrow);
* morphology: monotonic from the peak (`Monotonicity`), sparse (pixels whose
  model is below ``background_thresh`` noise σ in every band are zeroed, which
  also makes it non-negative), positive at the peak, normalised to a peak of
  1 so that the flux scale lives in the spectrum.

Boxes follow the significant pixels: every few iterations a box is reset to
the bounding box of the pixels above the background threshold, padded, so it
grows when flux reaches its edge and shrinks when it does not.
"""

from __future__ import annotations

__all__ = ["FactorizedComponent"]


import numpy as np

from ..geometry import Box
from .adaprox import AdaproxState
from .monotonicity import Monotonicity
from .proximal_step import proximal_step


class FactorizedComponent:
    """One spectrum × morphology component being fitted.

    Parameters
    ----------
    spectrum : `numpy.ndarray`
        (nbands,) amplitude of the morphology's peak in each band.
    morph : `numpy.ndarray`
        (h, w) morphology in ``box``.
    box : `Box`
        Where ``morph`` lies, in patch coordinates.
    peak : `tuple` [`int`, `int`]
        (y, x) peak pixel in patch coordinates (inside ``box``).
    noise_rms : `numpy.ndarray`
        (nbands,) background noise RMS, for the sparsity threshold and the
        smallest spectrum step.
    config : `DeblendConfig`
        Thresholds and step sizes.
    monotonicity : `Monotonicity` or None
        Shared monotonicity operator (None: no monotonicity).
    step_scale : `float`
        Factor on both step sizes (``config.warm_step_scale`` for a source
        started from a fitted model).
    """

    def __init__(
        self,
        spectrum,
        morph,
        box: Box,
        peak,
        noise_rms,
        config,
        monotonicity: Monotonicity | None,
        step_scale: float = 1.0,
    ):
        self.spectrum = np.asarray(spectrum, dtype=np.float64).copy()
        self.morph = np.asarray(morph, dtype=np.float64).copy()
        if self.morph.shape != box.shape:
            raise ValueError(f"Morphology shape {self.morph.shape} differs from its box {box.shape}.")
        if not box.contains(*peak):
            raise ValueError(f"Peak {peak} lies outside the component box {box}.")
        self.box = box
        self.peak = (int(peak[0]), int(peak[1]))
        self.noise_rms = np.asarray(noise_rms, dtype=np.float64)
        self.bg_cut = config.background_thresh * self.noise_rms
        self.morph_step = step_scale * config.adaprox_morph_step
        self.spectrum_factor = step_scale * config.adaprox_spectrum_factor
        self.padding = config.component_padding
        self.monotonicity = monotonicity
        self._spectrum_adam = AdaproxState(self.spectrum.shape)
        self._morph_adam = AdaproxState(self.morph.shape)

    @property
    def local_peak(self) -> tuple[int, int]:
        return self.peak[0] - self.box.y0, self.peak[1] - self.box.x0

    def model(self) -> np.ndarray:
        """(nbands, h, w) model-frame image in ``box``."""
        return self.spectrum[:, None, None] * self.morph[None]

    @property
    def flux(self) -> np.ndarray:
        """(nbands,) total flux."""
        return self.spectrum * self.morph.sum()

    def update(self, iteration: int, grad: np.ndarray) -> None:
        """One proximal ADAM step from ``grad``, the loss gradient on this box (nbands, h, w).

        The spectrum and morphology (and the optimizer's moments) are updated in place
        (`proximal_step`).
        """
        proximal_step(self, iteration, grad)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, Box]:
        """Copies of the parameters and the box, for `restore`."""
        return self.spectrum.copy(), self.morph.copy(), self.box

    def restore(self, state: tuple[np.ndarray, np.ndarray, Box]) -> None:
        """Go back to a `snapshot` (the optimizer's moments restart from zero)."""
        spectrum, morph, box = state
        self.spectrum, self.morph, self.box = spectrum.copy(), morph.copy(), box
        self._spectrum_adam = AdaproxState(self.spectrum.shape)
        self._morph_adam = AdaproxState(self.morph.shape)

    def resize(self, limit: Box) -> bool:
        """Fit the box to the significant pixels (padded, within ``limit``); True if it changed."""
        significant = self.morph[None] * self.spectrum[:, None, None] >= self.bg_cut[:, None, None]
        significant = significant.any(axis=0)
        core = Box.bounding(significant, self.box.origin)
        if core.empty:
            core = Box(self.peak[0], self.peak[1], 1, 1)
        new_box = core.grow(self.padding).intersect(limit)
        if not new_box.contains(*self.peak):
            new_box = Box(self.peak[0], self.peak[1], 1, 1).grow(self.padding).intersect(limit)
        if new_box == self.box:
            return False
        overlap = self.box.intersect(new_box)
        new_slices, old_slices = overlap.slices(new_box), overlap.slices(self.box)
        morph = np.zeros(new_box.shape)
        morph[new_slices] = self.morph[old_slices]
        self._morph_adam.embed(new_slices, old_slices, new_box.shape)
        self.morph = morph
        self.box = new_box
        return True
