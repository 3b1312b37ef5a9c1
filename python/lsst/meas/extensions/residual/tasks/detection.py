"""First-pass detection as a PipelineTask (embedded default).

Stands in for DRP's ``detectCoaddPeaks`` + ``mergeObjectDetection`` pair when
the chain runs from PyPI packages alone: it reads every band's ``deep_coadd``
of a patch and runs `lsst.meas.extensions.residual.detection.detect_peaks`
on the multi-band detection image.
"""

from __future__ import annotations

__all__ = [
    "FirstPassDetectionConnections",
    "FirstPassDetectionConfig",
    "FirstPassDetectionTask",
]

from collections.abc import Mapping
from typing import Any

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..chain import detections_to_catalog
from .algorithms import DetectPeaksTask
from .coadds import DEFAULT_BAD_MASK_PLANES, label_image, read_patch
from .connections import PatchCoaddConnections
from .datasets import PATCH_DIMENSIONS
from .validation import validate_band_list


class FirstPassDetectionConnections(PatchCoaddConnections):
    catalog = cT.Output(
        doc="Detected peaks: id, footprint_id, x, y (tract pixels), ra, dec, significance, {band}_psf_flux.",
        name="object_detection_merged",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    footprints = cT.Output(
        doc="Footprint label image over the patch (int32, local footprint ids, 0 outside).",
        name="object_detection_footprints",
        storageClass="ImageV2",
        dimensions=PATCH_DIMENSIONS,
    )


class FirstPassDetectionConfig(
    pipeBase.PipelineTaskConfig, pipelineConnections=FirstPassDetectionConnections
):
    detection = pexConfig.ConfigurableField(
        target=DetectPeaksTask, doc="First-pass detection (parameters: the core's DetectionConfig)."
    )
    bands = pexConfig.ListField[str](
        doc="Bands to detect on, in LSST order; empty: every band that has a coadd.", default=[]
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels that are ignored.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        validate_band_list(self.bands, "bands", allow_empty=True)


class FirstPassDetectionTask(pipeBase.PipelineTask):
    """Detect footprints and peaks on all bands of a patch at once."""

    ConfigClass = FirstPassDetectionConfig
    _DefaultName = "firstPassDetection"
    config: FirstPassDetectionConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("detection")

    def runQuantum(self, butlerQC, inputRefs, outputRefs) -> None:
        coadds = {ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds}
        data_id = butlerQC.quantum.dataId
        outputs = self.run(coadds=coadds, tract=data_id["tract"], patch=data_id["patch"])
        butlerQC.put(outputs, outputRefs)

    def run(self, coadds: Mapping[str, Any], tract: int, patch: int) -> pipeBase.Struct:
        """Detect peaks in one patch.

        Parameters
        ----------
        coadds : mapping [`str`, `object`]
            Coadd per band (``CellCoadd``, afw ``Exposure`` or `CoaddPlane`).
        tract, patch : `int`
            Where the patch is (for global ids).

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``catalog`` (`astropy.table.Table`), ``footprints``
            (`lsst.images.Image`), ``detections`` (core `Detections`, patch
            pixels) and ``patch_images`` (`PatchImages`).

        Raises
        ------
        lsst.pipe.base.NoWorkFound
            If the patch has no usable pixel.
        """
        what = f"tract {tract} patch {patch}"
        patch_images = read_patch(coadds, self.config.bands, self.config.badMaskPlanes, what)
        detections = self.detection.run(patch_images.scene)
        self.log.info(
            "%s: %d peaks in %d footprints on bands %s.",
            what,
            len(detections.peaks),
            int(detections.footprints.max(initial=0)),
            "".join(patch_images.scene.bands),
        )
        return pipeBase.Struct(
            catalog=detections_to_catalog(detections, patch_images.placement(tract, patch)),
            footprints=label_image(detections.footprints, patch_images),
            detections=detections,
            patch_images=patch_images,
        )
