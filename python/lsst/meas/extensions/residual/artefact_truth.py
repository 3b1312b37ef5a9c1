"""Truth of a simulated scene's artefacts: the table's columns, its checks and its FITS extensions.

Like `lsst.meas.extensions.residual.truth` for the sources, this is the
format of one scene-file part: the ``ARTEFACTS`` binary table (one row per
artefact, `ARTEFACT_COLUMNS`, of a type in `ARTEFACT_TYPES`; the footprint
geometry in `~lsst.meas.extensions.residual.packing.FOOTPRINT_COLUMNS`) and
``ARTEFACT_PIXELS`` (each row's footprint mask, packed). In memory the table
has a ``footprint`` column of `~lsst.meas.extensions.residual.geometry.Footprint`
instead. ``doc/lsst.meas.extensions.residual/scene-format.rst`` describes
each type and column.
"""

from __future__ import annotations

__all__ = [
    "ARTEFACT_TYPES",
    "ARTEFACT_COLUMNS",
    "ArtefactTableError",
    "check_artefact_table",
    "artefact_table_band_subset",
    "artefact_table_to_hdus",
    "artefact_table_from_hdus",
]

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .errors import InputError
from .geometry import Footprint
from .packing import FOOTPRINT_COLUMNS, pack_footprints, unpack_footprints

#: Types of the rows of a scene's artefact table (``doc/.../scene-format.rst`` describes each).
ARTEFACT_TYPES: tuple[str, ...] = (
    "saturated_core",
    "bleed_trail",
    "diffraction_spike",
    "psf_wing",
    "satellite_trail",
    "no_data",
    "chip_gap",
    "cosmic_ray",
)

#: Columns of `Scene.artefacts` (on disk ``footprint`` is `FOOTPRINT_COLUMNS` + ``ARTEFACT_PIXELS``).
ARTEFACT_COLUMNS: tuple[str, ...] = (
    "id",
    "type",
    "source_id",
    "band",
    "masked",
    "mask_plane",
    "x",
    "y",
    "x_end",
    "y_end",
    "length",
    "angle",
    "width",
    "flux",
    "footprint",
)
# Text columns, which FITS hands back as bytes.
_ARTEFACT_TEXT_COLUMNS = ("type", "band", "mask_plane")


class ArtefactTableError(InputError):
    """An artefact table (in memory or in a scene file) that does not follow the format."""


def check_artefact_table(table: Table, bands: tuple[str, ...]) -> None:
    """Refuse an artefact table without the columns, types, bands or footprints of the format."""
    missing = [name for name in ARTEFACT_COLUMNS if name not in table.colnames]
    if missing:
        raise ArtefactTableError(f"The artefact table has no {', '.join(missing)} column(s).")
    unknown = sorted(set(np.asarray(table["type"], dtype=str)) - set(ARTEFACT_TYPES))
    if unknown:
        raise ArtefactTableError(
            f"The artefact table has unknown type(s) {', '.join(unknown)}; "
            f"known: {', '.join(ARTEFACT_TYPES)}."
        )
    other_bands = sorted(set(np.asarray(table["band"], dtype=str)) - {"", *bands})
    if other_bands:
        raise ArtefactTableError(
            f"The artefact table names band(s) {', '.join(other_bands)} not in the scene."
        )
    if table["flux"].shape != (len(table), len(bands)):
        raise ArtefactTableError(
            f"The artefact table's flux has shape {table['flux'].shape}, not ({len(table)}, {len(bands)})."
        )
    if not all(isinstance(footprint, Footprint) for footprint in table["footprint"]):
        raise ArtefactTableError("The artefact table's footprint column must hold Footprint objects.")


def artefact_table_band_subset(table: Table, index: list[int], bands: tuple[str, ...]) -> Table:
    """The rows of all bands or of one of ``bands``, with the fluxes of the bands ``index``."""
    kept = np.isin(np.asarray(table["band"], dtype=str), ["", *bands])
    subset = table[kept]
    subset["flux"] = np.asarray(subset["flux"])[:, index]
    subset["flux"].unit = table["flux"].unit
    return subset


def artefact_table_to_hdus(table: Table) -> list[fits.hdu.base.ExtensionHDU]:
    """The ``ARTEFACTS`` table (footprint geometry in `FOOTPRINT_COLUMNS`) and ``ARTEFACT_PIXELS``."""
    columns, flat = pack_footprints(list(table["footprint"]), np.uint8)
    stored = table.copy(copy_data=False)
    stored.remove_column("footprint")
    for name, values in columns.items():
        stored[name] = values
    table_hdu = fits.table_to_hdu(stored)
    table_hdu.name = "ARTEFACTS"
    return [table_hdu, fits.ImageHDU(flat, name="ARTEFACT_PIXELS")]


def artefact_table_from_hdus(hdul: fits.HDUList) -> Table:
    """The ``ARTEFACTS`` table of an open scene file, with its ``footprint`` column."""
    if "ARTEFACT_PIXELS" not in hdul:
        raise ArtefactTableError("An ARTEFACTS table without an ARTEFACT_PIXELS extension.")
    table = Table.read(hdul["ARTEFACTS"])
    data = hdul["ARTEFACT_PIXELS"].data
    try:
        footprints = unpack_footprints(
            table, None if data is None else np.asarray(data, dtype=np.uint8), "ARTEFACT_PIXELS"
        )
    except InputError as err:
        raise ArtefactTableError(str(err)) from None
    table.remove_columns(list(FOOTPRINT_COLUMNS))
    for name in _ARTEFACT_TEXT_COLUMNS:
        if name in table.colnames and table[name].dtype.kind == "S":
            table[name] = table[name].astype(str)
    column = np.empty(len(footprints), dtype=object)
    column[:] = footprints
    table["footprint"] = column
    return table
