"""One simulated scene taken through the first pass, with its labels.

Shared by dataset generation (training) and evaluation, so the network is
evaluated on exactly the kind of input it was trained on: simulate → detect
peaks → deblend (residual mode) → label.
"""

from __future__ import annotations

__all__ = ["PreparedScene", "prepare_scene", "first_pass_model", "deblender_available"]

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..detection import DetectionConfig, Detections, detect_peaks
from ..scene import Scene
from ..simulation import SimulationConfig, simulate_scene
from .labels import LabelConfig, SceneLabels, make_labels


@dataclasses.dataclass
class PreparedScene:
    """A scene with its first-pass detections, first-pass model and labels."""

    seed: int
    scene: Scene
    detections: Detections
    model: np.ndarray | None
    """(nbands, H, W) first-pass (Scarlet-like) model, or None in image mode."""
    labels: SceneLabels

    @property
    def residual(self) -> np.ndarray:
        """Image − model, 0 at bad pixels."""
        if self.model is None:
            raise ValueError("This scene was prepared without a first-pass model.")
        return np.where(self.scene.good, self.scene.image - self.model, np.float32(0))


def deblender_available() -> bool:
    """Whether the project's deblender (``deblending`` sub-package) can be imported."""
    try:
        from ..deblending import DeblendConfig, deblend  # noqa: F401
    except ImportError:
        return False
    return True


def first_pass_model(
    scene: Scene, detections: Detections, deblend_options: dict[str, Any] | None = None
) -> np.ndarray:
    """The first-pass model of ``scene`` from the project's deblender.

    Raises
    ------
    RuntimeError
        If the deblender is not installed.
    ValueError
        If its model does not have the scene's shape or has non-finite values.
    """
    try:
        from ..deblending import DeblendConfig, deblend
    except ImportError as err:
        raise RuntimeError(
            f"Residual mode needs the project's deblender (lsst.meas.extensions.residual.deblending): {err}"
        ) from err
    result = deblend(scene, detections, DeblendConfig(**(deblend_options or {})))
    model = np.asarray(result.model, dtype=np.float32)
    if model.shape != scene.image.shape:
        raise ValueError(f"Deblender model shape {model.shape} differs from the scene's {scene.image.shape}.")
    if not np.all(np.isfinite(model)):
        raise ValueError("Deblender model has non-finite values.")
    return model


def prepare_scene(
    seed: int,
    simulation: SimulationConfig,
    labels: LabelConfig,
    need_model: bool,
    detection: DetectionConfig | None = None,
    deblend_options: dict[str, Any] | None = None,
    deblender: Callable[[Scene, Detections], np.ndarray] | None = None,
) -> PreparedScene:
    """Simulate scene ``seed`` and take it through the first pass.

    Parameters
    ----------
    seed : `int`
        Scene seed.
    simulation : `SimulationConfig`
        Scene parameters.
    labels : `LabelConfig`
        Label cuts and mode.
    need_model : `bool`
        Run the deblender to get the first-pass model (needed by
        ``residual``/``model`` channels).
    detection : `DetectionConfig`, optional
        First-pass detection parameters.
    deblend_options : `dict`, optional
        ``DeblendConfig`` fields.
    deblender : callable, optional
        ``deblender(scene, detections) -> model``; default: the project's
        deblender (`first_pass_model`).
    """
    scene = simulate_scene(int(seed), simulation)
    detections = detect_peaks(scene, detection)
    model = None
    if need_model:
        if deblender is None:
            model = first_pass_model(scene, detections, deblend_options)
        else:
            model = np.asarray(deblender(scene, detections), dtype=np.float32)
    scene_labels = make_labels(scene, detections.xy, labels)
    return PreparedScene(seed=int(seed), scene=scene, detections=detections, model=model, labels=scene_labels)
