"""The model data of a patch: its blends, isolated sources and metadata."""

from __future__ import annotations

__all__ = ["ScarletModelData", "MODEL_DATA_VERSION", "MODEL_TYPE"]

import dataclasses
from typing import Any

import numpy as np

from .blends import BlendData, HierarchicalBlendData
from .encoding import decode_metadata, encode_metadata, require
from .registries import BLEND_TYPES, MIGRATIONS, PRE_SCHEMA, ScarletModelDataError, migration, same_layout
from .sources import IsolatedSourceData

#: Schema version of the model data container (meas_extensions_scarlet's ``CURRENT_SCHEMA``).
MODEL_DATA_VERSION = "1.0.1"
#: ``model_type`` of LSST's model data.
MODEL_TYPE = "lsst"
#: Model types read: LSST's, and scarlet_lite's own (the same layout without isolated sources).
_READ_MODEL_TYPES = (MODEL_TYPE, "scarlet_model")


@dataclasses.dataclass
class ScarletModelData:
    """The deblender models of a patch: blends, isolated sources and metadata.

    Attributes
    ----------
    blends : `dict` [`int`, `HierarchicalBlendData` or `BlendData`]
        By parent id.
    isolated : `dict` [`int`, `IsolatedSourceData`]
        Undeblended single-peak parents, by id.
    metadata : `dict`
        ``model_psf`` (k, k), ``psf`` (bands, K, K), ``bands``; may hold
        more (this package adds ``patch_shape``).
    """

    blends: dict[int, BlendData | HierarchicalBlendData] = dataclasses.field(default_factory=dict)
    isolated: dict[int, IsolatedSourceData] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] | None = None
    version: str = MODEL_DATA_VERSION

    model_type = MODEL_TYPE
    kind = "scarlet model data"

    @property
    def bands(self) -> tuple[str, ...] | None:
        """Bands of the model (from the metadata, or else the first blend's)."""
        if self.metadata and "bands" in self.metadata:
            return tuple(self.metadata["bands"])
        for blend in self.blends.values():
            for child in blend.children.values() if isinstance(blend, HierarchicalBlendData) else [blend]:
                if child.metadata and "bands" in child.metadata:
                    return tuple(child.metadata["bands"])
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "blends": {str(k): b.as_dict() for k, b in self.blends.items()},
            "isolated": {str(k): s.as_dict() for k, s in self.isolated.items()},
            "metadata": encode_metadata(self.metadata),
            "version": MODEL_DATA_VERSION,
        }

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32, blend_ids=None) -> ScarletModelData:
        """Read the JSON-compatible dict of any known version.

        Parameters
        ----------
        blend_ids : iterable of `int`, optional
            Read only these blends (all if None).

        Raises
        ------
        ScarletModelDataError
            Unknown version, model type, blend/source/component type, or
            missing fields.
        """
        if not isinstance(data, dict):
            raise ScarletModelDataError(
                f"Scarlet model data must be a JSON object, not {type(data).__name__}."
            )
        data = MIGRATIONS.migrate(cls.kind, data)
        if data.get("model_type", MODEL_TYPE) not in _READ_MODEL_TYPES:
            raise ScarletModelDataError(f"Unknown scarlet model type {data['model_type']!r}.")
        wanted = None if blend_ids is None else {int(b) for b in blend_ids}
        blends = _read_members(data.get("blends", {}), "Blend", BLEND_TYPES.from_dict, wanted, dtype)
        isolated = _read_members(
            data.get("isolated", {}), "Isolated source", IsolatedSourceData.from_dict, wanted, dtype
        )
        if wanted is not None:
            missing = wanted - set(blends) - set(isolated)
            if missing:
                raise ScarletModelDataError(f"No blend or isolated source with id(s) {sorted(missing)}.")
        return cls(blends=blends, isolated=isolated, metadata=decode_metadata(data.get("metadata")))


def _read_members(members: dict, what: str, read, wanted: set[int] | None, dtype) -> dict[int, Any]:
    """``{id: read(member)}`` for the ``wanted`` ids (all if None); errors name the id."""
    result = {}
    for key, member in members.items():
        if wanted is not None and int(key) not in wanted:
            continue
        try:
            result[int(key)] = read(member, dtype)
        except ScarletModelDataError as err:
            raise ScarletModelDataError(f"{what} {key}: {err}") from None
    return result


MIGRATIONS.set_current(ScarletModelData.kind, MODEL_DATA_VERSION)


@migration(ScarletModelData.kind, PRE_SCHEMA, "1.0.0")
def _model_data_to_1_0_0(data: dict[str, Any]) -> dict[str, Any]:
    """The pre-schema layout (e.g. LSST v29) kept the model PSF at top level, not in metadata."""
    if "psfShape" in data:
        require(data, ("psf",), "Pre-schema model data")
        if data["psfShape"] is None:
            raise ScarletModelDataError("Pre-schema model data has a model PSF but no 'psfShape'.")
        data["metadata"] = {
            "model_psf": data["psf"],
            "model_psf_shape": list(data["psfShape"]),
            "array_keys": ["model_psf"],
        }
    return data


# 1.0.1 only added ``metadata.footprint`` (None) on LSST's side; it is not added here, so a
# 1.0.0 file reads, and writes back, with the metadata it has.
MIGRATIONS.register(ScarletModelData.kind, "1.0.0", MODEL_DATA_VERSION, same_layout)
