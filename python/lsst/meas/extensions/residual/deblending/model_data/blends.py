"""Blends: sources fitted together in one box, and a parent footprint split into such blends."""

from __future__ import annotations

__all__ = ["BlendData", "HierarchicalBlendData"]

import dataclasses
from typing import Any

import numpy as np

from .encoding import decode_metadata, encode_metadata, int_pair, require
from .registries import (
    BLEND_TYPES,
    MIGRATIONS,
    OBJECT_VERSION,
    PRE_SCHEMA,
    SOURCE_TYPES,
    ScarletModelDataError,
    migration,
    same_layout,
)
from .sources import SourceData


@BLEND_TYPES.register
@dataclasses.dataclass
class BlendData:
    """Sources fitted together in one model box."""

    origin: tuple[int, int]
    shape: tuple[int, int]
    sources: dict[int, SourceData]
    metadata: dict[str, Any] | None = None

    blend_type = "blend"
    kind = "blend"

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "blend_type": self.blend_type,
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.shape],
            "sources": {str(k): s.as_dict() for k, s in self.sources.items()},
            "version": OBJECT_VERSION,
        }
        if self.metadata is not None:
            result["metadata"] = encode_metadata(self.metadata)
        return result

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> BlendData:
        data = MIGRATIONS.migrate(cls.kind, data)
        require(data, ("origin", "shape", "sources"), "Blend")
        sources = {}
        for key, source in data["sources"].items():
            source_class = SOURCE_TYPES.lookup(source)
            if source_class is not SourceData:
                raise ScarletModelDataError(
                    f"A blend holds {SourceData.source_type!r} sources, not {source_class.source_type!r}."
                )
            sources[int(key)] = source_class.from_dict(source, dtype)
        return cls(
            origin=int_pair(data["origin"]),
            shape=int_pair(data["shape"]),
            sources=sources,
            metadata=decode_metadata(data.get("metadata")),
        )


@BLEND_TYPES.register
@dataclasses.dataclass
class HierarchicalBlendData:
    """A parent footprint split into child blends (LSST writes one per parent)."""

    children: dict[int, BlendData]
    metadata: dict[str, Any] | None = None

    blend_type = "hierarchical"
    kind = "hierarchical blend"

    @property
    def sources(self) -> dict[int, SourceData]:
        """All sources of all children."""
        return {k: s for child in self.children.values() for k, s in child.sources.items()}

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "blend_type": self.blend_type,
            "children": {str(k): c.as_dict() for k, c in self.children.items()},
            "version": OBJECT_VERSION,
        }
        if self.metadata is not None:
            result["metadata"] = encode_metadata(self.metadata)
        return result

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> HierarchicalBlendData:
        data = MIGRATIONS.migrate(cls.kind, data)
        require(data, ("children",), "Hierarchical blend")
        children = {int(k): BLEND_TYPES.from_dict(c, dtype) for k, c in data["children"].items()}
        return cls(children=children, metadata=decode_metadata(data.get("metadata")))


MIGRATIONS.set_current(BlendData.kind, OBJECT_VERSION)
MIGRATIONS.set_current(HierarchicalBlendData.kind, OBJECT_VERSION)
MIGRATIONS.register(HierarchicalBlendData.kind, PRE_SCHEMA, OBJECT_VERSION, same_layout)


@migration(BlendData.kind, PRE_SCHEMA, OBJECT_VERSION)
def _blend_to_1_0_0(data: dict[str, Any]) -> dict[str, Any]:
    """Pre-schema blends carried their own observed PSFs and bands at top level, not in metadata."""
    if data.get("metadata") is None and "psf" in data:
        require(data, ("psf_shape", "bands"), "Pre-schema blend")
        metadata = {
            "psf": data["psf"],
            "psf_shape": data["psf_shape"],
            "psf_dtype": "float32",
            "array_keys": ["psf"],
            "bands": tuple(data["bands"]),
        }
        if "psf_center" in data:
            metadata["psf_center"] = tuple(data["psf_center"])
        data["metadata"] = metadata
    return data
