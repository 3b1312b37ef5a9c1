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
]

import numpy as np
from astropy.table import Table

from ..bands import LSST_BANDS
from ..detection import Detections
from ..scene import SceneFormatError
from .coadds import PatchImages
from .ids import to_global_ids, to_local_ids


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
    table["id"] = to_global_ids(np.asarray(peaks["id"]), tract, patch_id)
    table["footprint_id"] = to_global_ids(np.asarray(peaks["footprint_id"]), tract, patch_id)
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
    flux = np.asarray(peaks["psf_flux"], dtype=np.float64) if len(peaks) else np.zeros((0, len(detections.bands)))
    per_band_columns(table, "psf_flux", flux, detections.bands, unit="nJy")
    return table


def detections_from_catalog(catalog: Table, footprints) -> tuple[Detections, int, int]:
    """Rebuild the core's `Detections` (patch pixels, local ids) from Butler datasets.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        ``object_detection_merged``.
    footprints : `lsst.images.Image`
        ``object_detection_footprints``.

    Returns
    -------
    detections : `Detections`
    x0, y0 : `int`
        Tract pixel of the patch origin.

    Raises
    ------
    SceneFormatError
        If the catalog lacks a column or points outside the footprint image.
    """
    labels, x0, y0 = label_array(footprints)
    for column in ("id", "footprint_id", "x", "y", "significance"):
        if column not in catalog.colnames:
            raise SceneFormatError(f"Detection catalog has no {column!r} column.")
    bands = tuple(b for b in LSST_BANDS if f"{b}_psf_flux" in catalog.colnames)
    peaks = Table()
    peaks["id"] = to_local_ids(catalog["id"])
    peaks["footprint_id"] = to_local_ids(catalog["footprint_id"]).astype(np.int32)
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
