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

from ..deblending import ScarletModelData, render_model_data
from ..network import Detector, InferenceConfig, ModelPackage, SourceDetections
from .catalogs import first_pass_sources
from .chain import select_new_sources
from .coadds import (
    DEFAULT_BAD_MASK_PLANES,
    EmptyPatchError,
    PatchImages,
    assemble_patch,
    read_coadd_plane,
    read_legacy_coadd_file,
)
from .connections import PatchCoaddConnections
from .datasets import PATCH_DIMENSIONS
from .ids import IdMap
from .model_frames import model_data_to_patch, parent_footprints
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


class ResidualDetectionConnections(PatchCoaddConnections):
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
    scoreThreshold = pexConfig.Field[float](
        doc="Keep detections scoring at least this; None: the model package's threshold.",
        default=None,
        optional=True,
    )
    matchRadius = pexConfig.Field[float](
        doc="A detection closer than this (pixels) to an existing first-pass peak is not new.", default=2.0
    )
    device = pexConfig.ChoiceField[str](
        doc="Where the network runs.",
        default="auto",
        allowed={"auto": "CUDA if available, else CPU.", "cpu": "CPU.", "cuda": "The first CUDA GPU."},
    )
    tileSize = pexConfig.Field[int](
        doc="Side of the square tiles the patch is cut into (multiple of 32); None: the package's.",
        default=None,
        optional=True,
    )
    tileOverlap = pexConfig.Field[int](
        doc="Overlap of neighbouring tiles in pixels; None: the package's.", default=None, optional=True
    )
    batchSize = pexConfig.Field[int](
        doc="Tiles per network call; None: 4 on CPU, 16 on GPU.", default=None, optional=True
    )
    bands = pexConfig.ListField[str](
        doc="Bands required, in LSST order; empty: the model package's bands.", default=[]
    )
    badMaskPlanes = pexConfig.ListField[str](
        doc="Mask planes marking pixels the network sees as zero.", default=list(DEFAULT_BAD_MASK_PLANES)
    )

    def validate(self) -> None:
        super().validate()
        validate_band_list(self.bands, "bands", allow_empty=True)
        if self.matchRadius < 0:
            raise ValueError(f"matchRadius must be >= 0, not {self.matchRadius}.")
        if self.scoreThreshold is not None and not 0 <= self.scoreThreshold <= 1:
            raise ValueError(f"scoreThreshold must be in [0, 1], not {self.scoreThreshold}.")
        if self.tileSize is not None and (self.tileSize <= 0 or self.tileSize % 32):
            raise ValueError(f"tileSize must be a positive multiple of 32, not {self.tileSize}.")
        if self.tileOverlap is not None and self.tileOverlap < 0:
            raise ValueError(f"tileOverlap must be >= 0, not {self.tileOverlap}.")
        if self.batchSize is not None and self.batchSize < 1:
            raise ValueError(f"batchSize must be >= 1, not {self.batchSize}.")


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
        with _uri(models_handle).as_local() as local:
            model_data = read_scarlet_model(local.ospath)
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
            cube), ``residual`` and ``n_matched`` (detections dropped as
            existing peaks).

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
        bands = tuple(self.config.bands) or tuple(meta.bands)
        meta.check_data(bands, has_model=True)
        planes = {
            band: read_coadd_plane(coadd, self.config.badMaskPlanes, f"{what} deep_coadd {band}")
            for band, coadd in coadds.items()
        }
        psf_fallback = _model_data_psfs(model_data)
        try:
            patch_images = assemble_patch(planes, bands, psf_fallback=psf_fallback, what=what)
        except EmptyPatchError as err:
            raise pipeBase.NoWorkFound(str(err)) from err
        scene = patch_images.scene
        x0, y0 = patch_images.x0, patch_images.y0

        ids, parents, xs, ys = first_pass_sources(deblend_catalog)
        parent_set = (
            set(np.unique(parents[parents != 0]).tolist())
            | {int(k) for k in model_data.blends}
            | {int(k) for k in model_data.isolated}
        )
        id_map = IdMap(tract, patch, sources=ids, parents=parent_set)
        models_patch = model_data_to_patch(model_data, x0, y0, id_map)
        model = render_model_data(models_patch, scene.shape, bands=scene.bands, image=scene.clean_image())
        residual = np.where(scene.good, scene.image - model, np.float32(0)).astype(np.float32)

        found = self.detector(model_package).find(
            scene.image,
            scene.variance,
            scene.bands,
            model,
            scene.mask,
            inference=InferenceConfig(
                tile_size=self.config.tileSize,
                tile_overlap=self.config.tileOverlap,
                batch_size=self.config.batchSize,
                score_threshold=self.config.scoreThreshold,
            ),
        )
        existing = np.column_stack([xs - x0, ys - y0]).reshape(-1, 2)
        found, n_matched = select_new_sources(found, existing, self.config.matchRadius)
        parents_image = parent_footprints(models_patch, scene.shape)
        table, footprints = self._catalog(found, patch_images, parents_image, id_map, tract, patch)
        self.log.info(
            "%s: %d new source(s) in the residuals (%d more on existing peaks dropped).",
            what,
            len(table),
            n_matched,
        )
        return pipeBase.Struct(
            newSources=table,
            newFootprints=footprints,
            patch_images=patch_images,
            model=model,
            residual=residual,
            n_matched=n_matched,
        )

    @staticmethod
    def _catalog(
        found: SourceDetections,
        patch_images: PatchImages,
        parents_image: np.ndarray,
        id_map: IdMap,
        tract: int,
        patch: int,
    ) -> tuple[Table, SourceDetections]:
        scene = patch_images.scene
        height, width = scene.shape
        n = len(found)
        # New sources continue the first pass's local source ids, so that the
        # second pass (which numbers new peaks the same way) keeps them.
        local = np.arange(id_map.max_local_source + 1, id_map.max_local_source + 1 + n, dtype=np.int64)
        global_ids = id_map.global_sources(local)
        x = np.asarray(found.table["x"], dtype=np.float64)
        y = np.asarray(found.table["y"], dtype=np.float64)
        px = np.clip(np.floor(x + 0.5).astype(int), 0, width - 1)
        py = np.clip(np.floor(y + 0.5).astype(int), 0, height - 1)
        local_parent = parents_image[py, px].astype(np.int64)
        bad = ~scene.good.all(axis=0)
        table = Table()
        table["id"] = global_ids
        table["parent"] = id_map.global_parents(local_parent)
        table["x"] = x + patch_images.x0
        table["y"] = y + patch_images.y0
        ra, dec = patch_images.sky(x, y)
        table["ra"] = ra
        table["ra"].unit = "deg"
        table["dec"] = dec
        table["dec"].unit = "deg"
        table["class"] = np.asarray(found.table["class"]).astype(str)
        table["class_id"] = np.asarray(found.table["class_id"], dtype=np.int32)
        table["score"] = np.asarray(found.table["score"], dtype=np.float32)
        for column, offset in (("bbox_x0", patch_images.x0), ("bbox_x1", patch_images.x0)):
            table[column] = np.asarray(found.table[column], dtype=np.float64) + offset
        for column, offset in (("bbox_y0", patch_images.y0), ("bbox_y1", patch_images.y0)):
            table[column] = np.asarray(found.table[column], dtype=np.float64) + offset
        table["area"] = np.asarray(found.table["area"], dtype=np.int32)
        # Flags: the footprint touches the patch edge; its box was cut by an
        # inner tile border (the tile merge could not see it whole); it
        # holds a pixel that is bad in some band.
        edge = np.zeros(n, dtype=bool)
        has_bad = np.zeros(n, dtype=bool)
        for index, footprint in enumerate(found.footprints):
            sy, sx = footprint.slices
            edge[index] = sy.start <= 0 or sx.start <= 0 or sy.stop >= height or sx.stop >= width
            has_bad[index] = bool(np.any(bad[sy, sx][footprint.mask]))
        table["flag_edge"] = edge
        table["flag_truncated"] = np.asarray(found.table["truncated"], dtype=bool)
        table["flag_bad_pixels"] = has_bad
        table["flag_in_parent"] = local_parent != 0

        footprints_table = found.table.copy()
        footprints_table["id"] = global_ids
        metadata = dict(found.metadata)
        metadata.update(
            {"TRACT": int(tract), "PATCH": int(patch), "X0": patch_images.x0, "Y0": patch_images.y0}
        )
        footprints = SourceDetections(footprints_table, list(found.footprints), found.shape, metadata)
        return table, footprints


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
