"""Read and write detections (``peaks.fits``).

Layout: ``PRIMARY`` (header ``BANDS``, ``FMTVER``), ``PEAKS`` (binary table,
see `Detections`), ``FOOTPRINTS`` (int32 (H, W) label image).
"""

from __future__ import annotations

__all__ = ["write_detections", "read_detections"]

import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import MissingInputError
from ..scene import SceneFormatError
from .detect import Detections

_FORMAT_VERSION = 1


def write_detections(detections: Detections, path: str | os.PathLike, overwrite: bool = False) -> None:
    primary = fits.PrimaryHDU()
    primary.header["FMTVER"] = _FORMAT_VERSION
    primary.header["BANDS"] = ",".join(detections.bands)
    peaks = fits.table_to_hdu(detections.peaks)
    peaks.name = "PEAKS"
    footprints = fits.ImageHDU(detections.footprints.astype(np.int32), name="FOOTPRINTS")
    fits.HDUList([primary, peaks, footprints]).writeto(os.fspath(path), overwrite=overwrite)


def read_detections(path: str | os.PathLike) -> Detections:
    """Read a ``peaks.fits`` file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    SceneFormatError
        If it is not a detections file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingInputError(f"Peaks file {path!r} does not exist.")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = {hdu.name for hdu in hdul}
            if not {"PEAKS", "FOOTPRINTS"} <= names:
                raise SceneFormatError(
                    f"{path!r} is not a peaks file (needs PEAKS and FOOTPRINTS extensions)."
                )
            bands = tuple(str(hdul[0].header.get("BANDS", "")).split(","))
            peaks = Table.read(hdul["PEAKS"])
            footprints = np.array(hdul["FOOTPRINTS"].data, dtype=np.int32)
    except (OSError, TypeError) as err:
        raise SceneFormatError(f"{path!r} could not be read as a peaks file: {err}") from err
    for column in ("id", "footprint_id", "x", "y"):
        if column not in peaks.colnames:
            raise SceneFormatError(f"{path!r}: PEAKS table has no {column!r} column.")
    return Detections(peaks=peaks, footprints=footprints, bands=bands)
