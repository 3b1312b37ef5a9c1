"""The whole chain on one patch, and its outputs in the one output schema.

first-pass detection -> first-pass deblend -> new sources in the residuals
-> second pass -> final catalog. `run_chain` runs every step in one process
(``residual-detectron run``); the PipelineTasks run the same steps one task
each and write the same tables (`PatchOutputs`).
"""

from __future__ import annotations

__all__ = [
    "ChainConfig",
    "ChainResult",
    "PatchOutputs",
    "run_chain",
    "run_second_pass",
    "patch_outputs",
    "find_new_sources_after",
]

import ctypes
import dataclasses
import logging
import time

import numpy as np
import pydantic
from astropy.table import Table

from ..configs import StrictModel
from ..deblending import (
    DeblendConfig,
    DeblendResult,
    ScarletModelData,
    deblend_with_new_peaks,
    parent_footprints,
)
from ..deblending.context import DeblendContext
from ..detection import DetectionConfig, Detections
from ..network import Detector, InferenceConfig, SourceDetections
from ..scene import Scene
from .catalogs import deblend_to_catalog, detections_to_catalog, final_catalog, new_sources_catalog
from .first_pass import FirstPass, run_first_pass
from .new_sources import NewSources, NewSourcesConfig, find_new_sources
from .placement import PatchPlacement, model_data_to_tract

_log = logging.getLogger(__name__)


class ChainConfig(StrictModel):
    """Parameters of every step of the chain."""

    detection: DetectionConfig = pydantic.Field(default_factory=DetectionConfig)
    """First-pass detection."""
    deblend: DeblendConfig = pydantic.Field(default_factory=DeblendConfig)
    """Both deblending passes (the second re-fits with the first's parameters)."""
    inference: InferenceConfig = pydantic.Field(default_factory=InferenceConfig)
    """The network's tiling and score threshold (unset: the model package's)."""
    new_sources: NewSourcesConfig = pydantic.Field(default_factory=NewSourcesConfig)
    """Which network detections are new."""


def _return_freed_memory() -> None:
    """Hand the pages the C allocator holds for freed arrays back to the system (glibc; else nothing).

    glibc keeps freed memory below its (growing) mmap threshold for reuse: after a step's
    temporaries (the network's tensors, a deblending pass's per-blend arrays) a full patch would
    otherwise start the next step a few hundred MB higher, and peak that much higher too.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def run_second_pass(
    scene: Scene,
    detections: Detections,
    catalog: Table,
    model_data: ScarletModelData,
    new_ids: np.ndarray,
    new_xy: np.ndarray,
    config: DeblendConfig | None = None,
    context: DeblendContext | None = None,
) -> DeblendResult:
    """Step 4: the first pass's blends that gained a new source, fitted again (patch pixels, local ids).

    Parameters
    ----------
    scene : `Scene`
        The patch.
    detections, catalog, model_data
        The first pass: peaks and footprints, deblender catalog, model data.
    new_ids, new_xy : `numpy.ndarray`
        Local peak ids and (x, y) positions of the new sources.
    config : `DeblendConfig`, optional
        The first pass's deblender parameters.
    context : `DeblendContext`, optional
        The first pass's patch-wide inputs (`DeblendResult.context`), when it ran in this process.
    """
    return deblend_with_new_peaks(
        scene, detections, catalog, model_data, new_xy, config, new_peak_ids=new_ids, context=context
    )


@dataclasses.dataclass
class PatchOutputs:
    """The chain's outputs of one patch, in the output schema (tract pixels, global ids).

    Attributes
    ----------
    peaks : `astropy.table.Table`
        First-pass peaks (``object_detection_merged``).
    first_pass_catalog : `astropy.table.Table`
        First-pass deblend catalog (``object_deblend``).
    first_pass_models : `ScarletModelData`
        First-pass model data (``object_scarlet_models``, ``first_pass.scarlet``).
    new_sources : `SourceDetections`
        New sources and their footprints (``object_residual_detection`` /
        ``object_residual_footprints``, ``new_sources.fits``).
    catalog : `astropy.table.Table`
        Final catalog (``object_residual_deblend``, ``catalog.fits``).
    models : `ScarletModelData`
        Second-pass model data (``object_residual_scarlet_models``,
        ``second_pass.scarlet``).
    """

    peaks: Table
    first_pass_catalog: Table
    first_pass_models: ScarletModelData
    new_sources: SourceDetections
    catalog: Table
    models: ScarletModelData


@dataclasses.dataclass
class ChainResult:
    """Everything `run_chain` produced for one patch."""

    first_pass: FirstPass
    new_sources: NewSources
    second_pass: DeblendResult
    outputs: PatchOutputs
    timing: dict


def patch_outputs(
    scene: Scene,
    first_pass: FirstPass,
    new_sources: NewSources,
    second_pass: DeblendResult,
    placement: PatchPlacement,
) -> PatchOutputs:
    """The output tables and model data of a patch whose every step ran here."""
    id_map = placement.id_map()
    new_table = new_sources_catalog(new_sources.detections, new_sources.parents, scene, placement, id_map)
    return PatchOutputs(
        peaks=detections_to_catalog(first_pass.detections, placement),
        first_pass_catalog=deblend_to_catalog(first_pass.deblend.catalog, scene.bands, placement, id_map),
        first_pass_models=model_data_to_tract(first_pass.deblend.model_data, placement, id_map),
        new_sources=new_table,
        catalog=final_catalog(second_pass.catalog, scene.bands, placement, id_map, new_table.table),
        models=model_data_to_tract(second_pass.model_data, placement, id_map),
    )


def find_new_sources_after(
    scene: Scene,
    first: FirstPass,
    detector: Detector,
    inference: InferenceConfig | None = None,
    config: NewSourcesConfig | None = None,
    progress: bool = False,
) -> NewSources:
    """Step 3 on a first pass run here: `find_new_sources` with its model, parents, sources and ids."""
    catalog = first.deblend.catalog
    return find_new_sources(
        scene,
        first.deblend.model,
        parent_footprints(first.deblend.model_data, scene.shape),
        np.column_stack([catalog["x"], catalog["y"]]).reshape(-1, 2),
        int(np.max(first.detections.peaks["id"], initial=0)) + 1,
        detector,
        inference,
        config,
        progress,
    )


def run_chain(
    scene: Scene,
    detector: Detector,
    config: ChainConfig | None = None,
    placement: PatchPlacement | None = None,
    progress: bool = False,
) -> ChainResult:
    """Run every step of the chain on one patch.

    Parameters
    ----------
    scene : `Scene`
        The patch (bad pixels are handled by every step).
    detector : `Detector`
        The network.
    config : `ChainConfig`, optional
        Parameters.
    placement : `PatchPlacement`, optional
        Tract, patch and origin of the outputs (default: patch 0 of tract 0
        at the tract origin).
    progress : `bool`
        Progress bars over blends and tile batches.

    Raises
    ------
    lsst.meas.extensions.residual.network.ModelPackageError
        If the scene lacks a band the package needs, or its pixel scale is not the package's
        (checked before any work).
    """
    config = ChainConfig() if config is None else config
    placement = PatchPlacement() if placement is None else placement
    # Checked before any work: the network runs only after the first pass.
    detector.metadata.check_data(scene.bands, has_model=True)
    detector.metadata.check_pixel_scale(
        scene.pixel_scale, detector.settings(config.inference).pixel_scale_tolerance
    )
    deblend_config = config.deblend.replace(show_progress=progress)
    timing = {}
    start = time.perf_counter()
    first = run_first_pass(scene, config.detection, deblend_config)
    timing["first_pass"] = time.perf_counter() - start
    _return_freed_memory()
    start = time.perf_counter()
    catalog = first.deblend.catalog
    new = find_new_sources_after(scene, first, detector, config.inference, config.new_sources, progress)
    timing["network"] = time.perf_counter() - start
    # The second pass needs only the first pass's model data: its model cube is rendered again
    # if it is read later (to write the first-pass residual), not held through the second pass.
    first.deblend.release_model()
    _return_freed_memory()
    start = time.perf_counter()
    peaks = new.peaks  # detections classed as artefacts stay out of the second pass
    second = run_second_pass(
        scene,
        first.detections,
        catalog,
        first.deblend.model_data,
        new.ids[peaks],
        new.xy[peaks],
        deblend_config,
        first.deblend.context,
    )
    timing["second_pass"] = time.perf_counter() - start
    # Neither pass's patch-wide fit inputs are needed after the fits.
    first.deblend.release_context()
    second.release_context()
    _log.info(
        "%d first-pass peaks, %d new sources (%d on existing peaks dropped), %d after the second pass.",
        len(first.detections.peaks),
        len(new),
        new.n_matched,
        len(second.catalog),
    )
    outputs = patch_outputs(scene, first, new, second, placement)
    return ChainResult(first, new, second, outputs, timing)
