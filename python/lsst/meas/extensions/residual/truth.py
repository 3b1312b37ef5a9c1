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
    table order. Each stamp holds all the flux of its source: its sum over
    pixels equals the ``flux`` column.
"""

from __future__ import annotations

__all__ = ["Truth", "STAR", "GALAXY"]

import numpy as np
from astropy.io import fits
from astropy.table import Table

STAR = "star"
GALAXY = "galaxy"

_STAMP_COLUMNS = ("stamp_x0", "stamp_y0", "stamp_height", "stamp_width")


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
        if len(table) != len(stamps):
            raise ValueError(f"Truth table has {len(table)} rows but {len(stamps)} stamps.")
        for column in ("id", "x", "y", "class", "flux", "mag", *_STAMP_COLUMNS):
            if column not in table.colnames:
                raise ValueError(f"Truth table has no {column!r} column.")
        for row, stamp in zip(table, stamps, strict=True):
            if stamp.shape[1:] != (row["stamp_height"], row["stamp_width"]):
                raise ValueError(f"Stamp of source {row['id']} has shape {stamp.shape}, not the table's.")
        self.table = table
        self.stamps = stamps

    def __len__(self) -> int:
        return len(self.table)

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
        y0, x0, h, w = self.stamp_box(index)
        ya, yb = max(y0, 0), min(y0 + h, shape[0])
        xa, xb = max(x0, 0), min(x0 + w, shape[1])
        ya, xa = min(ya, yb), min(xa, xb)
        stamp = self.stamps[index][:, ya - y0 : yb - y0, xa - x0 : xb - x0]
        return stamp, (slice(ya, yb), slice(xa, xb))

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
        masks = [self.footprint(i, shape, noise_sigma, nsigma) for i in range(len(self))]
        if not masks:
            return []
        boxes = np.array([(sy.start, sy.stop, sx.start, sx.stop) for _, (sy, sx) in masks])
        # Candidate pairs: intersecting boxes (vectorised), then compare masks.
        ya = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
        yb = np.minimum(boxes[:, None, 1], boxes[None, :, 1])
        xa = np.maximum(boxes[:, None, 2], boxes[None, :, 2])
        xb = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        candidates = np.argwhere(np.triu((ya < yb) & (xa < xb), k=1))
        pairs = []
        for i, j in candidates:
            y0, y1, x0, x1 = ya[i, j], yb[i, j], xa[i, j], xb[i, j]
            mi = masks[i][0][y0 - boxes[i, 0] : y1 - boxes[i, 0], x0 - boxes[i, 2] : x1 - boxes[i, 2]]
            mj = masks[j][0][y0 - boxes[j, 0] : y1 - boxes[j, 0], x0 - boxes[j, 2] : x1 - boxes[j, 2]]
            if np.any(mi & mj):
                pairs.append((int(i), int(j)))
        return pairs

    def band_subset(self, index: list[int]) -> Truth:
        table = self.table.copy()
        table["flux"] = np.asarray(self.table["flux"])[:, index]
        table["mag"] = np.asarray(self.table["mag"])[:, index]
        return Truth(table, [stamp[index] for stamp in self.stamps])

    def to_hdus(self) -> list[fits.hdu.base.ExtensionHDU]:
        """The ``TRUTH`` table and ``TRUTH_STAMPS`` extensions."""
        if self.stamps:
            flat = np.concatenate([s.astype(np.float32).ravel() for s in self.stamps])
        else:
            flat = np.zeros(0, dtype=np.float32)
        table_hdu = fits.table_to_hdu(self.table)
        table_hdu.name = "TRUTH"
        return [table_hdu, fits.ImageHDU(flat, name="TRUTH_STAMPS")]

    @classmethod
    def from_hdus(cls, hdul: fits.HDUList) -> Truth:
        """Read the ``TRUTH`` and ``TRUTH_STAMPS`` extensions of an open scene file."""
        table = Table.read(hdul["TRUTH"])
        nbands = table["flux"].shape[1] if table["flux"].ndim == 2 else 1
        if "TRUTH_STAMPS" not in hdul:
            raise ValueError("Scene has a TRUTH table but no TRUTH_STAMPS extension.")
        flat = hdul["TRUTH_STAMPS"].data
        flat = np.zeros(0, dtype=np.float32) if flat is None else np.asarray(flat, dtype=np.float32)
        sizes = nbands * np.asarray(table["stamp_height"], dtype=np.int64) * np.asarray(table["stamp_width"])
        if sizes.sum() != flat.size:
            raise ValueError(
                f"TRUTH_STAMPS has {flat.size} values but the TRUTH table describes {sizes.sum()}."
            )
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        stamps = [
            flat[offsets[i] : offsets[i + 1]].reshape(
                nbands, int(row["stamp_height"]), int(row["stamp_width"])
            )
            for i, row in enumerate(table)
        ]
        if table["class"].dtype.kind == "S":
            table["class"] = table["class"].astype(str)
        return cls(table, stamps)
