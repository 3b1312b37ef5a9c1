"""Conversions between the core's tables (patch pixels, local ids) and Butler catalogs.

Butler catalogs hold tract pixel coordinates (``x``, ``y``; LSST's convention
for coadd catalogs), ``ra``/``dec`` in degrees, global ids (`ids`), and one
column per band for per-band quantities (``{band}_psf_flux``), so that a
catalog describes itself without table metadata (which Parquet does not keep
through the Butler). Label images (footprints) hold local ids, as int32.
"""

from __future__ import annotations

__all__ = [
    "detections_to_catalog",
    "detections_from_catalog",
    "label_image",
    "label_array",
    "per_band_columns",
    "deblend_to_catalog",
    "deblend_from_catalog",
    "first_pass_sources",
]

import numpy as np
from astropy.table import Table

from ..bands import LSST_BANDS
from ..detection import Detections
from ..scene import SceneFormatError
from .coadds import PatchImages
from .ids import parent_ids, source_ids, unpack_ids


def per_band_columns(table: Table, name: str, values: np.ndarray, bands, unit: str | None = None) -> None:
    """Add ``{band}_{name}`` columns from an (N, nbands) array."""
    values = np.asarray(values, dtype=np.float64).reshape(len(table), len(bands))
    for index, band in enumerate(bands):
        column = f"{band}_{name}"
        table[column] = values[:, index]
        if unit is not None:
            table[column].unit = unit


def label_image(labels: np.ndarray, patch: PatchImages):
    """An int32 `lsst.images.Image` of ``labels`` over the patch's tract bbox."""
    from lsst.images import Box, Image

    height, width = labels.shape
    box = Box.factory[patch.y0 : patch.y0 + height, patch.x0 : patch.x0 + width]
    return Image(np.ascontiguousarray(labels, dtype=np.int32), bbox=box)


def label_array(image) -> tuple[np.ndarray, int, int]:
    """(labels, x0, y0) of a label `lsst.images.Image`."""
    return np.asarray(image.array, dtype=np.int32), int(image.bbox.x.start), int(image.bbox.y.start)


def detections_to_catalog(detections: Detections, patch: PatchImages, tract: int, patch_id: int) -> Table:
    """The first-pass peaks as a Butler catalog (``object_detection_merged``).

    Columns: ``id``, ``footprint_id`` (global ids), ``x``, ``y`` (tract
    pixels), ``ra``, ``dec`` (deg), ``significance`` (σ of the multi-band
    detection image), ``{band}_psf_flux`` (nJy).
    """
    peaks = detections.peaks
    table = Table()
    table["id"] = source_ids(np.asarray(peaks["id"]), tract, patch_id)
    table["footprint_id"] = parent_ids(np.asarray(peaks["footprint_id"]), tract, patch_id)
    x = np.asarray(peaks["x"], dtype=np.float64)
    y = np.asarray(peaks["y"], dtype=np.float64)
    table["x"] = x + patch.x0
    table["y"] = y + patch.y0
    ra, dec = patch.sky(x, y)
    table["ra"] = ra
    table["ra"].unit = "deg"
    table["dec"] = dec
    table["dec"].unit = "deg"
    table["significance"] = np.asarray(peaks["significance"], dtype=np.float64)
    flux = (
        np.asarray(peaks["psf_flux"], dtype=np.float64)
        if len(peaks)
        else np.zeros((0, len(detections.bands)))
    )
    per_band_columns(table, "psf_flux", flux, detections.bands, unit="nJy")
    return table


def detections_from_catalog(
    catalog: Table, footprints, tract: int, patch: int
) -> tuple[Detections, int, int]:
    """Rebuild the core's `Detections` (patch pixels, local ids) from Butler datasets.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        ``object_detection_merged``.
    footprints : `lsst.images.Image`
        ``object_detection_footprints``.
    tract, patch : `int`
        The patch (its ids must be packed for it).

    Returns
    -------
    detections : `Detections`
    x0, y0 : `int`
        Tract pixel of the patch origin.

    Raises
    ------
    SceneFormatError
        If the catalog lacks a column, has ids of another patch, or points
        outside the footprint image.
    """
    labels, x0, y0 = label_array(footprints)
    for column in ("id", "footprint_id", "x", "y", "significance"):
        if column not in catalog.colnames:
            raise SceneFormatError(f"Detection catalog has no {column!r} column.")
    bands = tuple(b for b in LSST_BANDS if f"{b}_psf_flux" in catalog.colnames)
    peaks = Table()
    try:
        peaks["id"] = unpack_ids(catalog["id"], tract, patch, "source")
        peaks["footprint_id"] = unpack_ids(catalog["footprint_id"], tract, patch, "parent").astype(np.int32)
    except ValueError as err:
        raise SceneFormatError(f"Detection catalog: {err}") from None
    peaks["x"] = np.asarray(catalog["x"], dtype=np.float64) - x0
    peaks["y"] = np.asarray(catalog["y"], dtype=np.float64) - y0
    peaks["significance"] = np.asarray(catalog["significance"], dtype=np.float64)
    peaks["psf_flux"] = np.column_stack([np.asarray(catalog[f"{b}_psf_flux"]) for b in bands]).reshape(
        len(catalog), len(bands)
    )
    height, width = labels.shape
    outside = (peaks["x"] < 0) | (peaks["x"] > width - 1) | (peaks["y"] < 0) | (peaks["y"] > height - 1)
    if np.any(outside):
        raise SceneFormatError(
            f"{int(np.sum(outside))} detection peak(s) lie outside the footprint image "
            f"({width}x{height} at ({x0}, {y0})): catalog and footprints do not belong together."
        )
    return Detections(peaks=peaks, footprints=labels, bands=bands), x0, y0


# -- deblend catalogs ----------------------------------------------------------

#: Core deblend-catalog columns copied to the Butler catalog as they are.
_DEBLEND_SCALARS = (
    "chi2",
    "reduced_chi2",
    "blend_reduced_chi2",
    "converged",
    "n_iter",
    "n_components",
    "n_peaks",
    "isolated",
    "skipped",
    "zero_flux",
    "found_by",
)
_DEBLEND_PER_BAND = ("flux", "conserved_flux")


def deblend_to_catalog(
    catalog: Table, bands, patch: PatchImages, tract: int, patch_id: int, id_map=None
) -> Table:
    """The core's deblend catalog as a Butler catalog (``object_deblend``).

    Columns: ``id`` (source), ``parent`` (its blend), ``x``, ``y`` (tract
    pixels), ``ra``, ``dec``, ``{band}_flux``, ``{band}_conserved_flux``
    (nJy), then the core's diagnostics (``chi2``, ``converged``, ...,
    ``found_by``). Parent rows are not written: a parent is its ``parent``
    id, and its blend is in the model data under that id.

    Parameters
    ----------
    id_map : `IdMap`, optional
        Maps local ids to global ones; default: this patch's packing.
    """
    out = Table()
    local_ids = np.asarray(catalog["id"], dtype=np.int64)
    local_parents = np.asarray(catalog["parent_id"], dtype=np.int64)
    if id_map is None:
        out["id"] = source_ids(local_ids, tract, patch_id)
        out["parent"] = parent_ids(local_parents, tract, patch_id)
    else:
        out["id"] = id_map.global_sources(local_ids)
        out["parent"] = id_map.global_parents(local_parents)
    x = np.asarray(catalog["x"], dtype=np.float64)
    y = np.asarray(catalog["y"], dtype=np.float64)
    out["x"] = x + patch.x0
    out["y"] = y + patch.y0
    ra, dec = patch.sky(x, y)
    out["ra"] = ra
    out["ra"].unit = "deg"
    out["dec"] = dec
    out["dec"].unit = "deg"
    for name in _DEBLEND_PER_BAND:
        per_band_columns(out, name, np.asarray(catalog[name]), bands, unit="nJy")
    for name in _DEBLEND_SCALARS:
        out[name] = catalog[name]
    return out


def deblend_from_catalog(catalog: Table, bands, x0: int, y0: int, id_map) -> Table:
    """A Butler deblend catalog back in the core's form (patch pixels, local ids).

    Raises
    ------
    SceneFormatError
        If a column is missing or an id is unknown to ``id_map``.
    """
    needed = ["id", "parent", "x", "y", *_DEBLEND_SCALARS]
    needed += [f"{b}_{name}" for name in _DEBLEND_PER_BAND for b in bands]
    missing = [c for c in needed if c not in catalog.colnames]
    if missing:
        raise SceneFormatError(f"Deblend catalog has no column(s) {missing}.")
    out = Table()
    try:
        out["id"] = id_map.local_sources(catalog["id"])
        out["parent_id"] = id_map.local_parents(catalog["parent"])
    except KeyError as err:
        raise SceneFormatError(f"Deblend catalog: {err.args[0]}") from None
    out["peak_id"] = out["id"]
    out["x"] = np.asarray(catalog["x"], dtype=np.float64) - x0
    out["y"] = np.asarray(catalog["y"], dtype=np.float64) - y0
    n = len(catalog)
    for name in _DEBLEND_PER_BAND:
        out[name] = np.column_stack(
            [np.asarray(catalog[f"{b}_{name}"], dtype=np.float64) for b in bands]
        ).reshape(n, len(bands))
    for name in _DEBLEND_SCALARS:
        out[name] = catalog[name]
    return out


def first_pass_sources(catalog: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(id, parent, x, y) of the deblended sources of a first-pass catalog (tract pixels).

    Understands the embedded ``object_deblend`` (columns ``id``, ``parent``,
    ``x``, ``y``; every row a source) and DRP's (``id``, ``parent``,
    ``deblend_peak_center_x``/``_y``, with parent rows recognised by
    ``deblend_nChild > 0`` and left out).

    Raises
    ------
    SceneFormatError
        If the catalog has neither set of columns.
    """
    columns = set(catalog.colnames)
    if {"id", "parent", "x", "y"} <= columns:
        rows = catalog
        x, y = rows["x"], rows["y"]
    elif {"id", "parent", "deblend_peak_center_x", "deblend_peak_center_y"} <= columns:
        rows = catalog[np.asarray(catalog["deblend_nChild"]) == 0] if "deblend_nChild" in columns else catalog
        x, y = rows["deblend_peak_center_x"], rows["deblend_peak_center_y"]
    else:
        raise SceneFormatError(
            "Deblend catalog has neither (id, parent, x, y) nor DRP's (id, parent, deblend_peak_center_x/y) "
            f"columns; it has {sorted(columns)[:12]}."
        )
    return (
        np.asarray(rows["id"], dtype=np.int64),
        np.asarray(rows["parent"], dtype=np.int64),
        np.asarray(x, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
    )
