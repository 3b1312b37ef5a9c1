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
    "DeblendFieldsConfig",
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

from ..deblending import DeblendConfig, DeblendResult, deblend, deblend_with_new_peaks, render_model_data
from ..scene import SceneFormatError
from .catalogs import deblend_from_catalog, deblend_to_catalog, detections_from_catalog
from .coadds import DEFAULT_BAD_MASK_PLANES, EmptyPatchError, PatchImages, assemble_patch, read_coadd_plane
from .connections import FirstPassPeaksConnections
from .datasets import PATCH_DIMENSIONS
from .ids import IdMap
from .model_frames import model_data_to_patch, model_data_to_tract, transform_model_data
from .validation import validate_band_list


class DeblendFieldsConfig(pexConfig.Config):
    """The deblender's parameters (LSST ``ScarletDeblendConfig`` names)."""

    maxIter = pexConfig.Field[int](doc="Maximum optimizer iterations per blend.", default=300)
    minIter = pexConfig.Field[int](doc="Iterations before the optimizer may stop.", default=5)
    relativeError = pexConfig.Field[float](
        doc="Stop when the log-likelihood changes by less than this fraction between iterations.",
        default=1e-3,
    )
    modelPsfSigma = pexConfig.Field[float](doc="Sigma (pixels) of the model-frame Gaussian PSF.", default=0.8)
    minSNR = pexConfig.Field[float](
        doc="Peak S/N above which a source may get two components (above 2*minSNR).", default=50.0
    )
    backgroundThresh = pexConfig.Field[float](
        doc="Model pixels fainter than this many noise sigma in every band are set to zero.", default=1.0
    )
    maxNumberOfPeaks = pexConfig.Field[int](
        doc="Deblend only the brightest peaks of a footprint (<= 0: all); the rest are flagged skipped.",
        default=600,
    )
    isolated = pexConfig.ChoiceField[str](
        doc="How single-peak footprints are handled.",
        default="fit",
        allowed={
            "fit": "Model them like any blend (their residuals show what detection missed).",
            "footprint": "LSST's cheap way: the model is the image inside the footprint (zero residual).",
        },
    )
    conserveFlux = pexConfig.Field[bool](
        doc="Also measure fluxes by redistributing the image in proportion to the models.", default=True
    )

    def to_core(self) -> DeblendConfig:
        return DeblendConfig(
            max_iter=self.maxIter,
            min_iter=self.minIter,
            relative_error=self.relativeError,
            model_psf_sigma=self.modelPsfSigma,
            min_snr=self.minSNR,
            background_thresh=self.backgroundThresh,
            max_number_of_peaks=self.maxNumberOfPeaks,
            isolated=self.isolated,
            conserve_flux=self.conserveFlux,
            show_progress=False,
        )


def _coadd_planes(coadds: Mapping[str, Any], bad_mask_planes, what: str):
    return {
        band: read_coadd_plane(coadd, bad_mask_planes, f"{what} deep_coadd {band}")
        for band, coadd in coadds.items()
    }


def _assemble(coadds, bands, bad_mask_planes, what: str) -> PatchImages:
    try:
        return assemble_patch(_coadd_planes(coadds, bad_mask_planes, what), bands or None, what=what)
    except EmptyPatchError as err:
        raise pipeBase.NoWorkFound(str(err)) from err


# -- first pass ------------------------------------------------------------------


class FirstPassDeblendConnections(FirstPassPeaksConnections):
    deblendCatalog = cT.Output(
        doc="One row per deblended source (see tasks.catalogs.deblend_to_catalog).",
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
    deblend = pexConfig.ConfigField[DeblendFieldsConfig](doc="Deblender parameters.")
    bands = pexConfig.ListField[str](
        doc="Bands to deblend, in LSST order; empty: the bands of the detections.", default=[]
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels that get no weight.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        validate_band_list(self.bands, "bands", allow_empty=True)
        self.deblend.to_core()


class FirstPassDeblendTask(pipeBase.PipelineTask):
    """Deblend every first-pass footprint of a patch."""

    ConfigClass = FirstPassDeblendConfig
    _DefaultName = "firstPassDeblend"
    config: FirstPassDeblendConfig

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
        core_detections, x0, y0 = detections_from_catalog(detections, footprints, tract, patch)
        bands = tuple(self.config.bands) or core_detections.bands
        patch_images = _assemble(coadds, bands, self.config.badMaskPlanes, what)
        _check_origin(patch_images, x0, y0, "object_detection_footprints", what)
        if tuple(core_detections.bands) != patch_images.scene.bands:
            core_detections = _detections_for_bands(core_detections, patch_images.scene.bands, what)
        result = deblend(patch_images.scene, core_detections, self.config.deblend.to_core())
        self.log.info(
            "%s: %d sources in %d blends and %d isolated footprints.",
            what,
            len(result.catalog),
            len(result.model_data.blends),
            len(result.model_data.isolated),
        )
        return pipeBase.Struct(
            deblendCatalog=deblend_to_catalog(result.catalog, result.bands, patch_images, tract, patch),
            scarletModels=model_data_to_tract(
                result.model_data, patch_images.x0, patch_images.y0, tract, patch
            ),
            result=result,
            patch_images=patch_images,
        )


def _check_origin(patch_images: PatchImages, x0: int, y0: int, dataset: str, what: str) -> None:
    if (patch_images.x0, patch_images.y0) != (x0, y0):
        raise SceneFormatError(
            f"{what}: {dataset} starts at tract pixel ({x0}, {y0}) but the coadds at "
            f"({patch_images.x0}, {patch_images.y0})."
        )


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


class ResidualDeblendConnections(FirstPassPeaksConnections):
    deblendCatalog = cT.Input(
        doc="First-pass deblend catalog.",
        name="object_deblend",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    scarletModels = cT.Input(
        doc="First-pass Scarlet model data.",
        name="object_scarlet_models",
        storageClass="ResidualScarletModelData",
        dimensions=PATCH_DIMENSIONS,
    )
    newSources = cT.Input(
        doc="Sources found in the first-pass residuals.",
        name="object_residual_detection",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    outputCatalog = cT.Output(
        doc="Final catalog: every source of both passes, with found_by and residual_detection_id.",
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
    deblend = pexConfig.ConfigField[DeblendFieldsConfig](
        doc="Deblender parameters for the re-fitted blends (keep them equal to the first pass's)."
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels that get no weight.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        self.deblend.to_core()


class ResidualDeblendTask(pipeBase.PipelineTask):
    """Second deblending pass with the sources found in the residuals."""

    ConfigClass = ResidualDeblendConfig
    _DefaultName = "residualDeblend"
    config: ResidualDeblendConfig

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
            ``outputCatalog``, ``outputModels`` (Butler form), ``result``
            (the core's second-pass `DeblendResult`), ``first_pass`` (the
            rebuilt first-pass `DeblendResult`), ``changed_blends`` (local
            ids of the re-fitted blends) and ``patch_images``.

        Raises
        ------
        lsst.pipe.base.NoWorkFound
            If the patch has no usable pixel.
        SceneFormatError
            If the inputs do not belong together.
        """
        what = f"tract {tract} patch {patch}"
        core_detections, x0, y0 = detections_from_catalog(detections, footprints, tract, patch)
        id_map = IdMap(tract, patch, sources=deblend_catalog["id"], parents=deblend_catalog["parent"])
        bands = model_data.bands or core_detections.bands
        patch_images = _assemble(coadds, bands, self.config.badMaskPlanes, what)
        _check_origin(patch_images, x0, y0, "object_detection_footprints", what)
        scene = patch_images.scene
        if tuple(core_detections.bands) != scene.bands:
            core_detections = _detections_for_bands(core_detections, scene.bands, what)
        config = self.config.deblend.to_core()
        first_models = model_data_to_patch(model_data, x0, y0, id_map)
        model = render_model_data(first_models, scene.shape, bands=scene.bands, image=scene.clean_image())
        first_pass = DeblendResult(
            catalog=deblend_from_catalog(deblend_catalog, scene.bands, x0, y0, id_map),
            model=model,
            residual=np.where(scene.good, scene.image - model, np.float32(0)).astype(np.float32),
            model_data=first_models,
            detections=core_detections,
            bands=scene.bands,
            config=config,
        )
        order = np.argsort(np.asarray(new_sources["id"]), kind="stable")
        new_sources = new_sources[order]
        new_xy = np.column_stack(
            [np.asarray(new_sources["x"], dtype=float) - x0, np.asarray(new_sources["y"], dtype=float) - y0]
        ).reshape(-1, 2)
        n_old = len(core_detections.peaks)
        if len(new_sources):
            result = deblend_with_new_peaks(scene, first_pass, new_xy, config)
        else:
            result = first_pass
        new_peak_ids = np.asarray(result.detections.peaks["id"][n_old:], dtype=np.int64)
        changed = np.unique(np.asarray(result.detections.peaks["footprint_id"][n_old:]))
        catalog = deblend_to_catalog(result.catalog, result.bands, patch_images, tract, patch, id_map)
        # Link each new source to the residual detection that seeded it.
        seeded_by = dict(
            zip(
                id_map.global_sources(new_peak_ids).tolist(),
                np.asarray(new_sources["id"]).tolist(),
                strict=True,
            )
        )
        catalog["residual_detection_id"] = np.array(
            [seeded_by.get(int(i), 0) for i in catalog["id"]], dtype=np.int64
        )
        models = _models_to_tract(result.model_data, patch_images, id_map)
        self.log.info(
            "%s: %d new source(s) from the residuals; %d blend(s) re-fitted; %d sources in all.",
            what,
            len(new_sources),
            len(changed),
            len(catalog),
        )
        return pipeBase.Struct(
            outputCatalog=catalog,
            outputModels=models,
            result=result,
            first_pass=first_pass,
            changed_blends=changed,
            patch_images=patch_images,
        )


def _models_to_tract(model_data, patch_images: PatchImages, id_map: IdMap):
    def sid(local: int) -> int:
        return int(id_map.global_sources([local])[0])

    def pid(local: int) -> int:
        return int(id_map.global_parents([local])[0])

    return transform_model_data(
        model_data, source_id=sid, parent_id=pid, dy=patch_images.y0, dx=patch_images.x0
    )
