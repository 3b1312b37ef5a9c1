"""Sources: a deblended source (its components) and an isolated, undeblended one."""

from __future__ import annotations

__all__ = ["SourceData", "IsolatedSourceData"]

import dataclasses
from typing import Any

import numpy as np

from .components import CubeComponentData, FactorizedComponentData
from .encoding import decode_metadata, encode_metadata, float_pair, int_pair, read_array, require
from .registries import (
    COMPONENT_TYPES,
    MIGRATIONS,
    OBJECT_VERSION,
    PRE_SCHEMA,
    SOURCE_TYPES,
    ScarletModelDataError,
    migration,
    same_layout,
)


@SOURCE_TYPES.register
@dataclasses.dataclass
class SourceData:
    """A deblended source: a list of components and metadata (``peak_id``, ``id``)."""

    components: list[FactorizedComponentData | CubeComponentData]
    metadata: dict[str, Any] | None = None

    source_type = "source"
    kind = "source"

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "source_type": self.source_type,
            "components": [c.as_dict() for c in self.components],
            "version": OBJECT_VERSION,
        }
        if self.metadata is not None:
            result["metadata"] = encode_metadata(self.metadata)
        return result

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> SourceData:
        data = MIGRATIONS.migrate(cls.kind, data)
        components = [COMPONENT_TYPES.from_dict(c, dtype) for c in data.get("components", [])]
        return cls(components, decode_metadata(data.get("metadata")))


@SOURCE_TYPES.register
@dataclasses.dataclass
class IsolatedSourceData:
    """An undeblended single-peak footprint: its model is the image inside ``span_array``."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    span_array: np.ndarray
    metadata: dict[str, Any] | None = None

    source_type = "isolated"
    kind = "isolated source"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.span_array.shape)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.span_array.shape],
            "peak": [float(p) for p in self.peak],
            "span_array": np.asarray(self.span_array, dtype=np.float64).ravel().tolist(),
            "source_type": self.source_type,
            "version": OBJECT_VERSION,
        }
        if self.metadata is not None:
            result["metadata"] = encode_metadata(self.metadata)
        return result

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> IsolatedSourceData:
        if data.get("source_type", cls.source_type) != cls.source_type:
            raise ScarletModelDataError(
                f"Expected an isolated source, got source type {data['source_type']!r}."
            )
        data = MIGRATIONS.migrate(cls.kind, data)
        require(data, ("origin", "shape", "peak", "span_array"), "Isolated source")
        return cls(
            origin=int_pair(data["origin"]),
            peak=float_pair(data["peak"]),
            span_array=read_array(
                data["span_array"], tuple(int(s) for s in data["shape"]), dtype, "span_array"
            ),
            metadata=decode_metadata(data.get("metadata")),
        )


MIGRATIONS.set_current(SourceData.kind, OBJECT_VERSION)
MIGRATIONS.set_current(IsolatedSourceData.kind, OBJECT_VERSION)
MIGRATIONS.register(IsolatedSourceData.kind, PRE_SCHEMA, OBJECT_VERSION, same_layout)


@migration(SourceData.kind, PRE_SCHEMA, OBJECT_VERSION)
def _source_to_1_0_0(data: dict[str, Any]) -> dict[str, Any]:
    """Pre-schema sources kept factorized components apart and the peak id at top level."""
    data["components"] = [*data.get("components", []), *data.pop("factorized", [])]
    if data.get("metadata") is None and "peak_id" in data:
        data["metadata"] = {"peak_id": data["peak_id"]}
    return data
