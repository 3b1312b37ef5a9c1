"""One simulated scene taken through the first pass, with its labels.

Dataset generation (training) and evaluation both prepare their scenes here,
so the network is evaluated on exactly the kind of input it was trained on:
simulate → first-pass detection → first-pass model (residual mode; the
chain's `~lsst.meas.extensions.residual.chain.first_pass.first_pass_model`)
→ label.
"""

from __future__ import annotations

__all__ = ["PreparedScene", "prepare_scene"]

import dataclasses
from collections.abc import Callable

import numpy as np

from ..chain.first_pass import first_pass_model
from ..deblending import DeblendConfig
from ..detection import DetectionConfig, Detections, detect_peaks
from ..errors import InputError
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
            raise InputError("This scene was prepared without a first-pass model.")
        return np.where(self.scene.good, self.scene.image - self.model, np.float32(0))


def prepare_scene(
    seed: int,
    simulation: SimulationConfig,
    labels: LabelConfig,
    need_model: bool,
    detection: DetectionConfig | None = None,
    deblend_config: DeblendConfig | None = None,
    deblender: Callable[[Scene, Detections], np.ndarray] | None = None,
    bands: tuple[str, ...] | None = None,
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
        Compute the first-pass model (needed by ``residual``/``model``
        channels).
    detection : `DetectionConfig`, optional
        First-pass detection parameters.
    deblend_config : `DeblendConfig`, optional
        First-pass deblender parameters.
    deblender : callable, optional
        ``deblender(scene, detections) -> model`` replacing the project's
        deblender (tests use simple stand-ins).
    bands : `tuple` [`str`], optional
        Keep only these of the simulated bands (`Scene.band_subset`) before
        the first pass: the same sources seen in fewer bands.

    Raises
    ------
    InputError
        If the first-pass model does not have the scene's shape or is not
        finite.
    """
    scene = simulate_scene(int(seed), simulation)
    if bands is not None:
        scene = scene.band_subset(tuple(bands))
    detections = detect_peaks(scene, detection)
    model = None
    if need_model:
        if deblender is None:
            model = first_pass_model(scene, detections, deblend_config)
        else:
            model = np.asarray(deblender(scene, detections), dtype=np.float32)
            if model.shape != scene.image.shape:
                raise InputError(
                    f"The deblender's model has shape {model.shape}, not the scene's {scene.image.shape}."
                )
    scene_labels = make_labels(scene, detections.xy, labels)
    return PreparedScene(seed=int(seed), scene=scene, detections=detections, model=model, labels=scene_labels)
