"""Dataset types of the embedded default, and how they relate to DRP v2's.

Names follow LSST DRP v2 (lsst/drp_pipe ``pipelines/_ingredients/base-v2.yaml``)
wherever our dataset holds the same thing; what differs is the storage class
(DRP's afw types need lsst.afw, which is not on PyPI):

=============================== ======================== ============================================
dataset type                    embedded storage class   DRP v2
=============================== ======================== ============================================
``deep_coadd``                  ``CellCoadd``            same name, ``ExposureF``
``object_detection_merged``     ``ArrowAstropy`` (peaks) same name, ``SourceCatalog`` (footprints
                                                         with peaks inside)
``object_detection_footprints`` ``ImageV2`` (int32       none: afw footprints live inside
                                labels)                  ``object_detection_merged``
``object_deblend``              ``ArrowAstropy``         same name, ``SourceCatalog``
``object_scarlet_models``       ``ResidualScarletModel   same name, ``LsstScarletModelData`` (same
                                Data``                   ``.scarlet`` file format)
``residual_model_package``      ``ResidualModelPackage`` new (prerequisite, dimensions ``()``)
``object_residual_detection``   ``ArrowAstropy``         new: sources found in the residuals
``object_residual_footprints``  ``ImageV2`` (int32)      new: their footprints (label image)
``object_residual_deblend``     ``ArrowAstropy``         new: second-pass catalog (``found_by``)
``object_residual_scarlet_      ``ResidualScarletModel   new: second-pass model data
models``                        Data``
=============================== ======================== ============================================
"""

from __future__ import annotations

__all__ = ["DatasetInfo", "EMBEDDED_DATASETS", "PATCH_DIMENSIONS", "BAND_PATCH_DIMENSIONS"]

import dataclasses

PATCH_DIMENSIONS = ("tract", "patch", "skymap")
BAND_PATCH_DIMENSIONS = ("tract", "patch", "band", "skymap")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    storage_class: str
    dimensions: tuple[str, ...]
    drp: str
    """What DRP v2 has under this name (or ``"new"``)."""


EMBEDDED_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("deep_coadd", "CellCoadd", BAND_PATCH_DIMENSIONS, "ExposureF"),
        DatasetInfo("object_detection_merged", "ArrowAstropy", PATCH_DIMENSIONS, "SourceCatalog"),
        DatasetInfo("object_detection_footprints", "ImageV2", PATCH_DIMENSIONS, "new"),
        DatasetInfo("object_deblend", "ArrowAstropy", PATCH_DIMENSIONS, "SourceCatalog"),
        DatasetInfo(
            "object_scarlet_models", "ResidualScarletModelData", PATCH_DIMENSIONS, "LsstScarletModelData"
        ),
        DatasetInfo("residual_model_package", "ResidualModelPackage", (), "new"),
        DatasetInfo("object_residual_detection", "ArrowAstropy", PATCH_DIMENSIONS, "new"),
        DatasetInfo("object_residual_footprints", "ImageV2", PATCH_DIMENSIONS, "new"),
        DatasetInfo("object_residual_deblend", "ArrowAstropy", PATCH_DIMENSIONS, "new"),
        DatasetInfo("object_residual_scarlet_models", "ResidualScarletModelData", PATCH_DIMENSIONS, "new"),
        DatasetInfo("residual_sim_truth", "ArrowAstropy", PATCH_DIMENSIONS, "new (demo only)"),
    )
}
