"""Step 1 and 2 of the chain: first-pass detection and first-pass deblending.

Training data, evaluation, the command line and the Butler tasks all take a
scene through the first pass here, so that the network always sees the kind
of residual it was trained on.
"""

from __future__ import annotations

__all__ = ["FirstPass", "run_first_pass", "first_pass_model"]

import dataclasses

import numpy as np

from ..deblending import DeblendConfig, DeblendResult, deblend
from ..detection import DetectionConfig, Detections, detect_peaks
from ..errors import InputError
from ..scene import Scene


@dataclasses.dataclass
class FirstPass:
    """The first pass on one scene: its peaks and footprints, and their deblend."""

    detections: Detections
    deblend: DeblendResult


def run_first_pass(
    scene: Scene,
    detection: DetectionConfig | None = None,
    deblend_config: DeblendConfig | None = None,
) -> FirstPass:
    """Detect peaks and footprints in ``scene`` and deblend every footprint.

    Parameters
    ----------
    scene : `Scene`
        The scene; bad pixels are ignored by both steps.
    detection : `DetectionConfig`, optional
        Detection parameters (LSST-like defaults).
    deblend_config : `DeblendConfig`, optional
        Deblender parameters (LSST's defaults).

    Returns
    -------
    first_pass : `FirstPass`
    """
    detections = detect_peaks(scene, detection)
    return FirstPass(detections, deblend(scene, detections, deblend_config))


def first_pass_model(
    scene: Scene, detections: Detections, deblend_config: DeblendConfig | None = None
) -> np.ndarray:
    """(nbands, H, W) float32 first-pass model of ``scene`` for the given peaks.

    Raises
    ------
    InputError
        If the deblender's model does not have the scene's shape or is not
        finite (the network would be fed garbage).
    """
    model = np.asarray(deblend(scene, detections, deblend_config).model, dtype=np.float32)
    if model.shape != scene.image.shape:
        raise InputError(f"Deblender model shape {model.shape} differs from the scene's {scene.image.shape}.")
    if not np.all(np.isfinite(model)):
        raise InputError("Deblender model has non-finite values.")
    return model
