"""The chain's steps as `lsst.pipe.base.Task` subtasks of the PipelineTasks.

As meas_extensions_scarlet's ``deblendCoaddFootprints`` holds its algorithm
in a ``ScarletDeblendTask`` subtask, each PipelineTask here holds its step of
the chain (`lsst.meas.extensions.residual.chain`) in a subtask whose config
is generated from the core's parameter model (`config_fields`). A pipeline
can retarget a step (``config.deblend.retarget(...)``) without touching the
PipelineTask that moves its data.
"""

from __future__ import annotations

__all__ = [
    "DetectPeaksTask",
    "DeblendTask",
    "FindNewSourcesConfig",
    "FindNewSourcesTask",
    "NewSourcesFieldsConfig",
]

import numpy as np
from astropy.table import Table

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase

from ..chain import NewSources, NewSourcesConfig, find_new_sources, run_second_pass
from ..deblending import DeblendResult, ScarletModelData, deblend
from ..detection import Detections, detect_peaks
from ..network import Detector
from ..scene import Scene
from .config_fields import (
    DeblendFieldsConfig,
    DetectionFieldsConfig,
    InferenceFieldsConfig,
    model_fields_config,
)


class DetectPeaksTask(pipeBase.Task):
    """First-pass detection of footprints and peaks on all bands of a patch."""

    ConfigClass = DetectionFieldsConfig
    _DefaultName = "detection"

    def run(self, scene: Scene) -> Detections:
        return detect_peaks(scene, self.config.to_model())


class DeblendTask(pipeBase.Task):
    """The Scarlet-compatible deblender: the first pass, and the re-fit of blends that gained sources."""

    ConfigClass = DeblendFieldsConfig
    _DefaultName = "deblend"

    def run(self, scene: Scene, detections: Detections) -> DeblendResult:
        """Deblend every footprint (patch pixels, local ids)."""
        return deblend(scene, detections, self.config.to_model())

    def runSecondPass(
        self,
        scene: Scene,
        detections: Detections,
        catalog: Table,
        model_data: ScarletModelData,
        new_ids: np.ndarray,
        new_xy: np.ndarray,
    ) -> DeblendResult:
        """Re-fit the first pass's blends that gain the new sources (`run_second_pass`)."""
        return run_second_pass(
            scene, detections, catalog, model_data, new_ids, new_xy, self.config.to_model()
        )


NewSourcesFieldsConfig = model_fields_config(NewSourcesConfig, "NewSourcesFieldsConfig", module=__name__)


class FindNewSourcesConfig(NewSourcesFieldsConfig):
    """Which network detections are new (`NewSourcesConfig`), and how the network runs."""

    inference = pexConfig.ConfigField[InferenceFieldsConfig](
        doc="How the network runs on the patch (the core's InferenceConfig; None: the package's value)."
    )


class FindNewSourcesTask(pipeBase.Task):
    """The network on the first-pass residuals, keeping the detections that are new."""

    ConfigClass = FindNewSourcesConfig
    _DefaultName = "find"

    def run(
        self,
        scene: Scene,
        first_pass_model: np.ndarray,
        first_pass_parents: np.ndarray,
        existing_xy: np.ndarray,
        next_id: int,
        detector: Detector,
    ) -> NewSources:
        """`find_new_sources` with this config's inference and selection."""
        return find_new_sources(
            scene,
            first_pass_model,
            first_pass_parents,
            existing_xy,
            next_id,
            detector,
            self.config.inference.to_model(),
            self.config.to_model(),
        )
