"""Network detections: a catalogue with one footprint per source, and its file format.

On disk (``sources.fits``), format version 1:

``PRIMARY``
    Header: ``FMTVER``, ``HEIGHT``, ``WIDTH`` (image shape), ``BANDS``,
    ``MODEL`` (package name), ``RECIPE``.
``SOURCES``
    Binary table, one row per detection (columns in `SourceDetections`),
    with the footprint geometry ``fp_x0``, ``fp_y0``, ``fp_height``,
    ``fp_width``.
``FOOTPRINTS``
    uint8, 1-D: each footprint's (fp_height, fp_width) mask flattened in C
    order, concatenated in table order (the layout of ``TRUTH_STAMPS``;
    `lsst.meas.extensions.residual.packing`).

`Footprint` and `mask_overlap` are defined in
`lsst.meas.extensions.residual.geometry` and exported here too.
"""

from __future__ import annotations

__all__ = ["Footprint", "SourceDetections", "read_source_detections", "mask_overlap"]

import dataclasses
import os
from typing import BinaryIO

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import InputError, MissingInputError
from ..geometry import Footprint, mask_overlap
from ..packing import FOOTPRINT_COLUMNS, pack_footprints, unpack_footprints
from ..scene import SceneFormatError

_FORMAT_VERSION = 1


@dataclasses.dataclass
class SourceDetections:
    """Sources found by the network in one image.

    Attributes
    ----------
    table : `astropy.table.Table`
        One row per source: ``id`` (from 1), ``x``, ``y`` (mask centroid,
        pixel centres at integers), ``class`` (e.g. ``'star'``), ``class_id``
        (1-based network label), ``score``, ``bbox_x0``, ``bbox_y0``,
        ``bbox_x1``, ``bbox_y1`` (network box; pixel edges, so a box round
        pixel 0 spans -0.5 to 0.5), ``area`` (footprint pixels), ``tile``
        (index of the tile it came from), ``truncated`` (its box touched an
        inner tile border). Sorted by decreasing score.
    footprints : `list` [`Footprint`]
        One per row.
    shape : `tuple` [`int`, `int`]
        (H, W) of the image.
    metadata : `dict`
        ``BANDS``, ``MODEL``, ``RECIPE``.
    """

    table: Table
    footprints: list[Footprint]
    shape: tuple[int, int]
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.table) != len(self.footprints):
            raise ValueError(f"{len(self.table)} rows but {len(self.footprints)} footprints.")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def xy(self) -> np.ndarray:
        return np.column_stack([self.table["x"], self.table["y"]]).astype(np.float64).reshape(-1, 2)

    def select(self, keep: np.ndarray) -> SourceDetections:
        """The detections where boolean ``keep`` is true (ids kept)."""
        keep = np.asarray(keep, dtype=bool)
        return SourceDetections(
            self.table[keep],
            [f for f, k in zip(self.footprints, keep, strict=False) if k],
            self.shape,
            dict(self.metadata),
        )

    def above(self, score_threshold: float) -> SourceDetections:
        """The detections with ``score >= score_threshold``."""
        return self.select(np.asarray(self.table["score"]) >= score_threshold)

    def label_image(self) -> np.ndarray:
        """(H, W) int32 image of source ids (higher scores drawn on top), 0 elsewhere."""
        labels = np.zeros(self.shape, dtype=np.int32)
        order = np.argsort(np.asarray(self.table["score"]), kind="stable")
        for index in order:
            fp = self.footprints[index]
            sy, sx = fp.slices
            region = labels[sy, sx]
            region[fp.mask] = int(self.table["id"][index])
        return labels

    def write(self, path: str | os.PathLike | BinaryIO, overwrite: bool = False) -> None:
        """Write the ``sources.fits`` file (see module docstring) to a path or a binary stream."""
        table = self.table.copy()
        columns, flat = pack_footprints(self.footprints, np.uint8)
        for name, values in columns.items():
            table[name] = values
        primary = fits.PrimaryHDU()
        primary.header["FMTVER"] = _FORMAT_VERSION
        primary.header["HEIGHT"] = int(self.shape[0])
        primary.header["WIDTH"] = int(self.shape[1])
        for key, value in self.metadata.items():
            primary.header[key if len(key) <= 8 else f"HIERARCH {key}"] = value
        hdu = fits.table_to_hdu(table)
        hdu.name = "SOURCES"
        target = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
        fits.HDUList([primary, hdu, fits.ImageHDU(flat, name="FOOTPRINTS")]).writeto(
            target, overwrite=overwrite
        )


def read_source_detections(path: str | os.PathLike | BinaryIO) -> SourceDetections:
    """Read a ``sources.fits`` file written by `SourceDetections.write` (a path or a binary stream).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    SceneFormatError
        If the file is not a sources file or is inconsistent.
    """
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise MissingInputError(f"Sources file {path!r} does not exist.")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = {hdu.name for hdu in hdul}
            if not {"SOURCES", "FOOTPRINTS"} <= names:
                raise SceneFormatError(f"{path!r} is not a sources file (needs SOURCES and FOOTPRINTS).")
            header = hdul[0].header
            shape = (int(header["HEIGHT"]), int(header["WIDTH"]))
            metadata = {k: header[k] for k in ("BANDS", "MODEL", "RECIPE") if k in header}
            table = Table.read(hdul["SOURCES"])
            data = hdul["FOOTPRINTS"].data
            flat = None if data is None else np.asarray(data, dtype=np.uint8)
    except (OSError, TypeError, KeyError) as err:
        raise SceneFormatError(f"{path!r} could not be read as a sources file: {err}") from err
    try:
        footprints = unpack_footprints(table, flat, "FOOTPRINTS")
    except InputError as err:
        raise SceneFormatError(f"{path!r}: {err}") from None
    if table["class"].dtype.kind == "S":
        table["class"] = table["class"].astype(str)
    table.remove_columns(list(FOOTPRINT_COLUMNS))
    return SourceDetections(table, footprints, shape, metadata)
