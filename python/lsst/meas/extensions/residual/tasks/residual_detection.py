"""`ResidualDetectionTask`: find the sources the first deblending pass missed.

For one patch it renders the first-pass Scarlet model in every band, runs the
Mask R-CNN of a model package on the residual (and model, and optionally
image) channels, drops detections that sit on an existing peak, and writes
the rest with their class, score, bounding box and footprint.

Inputs come in two flavours (``inputFlavor``):

``embedded``
    What the embedded first pass writes: ``deep_coadd`` as ``CellCoadd``,
    ``object_deblend`` as ``ArrowAstropy``, ``object_scarlet_models`` as
    ``ResidualScarletModelData``.
``drp``
    DRP v2's datasets: ``ExposureF`` coadds, ``SourceCatalog`` and
    ``LsstScarletModelData``, all loaded lazily. Where ``lsst.afw`` /
    ``lsst.meas.extensions.scarlet`` are importable they are read through
    their own APIs; otherwise the files are read directly (coadd pixels with
    `lsst.images.MaskedImage.read_legacy`, the catalog's first table HDU with
    astropy, the ``.scarlet`` container with the project's reader) and the
    PSF comes from the model data.
"""

from __future__ import annotations

__all__ = [
    "ResidualDetectionConnections",
    "ResidualDetectionConfig",
    "ResidualDetectionTask",
    "read_drp_inputs",
]

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT

from ..chain import first_pass_sources, model_data_to_patch, new_sources_catalog
from ..deblending import ScarletModelData, parent_footprints, render_model_data
from ..network import Detector, ModelPackage
from .algorithms import FindNewSourcesTask
from .coadds import DEFAULT_BAD_MASK_PLANES, read_legacy_coadd_file, read_patch
from .connections import FirstPassDeblendInputConnections
from .datasets import PATCH_DIMENSIONS
from .validation import validate_band_list

#: Storage classes of the inputs in each flavour.
_FLAVOR_STORAGE = {
    "embedded": {
        "coadds": "CellCoadd",
        "deblendCatalog": "ArrowAstropy",
        "scarletModels": "ResidualScarletModelData",
    },
    "drp": {
        "coadds": "ExposureF",
        "deblendCatalog": "SourceCatalog",
        "scarletModels": "LsstScarletModelData",
    },
}


class ResidualDetectionConnections(FirstPassDeblendInputConnections):
    modelPackage = cT.PrerequisiteInput(
        doc="Trained network (model package zip).",
        name="residual_model_package",
        storageClass="ResidualModelPackage",
        dimensions=(),
    )
    newSources = cT.Output(
        doc="Sources found in the residuals: id, parent, x, y, ra, dec, class, score, bbox, flags.",
        name="object_residual_detection",
        storageClass="ArrowAstropy",
        dimensions=PATCH_DIMENSIONS,
    )
    newFootprints = cT.Output(
        doc="Their footprints (one boolean mask per source; patch pixels).",
        name="object_residual_footprints",
        storageClass="ResidualSourceFootprints",
        dimensions=PATCH_DIMENSIONS,
    )

    def __init__(self, *, config: ResidualDetectionConfig):
        super().__init__(config=config)
        lazy = config.inputFlavor == "drp"
        for name, storage_class in _FLAVOR_STORAGE[config.inputFlavor].items():
            setattr(
                self,
                name,
                dataclasses.replace(getattr(self, name), storageClass=storage_class, deferLoad=lazy),
            )


class ResidualDetectionConfig(pipeBase.PipelineTaskConfig, pipelineConnections=ResidualDetectionConnections):
    inputFlavor = pexConfig.ChoiceField[str](
        doc="Which kind of first-pass datasets the inputs are.",
        default="embedded",
        allowed={
            "embedded": "CellCoadd, ArrowAstropy and ResidualScarletModelData (the embedded first pass).",
            "drp": "ExposureF, SourceCatalog and LsstScarletModelData (LSST DRP v2).",
        },
    )
    find = pexConfig.ConfigurableField(
        target=FindNewSourcesTask,
        doc="The network on the residuals and which of its detections are new (`FindNewSourcesTask`).",
    )
    device = pexConfig.ChoiceField[str](
        doc="Where the network runs.",
        default="auto",
        allowed={"auto": "CUDA if available, else CPU.", "cpu": "CPU.", "cuda": "The first CUDA GPU."},
    )
    bands = pexConfig.ListField[str](
        doc="Bands required, in LSST order; empty: the model package's bands (for a package taking band "
        "subsets, those of them the patch has).",
        default=[],
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels the network sees as zero.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        validate_band_list(self.bands, "bands", allow_empty=True)


def read_drp_inputs(coadd_handles: Mapping[str, Any], catalog_handle, models_handle):
    """Read DRP datasets from deferred handles, through afw where it is importable.

    Parameters
    ----------
    coadd_handles : mapping [`str`, `lsst.daf.butler.DeferredDatasetHandle`]
        ``ExposureF`` coadd per band.
    catalog_handle, models_handle : `lsst.daf.butler.DeferredDatasetHandle`
        ``SourceCatalog`` and ``LsstScarletModelData``.

    Returns
    -------
    coadds : `dict` [`str`, `object`]
        afw ``Exposure`` or `CoaddPlane` (without PSF) per band.
    catalog : `astropy.table.Table`
    model_data : `ScarletModelData`
    """
    from ..deblending import read_scarlet_model

    try:
        import lsst.afw.image  # noqa: F401

        have_afw = True
    except ImportError:
        have_afw = False
    try:
        import lsst.meas.extensions.scarlet  # noqa: F401

        have_scarlet = True
    except ImportError:
        have_scarlet = False

    coadds = {}
    for band, handle in coadd_handles.items():
        coadds[band] = handle.get() if have_afw else read_legacy_coadd_file(_uri(handle))
    if have_afw:
        catalog = catalog_handle.get().asAstropy()
    else:
        with _uri(catalog_handle).as_local() as local:
            catalog = Table.read(local.ospath, hdu=1)
    if have_scarlet:
        model_data = ScarletModelData.from_dict(models_handle.get().as_dict())
    else:
        with _uri(models_handle).open("rb") as stream:
            model_data = read_scarlet_model(stream)
    return coadds, catalog, model_data


def _uri(handle):
    return handle.butler.getURI(handle.ref)


class ResidualDetectionTask(pipeBase.PipelineTask):
    """Find sources missed by the first pass in its residuals, with a Mask R-CNN."""

    ConfigClass = ResidualDetectionConfig
    _DefaultName = "residualDetection"
    config: ResidualDetectionConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("find")
        self._detector: Detector | None = None
        self._detector_package: ModelPackage | None = None

    def runQuantum(self, butlerQC, inputRefs, outputRefs) -> None:
        data_id = butlerQC.quantum.dataId
        package = butlerQC.get(inputRefs.modelPackage)
        if self.config.inputFlavor == "drp":
            handles = {ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds}
            coadds, catalog, model_data = read_drp_inputs(
                handles, butlerQC.get(inputRefs.deblendCatalog), butlerQC.get(inputRefs.scarletModels)
            )
        else:
            coadds = {ref.dataId["band"]: butlerQC.get(ref) for ref in inputRefs.coadds}
            catalog = butlerQC.get(inputRefs.deblendCatalog)
            model_data = butlerQC.get(inputRefs.scarletModels)
        outputs = self.run(
            coadds=coadds,
            deblend_catalog=catalog,
            model_data=model_data,
            model_package=package,
            tract=data_id["tract"],
            patch=data_id["patch"],
        )
        butlerQC.put(outputs, outputRefs)

    def detector(self, package: ModelPackage) -> Detector:
        """The network for ``package`` (built once per task instance)."""
        if self._detector is None or self._detector_package is not package:
            self._detector = Detector(package, self.config.device)
            self._detector_package = package
        return self._detector

    def run(
        self,
        coadds: Mapping[str, Any],
        deblend_catalog: Table,
        model_data: ScarletModelData,
        model_package: ModelPackage,
        tract: int,
        patch: int,
    ) -> pipeBase.Struct:
        """Find new sources in one patch.

        Parameters
        ----------
        coadds : mapping [`str`, `object`]
            Coadd per band (``CellCoadd``, afw ``Exposure`` or `CoaddPlane`).
        deblend_catalog : `astropy.table.Table`
            First-pass deblend catalog (embedded or DRP columns).
        model_data : `ScarletModelData`
            First-pass model data (tract pixels, catalog ids).
        model_package : `ModelPackage`
            The network.
        tract, patch : `int`
            The patch.

        Returns
        -------
        result : `lsst.pipe.base.Struct`
            ``newSources`` (`astropy.table.Table`), ``newFootprints``
            (`SourceDetections`, patch pixels, ids as in ``newSources``),
            and for inspection ``patch_images``, ``model`` (first-pass model
            cube) and ``n_matched`` (detections dropped as existing peaks).

        Raises
        ------
        lsst.pipe.base.NoWorkFound
            If the patch has no usable pixel.
        lsst.meas.extensions.residual.network.ModelPackageError
            If the package's bands are missing from the data or the config.
        SceneFormatError, ScarletModelDataError
            If coadds, catalog and model data do not belong together.
        """
        what = f"tract {tract} patch {patch}"
        meta = model_package.metadata
        if self.config.bands:
            bands = tuple(self.config.bands)
        elif meta.band_subsets:
            bands = tuple(b for b in meta.bands if b in coadds)  # what the patch has of the package's
        else:
            bands = tuple(meta.bands)
        meta.check_data(bands, has_model=True)
        patch_images = read_patch(
            coadds, bands, self.config.badMaskPlanes, what, psf_fallback=_model_data_psfs(model_data)
        )
        placement = patch_images.placement(tract, patch)
        scene = patch_images.scene

        ids, parents, xs, ys = first_pass_sources(deblend_catalog)
        parent_set = (
            set(np.unique(parents[parents != 0]).tolist())
            | {int(k) for k in model_data.blends}
            | {int(k) for k in model_data.isolated}
        )
        id_map = placement.id_map(sources=ids, parents=parent_set)
        models_patch = model_data_to_patch(model_data, placement, id_map)
        model = render_model_data(models_patch, scene.shape, bands=scene.bands, image=scene.clean_image())
        new = self.find.run(
            scene,
            model,
            parent_footprints(models_patch, scene.shape),
            np.column_stack([xs - placement.x0, ys - placement.y0]).reshape(-1, 2),
            # New sources continue the first pass's local source ids, as the
            # second pass numbers its new peaks.
            id_map.max_local_source + 1,
            self.detector(model_package),
        )
        sources = new_sources_catalog(new.detections, new.parents, scene, placement, id_map)
        self.log.info(
            "%s: %d new source(s) in the residuals (%d more on existing peaks dropped).",
            what,
            len(new),
            new.n_matched,
        )
        return pipeBase.Struct(
            # Its own table: the Butler adds provenance to the table it writes, and the
            # footprints dataset must not carry the catalog's.
            newSources=sources.table.copy(copy_data=False),
            newFootprints=sources,
            patch_images=patch_images,
            model=model,
            n_matched=new.n_matched,
        )


def _model_data_psfs(model_data: ScarletModelData) -> dict[str, np.ndarray]:
    """Observed PSF per band from the model data's metadata (empty if it has none)."""
    metadata = model_data.metadata or {}
    psf, bands = metadata.get("psf"), metadata.get("bands")
    if psf is None or bands is None:
        return {}
    psf = np.asarray(psf)
    if psf.ndim != 3 or psf.shape[0] != len(bands):
        return {}
    return {band: psf[index] for index, band in enumerate(bands)}
