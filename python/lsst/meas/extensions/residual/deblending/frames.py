"""Scarlet model data in another frame: shifted origins, mapped ids; and the parent footprint image.

The deblender writes model data in patch pixels with local ids (blends keyed
by footprint id, sources by peak id). In a Butler repository, as in LSST's
``object_scarlet_models``, the same container holds tract-pixel origins and
the catalog's global ids (blends by parent id, sources by object id), so the
model data matches the catalog row for row and can be read by LSST's tools.
`transform_model_data` does the move either way
(`lsst.meas.extensions.residual.chain.placement` gives it the ids).
"""

from __future__ import annotations

__all__ = ["transform_model_data", "parent_footprints"]

import copy
import dataclasses
from collections.abc import Callable

import numpy as np

from .model_data import BlendData, HierarchicalBlendData, IsolatedSourceData, ScarletModelData, SourceData

IdFunction = Callable[[int], int]


def _shift(point, dy: int, dx: int) -> tuple:
    return (point[0] + dy, point[1] + dx)


def _map_metadata(metadata: dict | None, source_id: IdFunction) -> dict | None:
    if metadata is None:
        return None
    out = dict(metadata)
    for key in ("peak_id", "id"):
        if key in out and out[key] is not None:
            out[key] = source_id(int(out[key]))
    return out


def _transform_blend(blend: BlendData, source_id: IdFunction, dy: int, dx: int) -> BlendData:
    sources = {}
    for key, source in blend.sources.items():
        components = [
            dataclasses.replace(c, origin=_shift(c.origin, dy, dx), peak=_shift(c.peak, dy, dx))
            for c in source.components
        ]
        sources[source_id(int(key))] = SourceData(
            components=components, metadata=_map_metadata(source.metadata, source_id)
        )
    return BlendData(
        origin=_shift(blend.origin, dy, dx),
        shape=tuple(blend.shape),
        sources=sources,
        metadata=copy.copy(blend.metadata),
    )


def transform_model_data(
    model_data: ScarletModelData, *, source_id: IdFunction, parent_id: IdFunction, dy: int, dx: int
) -> ScarletModelData:
    """A copy of ``model_data`` with ids mapped and positions shifted by (dy, dx).

    Arrays (morphologies, spectra, spans, PSFs) are shared, not copied.

    Parameters
    ----------
    source_id, parent_id : callable
        Map a source (peak) id and a parent (blend, isolated) id.
    dy, dx : `int`
        Added to every origin and peak (y, x).
    """
    out = ScarletModelData(metadata=copy.copy(model_data.metadata), version=model_data.version)
    for key, blend in model_data.blends.items():
        new_key = parent_id(int(key))
        if isinstance(blend, HierarchicalBlendData):
            metadata = dict(blend.metadata) if blend.metadata is not None else None
            if metadata is not None and metadata.get("origin") is not None:
                metadata["origin"] = tuple(int(v) for v in _shift(metadata["origin"], dy, dx))
            children = {
                (new_key if int(child_key) == int(key) else int(child_key)): _transform_blend(
                    child, source_id, dy, dx
                )
                for child_key, child in blend.children.items()
            }
            out.blends[new_key] = HierarchicalBlendData(children=children, metadata=metadata)
        else:
            out.blends[new_key] = _transform_blend(blend, source_id, dy, dx)
    for key, source in model_data.isolated.items():
        out.isolated[parent_id(int(key))] = IsolatedSourceData(
            origin=_shift(source.origin, dy, dx),
            peak=_shift(source.peak, dy, dx),
            span_array=source.span_array,
            metadata=_map_metadata(source.metadata, source_id),
        )
    return out


def _paint(labels: np.ndarray, mask: np.ndarray, origin, value: int) -> None:
    y0, x0 = int(origin[0]), int(origin[1])
    h, w = mask.shape
    height, width = labels.shape
    ya, yb, xa, xb = max(y0, 0), min(y0 + h, height), max(x0, 0), min(x0 + w, width)
    if ya < yb and xa < xb:
        region = labels[ya:yb, xa:xb]
        region[mask[ya - y0 : yb - y0, xa - x0 : xb - x0]] = value


def parent_footprints(model_data: ScarletModelData, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 image of the parent (blend or isolated source) id covering each pixel.

    A hierarchical blend's footprint is its ``spans`` (LSST's parent
    footprint); a blend without spans covers its model boxes; an isolated
    source covers its span array. 0 where no parent is.
    """
    labels = np.zeros(shape, dtype=np.int32)
    for key, blend in model_data.blends.items():
        metadata = blend.metadata if isinstance(blend, HierarchicalBlendData) else None
        if metadata is not None and metadata.get("spans") is not None and metadata.get("origin") is not None:
            _paint(labels, np.asarray(metadata["spans"], dtype=bool), metadata["origin"], int(key))
            continue
        children = blend.children.values() if isinstance(blend, HierarchicalBlendData) else [blend]
        for child in children:
            _paint(labels, np.ones(tuple(child.shape), dtype=bool), child.origin, int(key))
    for key, source in model_data.isolated.items():
        _paint(labels, np.asarray(source.span_array) > 0, source.origin, int(key))
    return labels
