"""Truth of a simulated scene: the source catalogue and noiseless isolated images.

On disk (extensions of the scene file):

``TRUTH``
    Binary table, one row per source: ``id`` (int64), ``x``, ``y`` (pixel
    coordinates, 0-based, pixel centres at integers), ``class`` (``'star'`` or
    ``'galaxy'``), ``flux`` and ``mag`` (one value per band, image units and AB
    magnitudes), ``hlr`` (half-light radius of the unconvolved profile in
    arcsec, 0 for stars), ``e1``, ``e2`` (ellipticity of the unconvolved
    profile, (a-b)/(a+b) convention), ``redshift``, ``bulge_fraction`` and the
    stamp geometry ``stamp_x0``, ``stamp_y0``, ``stamp_height``,
    ``stamp_width`` (pixels; stamps may extend past the image edges).
``TRUTH_STAMPS``
    float32, 1-D: the noiseless isolated (PSF-convolved) image of each source,
    (nbands, stamp_height, stamp_width) flattened in C order, concatenated in
    table order (`~lsst.meas.extensions.residual.packing`). Each stamp holds
    all the flux of its source: its sum over pixels equals the ``flux`` column.

A table without the columns `REQUIRED_COLUMNS`, with ``flux``/``mag`` not
numeric (N,) or (N, nbands), or without ``TRUTH_STAMPS``, is of another schema:
`Truth.from_hdus` raises `TruthSchemaError`, and the scene reader ignores such
a table with a warning.
"""

from __future__ import annotations

__all__ = ["Truth", "STAR", "GALAXY", "REQUIRED_COLUMNS", "TruthSchemaError", "check_truth_schema"]

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .errors import InputError
from .geometry import Box, Footprint, boxes_overlap, mask_overlap
from .packing import pack_arrays, unpack_arrays

STAR = "star"
GALAXY = "galaxy"

_STAMP_COLUMNS = ("stamp_x0", "stamp_y0", "stamp_height", "stamp_width")

#: Columns a truth table must have (the others are optional).
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "x", "y", "class", "flux", "mag", *_STAMP_COLUMNS)


class TruthSchemaError(InputError):
    """A truth table is not of this package's schema (e.g. another simulator's)."""


def check_truth_schema(table: Table) -> None:
    """Check that ``table`` has this package's truth schema.

    Raises
    ------
    TruthSchemaError
        If a column of `REQUIRED_COLUMNS` is missing, or ``flux`` and ``mag``
        are not numeric arrays of the same shape, (N,) or (N, nbands).
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in table.colnames]
    if missing:
        raise TruthSchemaError(
            f"the truth table has no {', '.join(missing)} column(s) (it has {', '.join(table.colnames)})."
        )
    flux, mag = table["flux"], table["mag"]
    for column in (flux, mag):
        if column.dtype.kind not in "fiu" or column.ndim not in (1, 2):
            raise TruthSchemaError(
                f"truth column {column.name!r} must be numeric, one value per band; "
                f"it is {column.dtype} of shape {column.shape}."
            )
    if flux.shape != mag.shape:
        raise TruthSchemaError(f"truth columns 'flux' {flux.shape} and 'mag' {mag.shape} differ in shape.")


class Truth:
    """Truth catalogue of a simulated scene with each source's isolated image.

    Parameters
    ----------
    table : `astropy.table.Table`
        One row per source; columns described in the module docstring.
    stamps : `list` [`numpy.ndarray`]
        (nbands, stamp_height, stamp_width) noiseless isolated image of each
        source, whose lower-left pixel is at (``stamp_y0``, ``stamp_x0``).
    """

    def __init__(self, table: Table, stamps: list[np.ndarray]):
        check_truth_schema(table)
        if len(table) != len(stamps):
            raise ValueError(f"Truth table has {len(table)} rows but {len(stamps)} stamps.")
        for row, stamp in zip(table, stamps, strict=True):
            if stamp.shape[1:] != (row["stamp_height"], row["stamp_width"]):
                raise ValueError(f"Stamp of source {row['id']} has shape {stamp.shape}, not the table's.")
        self.table = table
        self.stamps = stamps

    def __len__(self) -> int:
        return len(self.table)

    @property
    def nbands(self) -> int:
        """Number of bands of the fluxes and stamps."""
        flux = self.table["flux"]
        return flux.shape[1] if flux.ndim == 2 else 1

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.table["id"])

    @property
    def is_star(self) -> np.ndarray:
        return np.asarray(self.table["class"]) == STAR

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) source positions (x, y)."""
        return np.column_stack([self.table["x"], self.table["y"]]).astype(np.float64)

    def stamp_box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, x0, height, width) of source ``index``'s stamp."""
        row = self.table[index]
        return (int(row["stamp_y0"]), int(row["stamp_x0"]), int(row["stamp_height"]), int(row["stamp_width"]))

    def isolated_image(self, index: int, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Source ``index``'s noiseless image clipped to an image of ``shape``.

        Returns
        -------
        stamp : `numpy.ndarray`
            (nbands, h, w) part of the stamp inside the image (may be empty).
        slices : `tuple` [`slice`, `slice`]
            Where that part lies in the image.
        """
        box = Box(*self.stamp_box(index))
        inside = box.intersect(Box(0, 0, *shape))
        return self.stamps[index][(slice(None), *inside.slices(box))], inside.slices()

    def render(self, shape: tuple[int, int], indices=None) -> np.ndarray:
        """Noiseless image (nbands, H, W) of the sources ``indices`` (default all)."""
        nbands = self.table["flux"].shape[1]
        image = np.zeros((nbands, *shape), dtype=np.float32)
        for index in range(len(self)) if indices is None else indices:
            stamp, (sy, sx) = self.isolated_image(int(index), shape)
            image[:, sy, sx] += stamp
        return image

    def footprint(self, index: int, shape: tuple[int, int], noise_sigma: np.ndarray, nsigma: float = 1.0):
        """Pixels where source ``index`` is brighter than ``nsigma`` noise in any band.

        Parameters
        ----------
        noise_sigma : `numpy.ndarray`
            (nbands,) noise level per band, or (nbands, H, W) per pixel.

        Returns
        -------
        mask : `numpy.ndarray`
            (h, w) boolean footprint in the image.
        slices : `tuple` [`slice`, `slice`]
            Where it lies in the image.
        """
        stamp, slices = self.isolated_image(index, shape)
        sigma = np.asarray(noise_sigma, dtype=np.float32)
        sigma = sigma[:, slices[0], slices[1]] if sigma.ndim == 3 else sigma[:, None, None]
        return np.any(stamp > nsigma * sigma, axis=0), slices

    def overlapping_pairs(
        self, shape: tuple[int, int], noise_sigma, nsigma: float = 1.0
    ) -> list[tuple[int, int]]:
        """Index pairs (i, j), i < j, of sources whose footprints share a pixel."""
        footprints = []
        for index in range(len(self)):
            mask, (sy, sx) = self.footprint(index, shape, noise_sigma, nsigma)
            footprints.append(Footprint(sy.start, sx.start, mask))
        boxes = [f.box for f in footprints]
        # Candidate pairs: intersecting boxes (vectorised), then compare masks.
        candidates = np.argwhere(np.triu(boxes_overlap(boxes, boxes), k=1))
        return [(int(i), int(j)) for i, j in candidates if mask_overlap(footprints[i], footprints[j])]

    def band_subset(self, index: list[int]) -> Truth:
        table = self.table.copy()
        table["flux"] = np.asarray(self.table["flux"])[:, index]
        table["mag"] = np.asarray(self.table["mag"])[:, index]
        return Truth(table, [stamp[index] for stamp in self.stamps])

    def to_hdus(self) -> list[fits.hdu.base.ExtensionHDU]:
        """The ``TRUTH`` table and ``TRUTH_STAMPS`` extensions."""
        flat = pack_arrays(self.stamps, np.float32)
        table_hdu = fits.table_to_hdu(self.table)
        table_hdu.name = "TRUTH"
        return [table_hdu, fits.ImageHDU(flat, name="TRUTH_STAMPS")]

    @classmethod
    def from_hdus(cls, hdul: fits.HDUList) -> Truth:
        """Read the ``TRUTH`` and ``TRUTH_STAMPS`` extensions of an open scene file.

        Raises
        ------
        TruthSchemaError
            If the table is of another schema or ``TRUTH_STAMPS`` is missing.
        ValueError
            If the stamps do not add up to what the table describes (a corrupt
            file).
        """
        table = Table.read(hdul["TRUTH"])
        check_truth_schema(table)
        nbands = table["flux"].shape[1] if table["flux"].ndim == 2 else 1
        if "TRUTH_STAMPS" not in hdul:
            raise TruthSchemaError("the scene has a TRUTH table but no TRUTH_STAMPS extension.")
        flat = hdul["TRUTH_STAMPS"].data
        stamps = unpack_arrays(
            None if flat is None else np.asarray(flat, dtype=np.float32),
            [(nbands, h, w) for h, w in zip(table["stamp_height"], table["stamp_width"], strict=True)],
            "TRUTH_STAMPS",
        )
        if table["class"].dtype.kind == "S":
            table["class"] = table["class"].astype(str)
        return cls(table, stamps)
