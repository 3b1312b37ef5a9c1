"""Connections every task of the chain shares, declared once.

pipe_base copies a parent connections class's connections into its
subclasses, so each task's connections class derives from one of these and
adds only its own datasets.
"""

from __future__ import annotations

__all__ = ["PatchCoaddConnections", "FirstPassPeaksConnections", "FirstPassDeblendInputConnections"]

import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from .datasets import BAND_PATCH_DIMENSIONS, PATCH_DIMENSIONS


class PatchCoaddConnections(pipeBase.PipelineTaskConnections, dimensions=PATCH_DIMENSIONS):
    """A patch-level task that reads the patch's coadd in every band."""

    coadds = cT.Input(
        doc="Coadd of the patch in each band.",
        name="deep_coadd",
        storageClass="CellCoadd",
        dimensions=BAND_PATCH_DIMENSIONS,
        multiple=True,
    )


class FirstPassPeaksConnections(PatchCoaddConnections):
    """A patch-level task that also reads the first-pass peaks and footprints."""

    detections = cT.Input(
        doc="First-pass peaks.",
        name="object_detection_merged",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    footprints = cT.Input(
        doc="First-pass footprint label image.",
        name="object_detection_footprints",
        storageClass="ImageV2",
        dimensions=PATCH_DIMENSIONS,
    )


class FirstPassDeblendInputConnections(PatchCoaddConnections):
    """A patch-level task that also reads the first deblending pass's catalog and model data."""

    deblendCatalog = cT.Input(
        doc="First-pass deblend catalog (existing sources).",
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
