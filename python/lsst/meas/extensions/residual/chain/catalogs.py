"""The chain's output tables: one schema, written alike by ``residual-detectron run`` and the PipelineTasks.

Every table holds tract-pixel positions (``x``, ``y``; LSST's convention for
coadd catalogs), ids packed for the tract and patch (`ids`), and one column
per band for per-band quantities (``{band}_flux``), so that a table
describes itself without table metadata (which Parquet does not keep through
the Butler). ``ra``/``dec`` (degrees) are added when the images carry a WCS
(the Butler's coadds do, scene files do not); nothing else differs.

first-pass peaks (`detections_to_catalog`; ``object_detection_merged``)
    ``id``, ``footprint_id``, ``x``, ``y``, [``ra``, ``dec``],
    ``significance``, ``{band}_psf_flux``.
deblend catalog (`deblend_to_catalog`; ``object_deblend``)
    ``id``, ``parent`` (its blend), ``x``, ``y``, [``ra``, ``dec``],
    ``{band}_flux``, ``{band}_conserved_flux``, ``{band}_masked_fraction``,
    ``{band}_mostly_masked``, then the deblender's diagnostics and flags
    (`DEBLEND_COLUMNS`, e.g. ``near_bright_star``) ending with ``found_by``.
final catalog (`final_catalog`; ``catalog.fits``, ``object_residual_deblend``)
    The deblend catalog of the second pass plus the network's ``class`` and
    ``score`` for the sources it found (``""`` and NaN for the others). A new
    source keeps its id from the new-source table.
new sources (`new_sources_catalog`; ``new_sources.fits``,
``object_residual_detection`` + ``object_residual_footprints``)
    ``id`` (the id the second pass gives the source), ``parent`` (the
    first-pass parent whose footprint holds it, 0 if none), ``x``, ``y``,
    [``ra``, ``dec``], ``class``, ``class_id``, ``score``, ``bbox_x0``,
    ``bbox_y0``, ``bbox_x1``, ``bbox_y1`` (tract pixels, pixel edges),
    ``area``, flags ``flag_edge``, ``flag_truncated``, ``flag_bad_pixels``,
    ``flag_in_parent``; with one footprint per source (patch pixels).
"""

from __future__ import annotations

__all__ = [
    "DEBLEND_COLUMNS",
    "detections_to_catalog",
    "detections_from_catalog",
    "deblend_to_catalog",
    "deblend_from_catalog",
    "final_catalog",
    "new_sources_catalog",
    "new_sources_from_catalog",
    "first_pass_sources",
    "per_band_columns",
]

import numpy as np
from astropy.table import Table

from ..bands import LSST_BANDS
from ..deblending import CATALOG_COLUMNS, PER_BAND_COLUMNS
from ..detection import Detections
from ..network import SourceDetections
from ..scene import Scene, SceneFormatError
from .ids import IdMap, unpack_ids
from .new_sources import ARTEFACT_CLASS
from .placement import PatchPlacement

_PER_BAND_TYPES = {
    "flux": (np.float64, "nJy"),
    "conserved_flux": (np.float64, "nJy"),
    "masked_fraction": (np.float32, None),
    "mostly_masked": (np.bool_, None),
}
#: The deblender's per-band columns, written as ``{band}_{name}``: name → (dtype, unit). (A new
#: per-band column of the deblender without a type here fails at import, not in a table.)
_DEBLEND_PER_BAND = {name: _PER_BAND_TYPES[name] for name in PER_BAND_COLUMNS}
#: The deblender's per-source diagnostics and flags, copied from its catalog as they are (every
#: column but the ids, positions and per-band values, which are converted).
DEBLEND_COLUMNS = tuple(
    c for c in CATALOG_COLUMNS if c not in ("id", "parent_id", "peak_id", "x", "y", *_DEBLEND_PER_BAND)
)


def per_band_columns(
    table: Table, name: str, values: np.ndarray, bands, unit: str | None = None, dtype=np.float64
) -> None:
    """Add ``{band}_{name}`` columns from an (N, nbands) array."""
    values = np.asarray(values, dtype=dtype).reshape(len(table), len(bands))
    for index, band in enumerate(bands):
        column = f"{band}_{name}"
        table[column] = values[:, index]
        if unit is not None:
            table[column].unit = unit


def _per_band_array(catalog: Table, name: str, bands, dtype=np.float64) -> np.ndarray:
    return np.column_stack([np.asarray(catalog[f"{b}_{name}"], dtype=dtype) for b in bands]).reshape(
        len(catalog), len(bands)
    )


def _add_positions(table: Table, x: np.ndarray, y: np.ndarray, placement: PatchPlacement) -> None:
    """``x``, ``y`` in tract pixels, and ``ra``, ``dec`` if the placement has a WCS."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    table["x"] = x + placement.x0
    table["y"] = y + placement.y0
    sky = placement.sky(x, y)
    if sky is not None:
        table["ra"], table["dec"] = sky
        table["ra"].unit = table["dec"].unit = "deg"


def _require(catalog: Table, columns, what: str) -> None:
    missing = [c for c in columns if c not in catalog.colnames]
    if missing:
        raise SceneFormatError(f"{what} has no column(s) {missing}.")


# -- first-pass peaks ------------------------------------------------------------


def detections_to_catalog(detections: Detections, placement: PatchPlacement) -> Table:
    """The first-pass peaks as an output table (see the module docstring)."""
    peaks = detections.peaks
    id_map = placement.id_map()
    table = Table()
    table["id"] = id_map.global_sources(np.asarray(peaks["id"]))
    table["footprint_id"] = id_map.global_parents(np.asarray(peaks["footprint_id"]))
    _add_positions(table, peaks["x"], peaks["y"], placement)
    table["significance"] = np.asarray(peaks["significance"], dtype=np.float64)
    flux = np.asarray(peaks["psf_flux"], dtype=np.float64) if len(peaks) else np.zeros((0, 1))
    per_band_columns(table, "psf_flux", flux, detections.bands, unit="nJy")
    return table


def detections_from_catalog(catalog: Table, labels: np.ndarray, placement: PatchPlacement) -> Detections:
    """Rebuild the core's `Detections` (patch pixels, local ids) from a peak table and its label image.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        A `detections_to_catalog` table (ids packed for ``placement``).
    labels : `numpy.ndarray`
        (H, W) int32 local footprint ids of the patch.
    placement : `PatchPlacement`
        The patch (its origin is the label image's).

    Raises
    ------
    SceneFormatError
        If the catalog lacks a column, has ids of another patch, or points
        outside the footprint image.
    """
    _require(catalog, ("id", "footprint_id", "x", "y", "significance"), "Detection catalog")
    bands = tuple(b for b in LSST_BANDS if f"{b}_psf_flux" in catalog.colnames)
    peaks = Table()
    try:
        peaks["id"] = unpack_ids(catalog["id"], placement.tract, placement.patch, "source")
        peaks["footprint_id"] = unpack_ids(
            catalog["footprint_id"], placement.tract, placement.patch, "parent"
        ).astype(np.int32)
    except ValueError as err:
        raise SceneFormatError(f"Detection catalog: {err}") from None
    peaks["x"] = np.asarray(catalog["x"], dtype=np.float64) - placement.x0
    peaks["y"] = np.asarray(catalog["y"], dtype=np.float64) - placement.y0
    peaks["significance"] = np.asarray(catalog["significance"], dtype=np.float64)
    peaks["psf_flux"] = _per_band_array(catalog, "psf_flux", bands)
    height, width = labels.shape
    outside = (peaks["x"] < 0) | (peaks["x"] > width - 1) | (peaks["y"] < 0) | (peaks["y"] > height - 1)
    if np.any(outside):
        raise SceneFormatError(
            f"{int(np.sum(outside))} detection peak(s) lie outside the footprint image "
            f"({width}x{height} at ({placement.x0}, {placement.y0})): catalog and footprints do not "
            "belong together."
        )
    return Detections(peaks=peaks, footprints=np.asarray(labels, dtype=np.int32), bands=bands)


# -- deblend catalogs ----------------------------------------------------------------


def deblend_to_catalog(catalog: Table, bands, placement: PatchPlacement, id_map: IdMap) -> Table:
    """The deblender's catalog (`DeblendResult.catalog`) as an output table.

    Parent rows are not written: a parent is its ``parent`` id, and its blend
    is in the model data under that id.
    """
    out = Table()
    out["id"] = id_map.global_sources(np.asarray(catalog["id"], dtype=np.int64))
    out["parent"] = id_map.global_parents(np.asarray(catalog["parent_id"], dtype=np.int64))
    _add_positions(out, catalog["x"], catalog["y"], placement)
    for name, (dtype, unit) in _DEBLEND_PER_BAND.items():
        per_band_columns(out, name, np.asarray(catalog[name]), bands, unit=unit, dtype=dtype)
    for name in DEBLEND_COLUMNS:
        out[name] = catalog[name]
    return out


def deblend_from_catalog(catalog: Table, bands, placement: PatchPlacement, id_map: IdMap) -> Table:
    """An output deblend table back in the deblender's form (patch pixels, local ids).

    Raises
    ------
    SceneFormatError
        If a column is missing or an id is unknown to ``id_map``.
    """
    per_band = [f"{b}_{name}" for name in _DEBLEND_PER_BAND for b in bands]
    _require(catalog, ["id", "parent", "x", "y", *DEBLEND_COLUMNS, *per_band], "Deblend catalog")
    out = Table()
    try:
        out["id"] = id_map.local_sources(catalog["id"])
        out["parent_id"] = id_map.local_parents(catalog["parent"])
    except KeyError as err:
        raise SceneFormatError(f"Deblend catalog: {err.args[0]}") from None
    out["peak_id"] = out["id"]
    out["x"] = np.asarray(catalog["x"], dtype=np.float64) - placement.x0
    out["y"] = np.asarray(catalog["y"], dtype=np.float64) - placement.y0
    for name, (dtype, _) in _DEBLEND_PER_BAND.items():
        out[name] = _per_band_array(catalog, name, bands, dtype)
    for name in DEBLEND_COLUMNS:
        out[name] = catalog[name]
    return out


def final_catalog(
    catalog: Table, bands, placement: PatchPlacement, id_map: IdMap, new_sources: Table
) -> Table:
    """The second pass's catalog with the network's ``class`` and ``score`` of the sources it found.

    Parameters
    ----------
    catalog : `astropy.table.Table`
        The second pass's `DeblendResult.catalog`.
    bands : sequence of `str`
        Its bands.
    placement : `PatchPlacement`
        The patch.
    id_map : `IdMap`
        Local to global ids (as for the first pass).
    new_sources : `astropy.table.Table`
        The `new_sources_catalog` table (global ids).
    """
    out = deblend_to_catalog(catalog, bands, placement, id_map)
    row_of = {int(i): k for k, i in enumerate(np.asarray(new_sources["id"]))}
    classes = np.full(len(out), "", dtype="U16")
    scores = np.full(len(out), np.nan, dtype=np.float32)
    for index, gid in enumerate(np.asarray(out["id"])):
        row = row_of.get(int(gid))
        if row is not None:
            classes[index] = str(new_sources["class"][row])
            scores[index] = new_sources["score"][row]
    out["class"] = classes
    out["score"] = scores
    return out


# -- new sources -----------------------------------------------------------------


def new_sources_catalog(
    found: SourceDetections,
    parents: np.ndarray,
    scene: Scene,
    placement: PatchPlacement,
    id_map: IdMap,
) -> SourceDetections:
    """The new sources as an output table with their footprints (see the module docstring).

    Parameters
    ----------
    found : `SourceDetections`
        The new sources, patch pixels, ``id`` = the local peak id the second
        pass gives each.
    parents : `numpy.ndarray`
        Local id of the first-pass parent at each source's pixel (0: none).
    scene : `Scene`
        The patch (for the edge and bad-pixel flags).
    placement : `PatchPlacement`
        The patch.
    id_map : `IdMap`
        Local to global ids.

    Returns
    -------
    sources : `SourceDetections`
        Table in the output schema (tract pixels, global ids), footprints in
        patch pixels, metadata with ``TRACT``, ``PATCH``, ``X0``, ``Y0``.
    """
    height, width = scene.shape
    n = len(found)
    table = Table()
    table["id"] = id_map.global_sources(np.asarray(found.table["id"], dtype=np.int64))
    table["parent"] = id_map.global_parents(np.asarray(parents, dtype=np.int64))
    _add_positions(table, found.table["x"], found.table["y"], placement)
    table["class"] = np.asarray(found.table["class"]).astype("U16")
    table["class_id"] = np.asarray(found.table["class_id"], dtype=np.int32)
    table["score"] = np.asarray(found.table["score"], dtype=np.float32)
    for column, offset in (
        ("bbox_x0", placement.x0),
        ("bbox_y0", placement.y0),
        ("bbox_x1", placement.x0),
        ("bbox_y1", placement.y0),
    ):
        table[column] = np.asarray(found.table[column], dtype=np.float64) + offset
    table["area"] = np.asarray(found.table["area"], dtype=np.int32)
    # Flags: the footprint touches the patch edge; its box was cut by an
    # inner tile border (the tile merge could not see it whole); it holds a
    # pixel that is bad in some band; it lies inside a first-pass parent.
    bad = ~scene.good.all(axis=0)
    edge = np.zeros(n, dtype=bool)
    has_bad = np.zeros(n, dtype=bool)
    for index, footprint in enumerate(found.footprints):
        sy, sx = footprint.slices
        edge[index] = sy.start <= 0 or sx.start <= 0 or sy.stop >= height or sx.stop >= width
        has_bad[index] = bool(np.any(bad[sy, sx][footprint.mask]))
    table["flag_edge"] = edge
    table["flag_truncated"] = np.asarray(found.table["truncated"], dtype=bool)
    table["flag_bad_pixels"] = has_bad
    table["flag_in_parent"] = np.asarray(parents) != 0
    metadata = dict(found.metadata)
    metadata.update(
        {"TRACT": placement.tract, "PATCH": placement.patch, "X0": placement.x0, "Y0": placement.y0}
    )
    return SourceDetections(table, list(found.footprints), found.shape, metadata)


def new_sources_from_catalog(table: Table, placement: PatchPlacement) -> tuple[np.ndarray, np.ndarray]:
    """(local ids, (N, 2) patch-pixel positions) of the new sources of a `new_sources_catalog` table
    that are second-pass peaks, ordered by id: every row but those of class ``artefact``.

    Raises
    ------
    SceneFormatError
        If a column is missing or an id is not a source id of this patch.
    """
    _require(table, ("id", "x", "y"), "New-source table")
    if "class" in table.colnames:
        table = table[np.asarray(table["class"]).astype(str) != ARTEFACT_CLASS]
    try:
        local = unpack_ids(table["id"], placement.tract, placement.patch, "source")
    except ValueError as err:
        raise SceneFormatError(f"New-source table: {err}") from None
    order = np.argsort(local, kind="stable")
    xy = np.column_stack(
        [
            np.asarray(table["x"], dtype=np.float64) - placement.x0,
            np.asarray(table["y"], dtype=np.float64) - placement.y0,
        ]
    ).reshape(-1, 2)
    return local[order], xy[order]


def first_pass_sources(catalog: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(id, parent, x, y) of the deblended sources of a first-pass catalog (tract pixels).

    Understands our deblend table (columns ``id``, ``parent``, ``x``, ``y``;
    every row a source) and DRP's (``id``, ``parent``,
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
