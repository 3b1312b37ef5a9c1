"""First- and second-pass deblending as PipelineTasks (embedded default).

`FirstPassDeblendTask` stands in for DRP's ``deblendCoaddFootprints``: it
deblends every footprint of ``object_detection_merged`` with the project's
Scarlet-compatible deblender and writes ``object_deblend`` and
``object_scarlet_models``.

`ResidualDeblendTask` is the second pass: the sources the network found in
the residuals (``object_residual_detection``) become new peaks; only the
blends that gained a peak are fitted again, new isolated sources get their
own footprints, everything else is copied. It writes its own datasets
(``object_residual_deblend``, ``object_residual_scarlet_models``): a dataset
type has one producer per pipeline, and the first-pass outputs stay as they
were. The ``found_by`` column says which pass found each source.
"""

from __future__ import annotations

__all__ = [
    "FirstPassDeblendConnections",
    "FirstPassDeblendConfig",
    "FirstPassDeblendTask",
    "ResidualDeblendConnections",
    "ResidualDeblendConfig",
    "ResidualDeblendTask",
]

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..chain import (
    IdMap,
    PatchPlacement,
    deblend_from_catalog,
    deblend_to_catalog,
    detections_from_catalog,
    final_catalog,
    model_data_to_patch,
    model_data_to_tract,
    new_sources_from_catalog,
)
from ..scene import SceneFormatError
from .algorithms import DeblendTask
from .coadds import DEFAULT_BAD_MASK_PLANES, PatchImages, label_array, read_patch
from .connections import FirstPassDeblendInputConnections, FirstPassPeaksConnections
from .datasets import PATCH_DIMENSIONS
from .validation import validate_band_list

# -- first pass ------------------------------------------------------------------


class FirstPassDeblendConnections(FirstPassPeaksConnections):
    deblendCatalog = cT.Output(
        doc="One row per deblended source (see chain.catalogs.deblend_to_catalog).",
        name="object_deblend",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    scarletModels = cT.Output(
        doc="Scarlet model data (tract pixels, catalog ids).",
        name="object_scarlet_models",
        storageClass="ResidualScarletModelData",
        dimensions=PATCH_DIMENSIONS,
    )


class FirstPassDeblendConfig(pipeBase.PipelineTaskConfig, pipelineConnections=FirstPassDeblendConnections):
    deblend = pexConfig.ConfigurableField(
        target=DeblendTask, doc="The deblender (parameters: the core's DeblendConfig)."
    )
    bands = pexConfig.ListField[str](
        doc="Bands to deblend, in LSST order; empty: the bands of the detections.", default=[]
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels that get no weight.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        validate_band_list(self.bands, "bands", allow_empty=True)


class FirstPassDeblendTask(pipeBase.PipelineTask):
    """Deblend every first-pass footprint of a patch."""

    ConfigClass = FirstPassDeblendConfig
    _DefaultName = "firstPassDeblend"
    config: FirstPassDeblendConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("deblend")

    def runQuantum(self, butlerQC, inputRefs, outputRefs) -> None:
        coadds = {ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds}
        detections = butlerQC.get(inputRefs.detections)
        footprints = butlerQC.get(inputRefs.footprints)
        data_id = butlerQC.quantum.dataId
        outputs = self.run(
            coadds=coadds,
            detections=detections,
            footprints=footprints,
            tract=data_id["tract"],
            patch=data_id["patch"],
        )
        butlerQC.put(outputs, outputRefs)

    def run(self, coadds: Mapping[str, Any], detections: Table, footprints, tract: int, patch: int):
        """Deblend one patch.

        Parameters
        ----------
        coadds : mapping [`str`, `object`]
            Coadd per band.
        detections : `astropy.table.Table`
            ``object_detection_merged``.
        footprints : `lsst.images.Image`
            ``object_detection_footprints``.
        tract, patch : `int`
            The patch.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``deblendCatalog``, ``scarletModels`` (Butler form) and
            ``result`` (the core's `DeblendResult`, patch pixels).

        Raises
        ------
        lsst.pipe.base.NoWorkFound
            If the patch has no usable pixel.
        SceneFormatError
            If detections and coadds do not belong together (bands, patch).
        """
        what = f"tract {tract} patch {patch}"
        labels, x0, y0 = label_array(footprints)
        core_detections = detections_from_catalog(detections, labels, PatchPlacement(tract, patch, x0, y0))
        bands = tuple(self.config.bands) or core_detections.bands
        patch_images = read_patch(coadds, bands, self.config.badMaskPlanes, what)
        placement = _placement(patch_images, tract, patch, x0, y0, what)
        scene = patch_images.scene
        if tuple(core_detections.bands) != scene.bands:
            core_detections = _detections_for_bands(core_detections, scene.bands, what)
        result = self.deblend.run(scene, core_detections)
        self.log.info(
            "%s: %d sources in %d blends and %d isolated footprints.",
            what,
            len(result.catalog),
            len(result.model_data.blends),
            len(result.model_data.isolated),
        )
        id_map = placement.id_map()
        return pipeBase.Struct(
            deblendCatalog=deblend_to_catalog(result.catalog, result.bands, placement, id_map),
            scarletModels=model_data_to_tract(result.model_data, placement, id_map),
            result=result,
            patch_images=patch_images,
        )


def _placement(patch_images: PatchImages, tract: int, patch: int, x0: int, y0: int, what: str):
    """The coadds' placement, checked against the origin of the first-pass footprint image."""
    if (patch_images.x0, patch_images.y0) != (x0, y0):
        raise SceneFormatError(
            f"{what}: object_detection_footprints starts at tract pixel ({x0}, {y0}) but the coadds at "
            f"({patch_images.x0}, {patch_images.y0})."
        )
    return patch_images.placement(tract, patch)


def _detections_for_bands(detections, bands, what):
    """Detections whose per-band PSF fluxes are restricted to ``bands``."""
    missing = [b for b in bands if b not in detections.bands]
    if missing:
        raise SceneFormatError(
            f"{what}: detections were made on bands {','.join(detections.bands)}; no {','.join(missing)}."
        )
    index = [detections.bands.index(b) for b in bands]
    peaks = detections.peaks.copy()
    peaks["psf_flux"] = np.asarray(peaks["psf_flux"])[:, index]
    return type(detections)(peaks=peaks, footprints=detections.footprints, bands=tuple(bands))


# -- second pass -----------------------------------------------------------------


class ResidualDeblendConnections(FirstPassPeaksConnections, FirstPassDeblendInputConnections):
    newSources = cT.Input(
        doc="Sources found in the first-pass residuals.",
        name="object_residual_detection",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    outputCatalog = cT.Output(
        doc="Final catalog: every source of both passes, with found_by and the network's class and score.",
        name="object_residual_deblend",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    outputModels = cT.Output(
        doc="Final Scarlet model data.",
        name="object_residual_scarlet_models",
        storageClass="ResidualScarletModelData",
        dimensions=PATCH_DIMENSIONS,
    )


class ResidualDeblendConfig(pipeBase.PipelineTaskConfig, pipelineConnections=ResidualDeblendConnections):
    deblend = pexConfig.ConfigurableField(
        target=DeblendTask,
        doc="The deblender of the re-fitted blends (keep its parameters equal to the first pass's).",
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels that get no weight.", default=list(DEFAULT_BAD_MASK_PLANES)
    )


class ResidualDeblendTask(pipeBase.PipelineTask):
    """Second deblending pass with the sources found in the residuals."""

    ConfigClass = ResidualDeblendConfig
    _DefaultName = "residualDeblend"
    config: ResidualDeblendConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("deblend")

    def runQuantum(self, butlerQC, inputRefs, outputRefs) -> None:
        coadds = {ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds}
        data_id = butlerQC.quantum.dataId
        outputs = self.run(
            coadds=coadds,
            detections=butlerQC.get(inputRefs.detections),
            footprints=butlerQC.get(inputRefs.footprints),
            deblend_catalog=butlerQC.get(inputRefs.deblendCatalog),
            model_data=butlerQC.get(inputRefs.scarletModels),
            new_sources=butlerQC.get(inputRefs.newSources),
            tract=data_id["tract"],
            patch=data_id["patch"],
        )
        butlerQC.put(outputs, outputRefs)

    def run(
        self,
        coadds: Mapping[str, Any],
        detections: Table,
        footprints,
        deblend_catalog: Table,
        model_data,
        new_sources: Table,
        tract: int,
        patch: int,
    ) -> pipeBase.Struct:
        """Re-deblend the blends that gained sources found in the residuals.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``outputCatalog`` (`lsst.meas.extensions.residual.chain.final_catalog`),
            ``outputModels`` (tract pixels, global ids), and for inspection
            ``result`` (the core's second-pass `DeblendResult`),
            ``changed_blends`` (local ids of the re-fitted blends) and
            ``patch_images``.

        Raises
        ------
        lsst.pipe.base.NoWorkFound
            If the patch has no usable pixel.
        SceneFormatError
            If the inputs do not belong together.
        """
        what = f"tract {tract} patch {patch}"
        labels, x0, y0 = label_array(footprints)
        id_map = IdMap(tract, patch, sources=deblend_catalog["id"], parents=deblend_catalog["parent"])
        patch_images = read_patch(coadds, model_data.bands or None, self.config.badMaskPlanes, what)
        placement = _placement(patch_images, tract, patch, x0, y0, what)
        scene = patch_images.scene
        core_detections = detections_from_catalog(detections, labels, placement)
        if tuple(core_detections.bands) != scene.bands:
            core_detections = _detections_for_bands(core_detections, scene.bands, what)
        new_ids, new_xy = new_sources_from_catalog(new_sources, placement)
        result = self.deblend.runSecondPass(
            scene,
            core_detections,
            deblend_from_catalog(deblend_catalog, scene.bands, placement, id_map),
            model_data_to_patch(model_data, placement, id_map),
            new_ids,
            new_xy,
        )
        n_old = len(core_detections.peaks)
        changed = np.unique(np.asarray(result.detections.peaks["footprint_id"][n_old:]))
        self.log.info(
            "%s: %d new source(s) from the residuals; %d blend(s) re-fitted; %d sources in all.",
            what,
            len(new_ids),
            len(changed),
            len(result.catalog),
        )
        return pipeBase.Struct(
            outputCatalog=final_catalog(result.catalog, result.bands, placement, id_map, new_sources),
            outputModels=model_data_to_tract(result.model_data, placement, id_map),
            result=result,
            changed_blends=changed,
            patch_images=patch_images,
        )
