"""Where a patch lies: tract, patch, pixel origin and sky; and moving model data in and out of it.

The core works in patch pixels with local ids (peaks and footprints numbered
from 1 within the patch). Every output of the chain is written in the frame a
user of the LSST stack expects: tract pixels and ids packed for the tract and
patch (`lsst.meas.extensions.residual.chain.ids`). A `PatchPlacement` holds
what that takes. A scene file run through ``residual-detectron run`` is
patch 0 of tract 0 at the tract origin, so its pixels are its own and its
ids are the local ones (parents with the parent bit set).
"""

from __future__ import annotations

__all__ = ["PatchPlacement", "model_data_to_tract", "model_data_to_patch"]

import dataclasses
from collections.abc import Callable

import numpy as np

from ..deblending import ScarletModelData, ScarletModelDataError, transform_model_data
from .ids import IdMap

PixelToSky = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PatchPlacement:
    """Tract, patch, origin and sky of the patch a scene covers.

    Attributes
    ----------
    tract, patch : `int`
        Where the ids are packed for.
    x0, y0 : `int`
        Tract pixel of the patch's first column and row: patch pixel (x, y)
        is tract pixel (x + x0, y + y0).
    pixel_to_sky : callable or `None`
        ``(x, y) -> (ra, dec)`` in degrees for tract pixels; `None` when the
        images carry no WCS (then catalogs have no ``ra``/``dec`` columns).
    """

    tract: int = 0
    patch: int = 0
    x0: int = 0
    y0: int = 0
    pixel_to_sky: PixelToSky | None = dataclasses.field(default=None, compare=False)

    def sky(self, x_patch: np.ndarray, y_patch: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(ra, dec) in degrees of patch pixels, or `None` without a WCS."""
        if self.pixel_to_sky is None:
            return None
        x = np.asarray(x_patch, dtype=float) + self.x0
        y = np.asarray(y_patch, dtype=float) + self.y0
        if x.size == 0:
            return np.zeros(0), np.zeros(0)
        ra, dec = self.pixel_to_sky(x, y)
        return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)

    def id_map(self, sources=(), parents=()) -> IdMap:
        """An `IdMap` of this patch knowing the given global ids."""
        return IdMap(self.tract, self.patch, sources=sources, parents=parents)


def model_data_to_tract(model_data: ScarletModelData, placement: PatchPlacement, id_map: IdMap):
    """Core model data (patch pixels, local ids) -> output model data (tract pixels, global ids)."""

    def sid(local: int) -> int:
        return int(id_map.global_sources([local])[0])

    def pid(local: int) -> int:
        return int(id_map.global_parents([local])[0])

    return transform_model_data(model_data, source_id=sid, parent_id=pid, dy=placement.y0, dx=placement.x0)


def model_data_to_patch(
    model_data: ScarletModelData, placement: PatchPlacement, id_map: IdMap
) -> ScarletModelData:
    """Stored model data (tract pixels, global ids) -> core model data (patch pixels, local ids).

    Raises
    ------
    ScarletModelDataError
        If the model data holds an id the catalog (``id_map``) does not.
    """

    def sid(gid: int) -> int:
        return int(id_map.local_sources([gid])[0])

    def pid(gid: int) -> int:
        return int(id_map.local_parents([gid])[0])

    try:
        return transform_model_data(
            model_data, source_id=sid, parent_id=pid, dy=-placement.y0, dx=-placement.x0
        )
    except KeyError as err:
        raise ScarletModelDataError(f"Scarlet model data and catalog do not match: {err.args[0]}") from None
