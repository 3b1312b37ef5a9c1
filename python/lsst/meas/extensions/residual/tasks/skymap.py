"""A minimal sky map for the embedded repository (no ``lsst.skymap``).

``lsst.skymap`` is not on PyPI, so the embedded demo describes its tract and
patches itself: one tract with a gnomonic (TAN) projection around a sky
position, cut into a grid of non-overlapping square patches. What a Butler
needs from a sky map is only its dimension records (``skymap``, ``tract``,
``patch`` with ``lsst.sphgeom`` regions); what the tasks need is the patch
bounding box in tract pixels and the tract WCS, both computed here.

Patch ids follow ``lsst.skymap``'s sequential index,
``id = cell_y * patch_nx + cell_x``. Pixel coordinates are tract coordinates
(0-based, pixel centres at integers); a patch's scene pixel (x, y) is tract
pixel (x + x0, y + y0).
"""

from __future__ import annotations

__all__ = ["DemoSkyMap", "PatchGeometry"]

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
from astropy.wcs import WCS


@dataclasses.dataclass(frozen=True)
class PatchGeometry:
    """Where one patch lies in its tract.

    Attributes
    ----------
    id : `int`
        Sequential patch id.
    cell_x, cell_y : `int`
        Column and row of the patch in the tract's patch grid.
    x0, y0 : `int`
        Tract pixel of the patch's first column and row.
    width, height : `int`
        Patch size in pixels.
    """

    id: int
    cell_x: int
    cell_y: int
    x0: int
    y0: int
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width


@dataclasses.dataclass(frozen=True)
class DemoSkyMap:
    """One tract with a TAN projection, cut into ``patch_nx`` × ``patch_ny`` patches.

    Parameters
    ----------
    name : `str`
        Sky map name (the ``skymap`` dimension value).
    ra, dec : `float`
        Tract centre (degrees, ICRS).
    pixel_scale : `float`
        Arcsec per pixel.
    patch_size : `int`
        Side of each square patch in pixels.
    patch_nx, patch_ny : `int`
        Number of patch columns and rows.
    tract : `int`
        Id of the single tract.
    """

    name: str = "residual_demo"
    ra: float = 150.0
    dec: float = 2.2
    pixel_scale: float = 0.2
    patch_size: int = 256
    patch_nx: int = 2
    patch_ny: int = 2
    tract: int = 0

    def __post_init__(self) -> None:
        if self.patch_size <= 0 or self.patch_nx <= 0 or self.patch_ny <= 0:
            raise ValueError(
                f"Sky map needs a positive patch size and grid, not {self.patch_size} px, "
                f"{self.patch_nx}x{self.patch_ny}."
            )
        if not -90.0 < self.dec < 90.0:
            raise ValueError(f"Tract centre declination must be in (-90, 90), not {self.dec}.")
        if self.pixel_scale <= 0:
            raise ValueError(f"pixel_scale must be positive, not {self.pixel_scale}.")

    # -- geometry ---------------------------------------------------------

    @property
    def tract_shape(self) -> tuple[int, int]:
        """Tract (height, width) in pixels."""
        return self.patch_ny * self.patch_size, self.patch_nx * self.patch_size

    @property
    def n_patches(self) -> int:
        return self.patch_nx * self.patch_ny

    def patch(self, patch_id: int) -> PatchGeometry:
        """Geometry of patch ``patch_id``.

        Raises
        ------
        ValueError
            If there is no such patch.
        """
        if not 0 <= int(patch_id) < self.n_patches:
            raise ValueError(f"Sky map {self.name!r} has patches 0..{self.n_patches - 1}, not {patch_id}.")
        cell_y, cell_x = divmod(int(patch_id), self.patch_nx)
        return PatchGeometry(
            id=int(patch_id),
            cell_x=cell_x,
            cell_y=cell_y,
            x0=cell_x * self.patch_size,
            y0=cell_y * self.patch_size,
            width=self.patch_size,
            height=self.patch_size,
        )

    def patches(self) -> list[PatchGeometry]:
        return [self.patch(i) for i in range(self.n_patches)]

    def wcs(self) -> WCS:
        """Tract WCS (astropy, 0-based pixel coordinates via ``pixel_to_world``)."""
        height, width = self.tract_shape
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [self.ra, self.dec]
        # FITS CRPIX is 1-based: the tract centre in 0-based pixels is
        # ((width - 1) / 2, (height - 1) / 2).
        wcs.wcs.crpix = [(width - 1) / 2 + 1, (height - 1) / 2 + 1]
        scale = self.pixel_scale / 3600.0
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.radesys = "ICRS"
        return wcs

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees of tract pixels (x, y)."""
        ra, dec = self.wcs().wcs_pix2world(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 0)
        return np.asarray(ra), np.asarray(dec)

    def _polygon(self, x0: float, y0: float, x1: float, y1: float):
        from lsst.sphgeom import ConvexPolygon, LonLat, UnitVector3d

        # Pixel edges are half a pixel outside the first/last pixel centres.
        xs = np.array([x0, x1, x1, x0]) - 0.5
        ys = np.array([y0, y0, y1, y1]) - 0.5
        ra, dec = self.pixel_to_sky(xs, ys)
        return ConvexPolygon(
            [UnitVector3d(LonLat.fromDegrees(float(a), float(d))) for a, d in zip(ra, dec, strict=True)]
        )

    def patch_region(self, patch_id: int):
        """`lsst.sphgeom.ConvexPolygon` of a patch."""
        p = self.patch(patch_id)
        return self._polygon(p.x0, p.y0, p.x0 + p.width, p.y0 + p.height)

    def tract_region(self):
        height, width = self.tract_shape
        return self._polygon(0, 0, width, height)

    # -- Butler dimension records -------------------------------------------

    def parameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def hash(self) -> bytes:
        """SHA-1 of the parameters (the ``skymap`` record's ``hash``, 20 bytes)."""
        return hashlib.sha1(json.dumps(self.parameters(), sort_keys=True).encode()).digest()

    def dimension_records(self) -> dict[str, list[dict[str, Any]]]:
        """``skymap``, ``tract`` and ``patch`` records for ``Registry.syncDimensionData``."""
        skymap = {
            "name": self.name,
            "hash": self.hash,
            "tract_max": self.tract + 1,
            "patch_nx_max": self.patch_nx,
            "patch_ny_max": self.patch_ny,
        }
        tract = {"skymap": self.name, "id": self.tract, "region": self.tract_region()}
        patches = [
            {
                "skymap": self.name,
                "tract": self.tract,
                "id": p.id,
                "cell_x": p.cell_x,
                "cell_y": p.cell_y,
                "region": self.patch_region(p.id),
            }
            for p in self.patches()
        ]
        return {"skymap": [skymap], "tract": [tract], "patch": patches}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> DemoSkyMap:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(parameters) - known
        if unknown:
            raise ValueError(f"Unknown sky map parameter(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**parameters)
