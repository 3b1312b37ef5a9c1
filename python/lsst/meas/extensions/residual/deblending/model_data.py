"""Scarlet model data: LSST's persisted form of deblender models.

These classes follow the JSON schema written and read by lsst/scarlet_lite
(``io/``) and lsst/meas_extensions_scarlet (``io/``, model type ``"lsst"``,
schema ``1.0.1``), so files written here are read by LSST's code and LSST's
files are read here. The layout, as JSON-compatible dicts:

model data (``"version": "1.0.1"``, ``"model_type": "lsst"``)
    ``blends`` {id: blend}, ``isolated`` {id: isolated source}, ``metadata``
    (``model_psf`` (k, k), ``psf`` (bands, K, K), ``bands``; arrays are
    encoded as a flat list plus ``<key>_shape``/``<key>_dtype`` and listed in
    ``array_keys``).
hierarchical blend (``"blend_type": "hierarchical"``)
    ``children`` {id: blend}; ``metadata`` {``spans``: footprint mask,
    ``origin``: its (y0, x0)}.
blend (``"blend_type": "blend"``)
    ``origin`` (y0, x0), ``shape`` (h, w) of the model box, ``sources``
    {id: source}; optional ``metadata`` (per-blend ``psf``/``bands`` in
    older files).
source (``"source_type": "source"``)
    ``components`` [component]; ``metadata`` {``peak_id``, ``id``}.
factorized component (``"component_type": "factorized"``)
    ``origin``, ``shape``, ``peak`` (y, x), ``spectrum`` (bands),
    ``morph`` (h·w, row-major). Its model is ``spectrum ⊗ morph`` in the
    model frame (model PSF), placed at ``origin``.
cube component (``"component_type": "component"``)
    ``origin``, ``shape`` (bands, h, w), ``peak``, ``model`` (flattened).
isolated source (``"source_type": "isolated"``)
    ``origin``, ``shape``, ``peak``, ``span_array``: a footprint whose model
    is the image itself (LSST does not deblend single-peak parents).

Coordinates are (y, x) pixel indices in the patch. Older files without a
``version`` (the pre-schema layout, e.g. LSST release v29) are migrated on
reading as LSST does; a version this module does not know is an error.
"""

from __future__ import annotations

__all__ = [
    "ScarletModelDataError",
    "FactorizedComponentData",
    "CubeComponentData",
    "SourceData",
    "IsolatedSourceData",
    "BlendData",
    "HierarchicalBlendData",
    "ScarletModelData",
    "MODEL_DATA_VERSION",
    "OBJECT_VERSION",
    "MODEL_TYPE",
]

import dataclasses
from typing import Any

import numpy as np

from ..errors import InputError

#: Schema version of the model data container (meas_extensions_scarlet's ``CURRENT_SCHEMA``).
MODEL_DATA_VERSION = "1.0.1"
#: Schema version of blends, sources and components (scarlet_lite's ``CURRENT_SCHEMA``).
OBJECT_VERSION = "1.0.0"
#: ``model_type`` of LSST's model data.
MODEL_TYPE = "lsst"
_PRE_SCHEMA = "0.0.0"
_KNOWN_MODEL_VERSIONS = (_PRE_SCHEMA, "1.0.0", MODEL_DATA_VERSION)
_KNOWN_OBJECT_VERSIONS = (_PRE_SCHEMA, OBJECT_VERSION)


class ScarletModelDataError(InputError):
    """Scarlet model data that cannot be read or is inconsistent."""


def _version(data: dict, what: str, known: tuple[str, ...]) -> str:
    version = str(data.get("version", _PRE_SCHEMA))
    if version not in known:
        raise ScarletModelDataError(
            f"Unknown {what} schema version {version!r}; this reader knows {', '.join(known[1:])} "
            "and the pre-schema layout."
        )
    return version


def _require(data: dict, keys: tuple[str, ...], what: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ScarletModelDataError(f"{what} is missing {', '.join(repr(k) for k in missing)}.")


def _array(values: Any, shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=dtype)
        return array.reshape(shape)
    except (TypeError, ValueError) as err:
        raise ScarletModelDataError(f"{what}: cannot read an array of shape {shape}: {err}") from None


def encode_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Metadata to JSON: each array becomes a flat list with ``<key>_shape``/``<key>_dtype``."""
    if metadata is None:
        return None
    encoded: dict[str, Any] = {}
    array_keys = []
    for key, value in metadata.items():
        if isinstance(value, np.ndarray):
            encoded[key] = value.ravel().tolist()
            encoded[f"{key}_shape"] = list(value.shape)
            encoded[f"{key}_dtype"] = str(value.dtype)
            array_keys.append(key)
        elif isinstance(value, tuple):
            encoded[key] = list(value)
        elif isinstance(value, np.generic):
            encoded[key] = value.item()
        else:
            encoded[key] = value
    if array_keys:
        encoded["array_keys"] = array_keys
    return encoded


def decode_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """Inverse of `encode_metadata` (also reads the legacy ``<key>Shape`` spelling)."""
    if metadata is None:
        return None
    decoded = dict(metadata)
    for key in decoded.pop("array_keys", []):
        dtype = decoded.pop(f"{key}_dtype", "float32")
        shape = decoded.pop(f"{key}_shape", None)
        if shape is None:
            shape = decoded.get(f"{key}Shape")
        if key not in decoded or shape is None:
            raise ScarletModelDataError(f"Metadata array {key!r} has no data or no shape.")
        decoded[key] = _array(decoded[key], tuple(shape), dtype, f"metadata {key!r}")
    return decoded


@dataclasses.dataclass
class FactorizedComponentData:
    """A component whose model is ``spectrum[:, None, None] * morph`` at ``origin``."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    spectrum: np.ndarray
    morph: np.ndarray

    component_type = "factorized"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.morph.shape)

    def model(self) -> np.ndarray:
        """(bands, h, w) model-frame image."""
        return self.spectrum[:, None, None] * self.morph[None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.morph.shape],
            "peak": [int(round(p)) for p in self.peak],
            "spectrum": np.asarray(self.spectrum, dtype=np.float64).tolist(),
            "morph": np.asarray(self.morph, dtype=np.float64).ravel().tolist(),
            "component_type": self.component_type,
            "version": OBJECT_VERSION,
        }

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> FactorizedComponentData:
        _version(data, "factorized component", _KNOWN_OBJECT_VERSIONS)
        _require(data, ("origin", "shape", "peak", "spectrum", "morph"), "Factorized component")
        shape = tuple(int(s) for s in data["shape"])
        return cls(
            origin=(int(data["origin"][0]), int(data["origin"][1])),
            peak=(float(data["peak"][0]), float(data["peak"][1])),
            spectrum=_array(data["spectrum"], (-1,), dtype, "spectrum"),
            morph=_array(data["morph"], shape, dtype, "morph"),
        )


@dataclasses.dataclass
class CubeComponentData:
    """A component stored as a full (bands, h, w) model-frame cube."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    cube: np.ndarray

    component_type = "component"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cube.shape[-2:])

    def model(self) -> np.ndarray:
        return self.cube

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.cube.shape],
            "peak": [float(p) for p in self.peak],
            "model": np.asarray(self.cube, dtype=np.float64).ravel().tolist(),
            "component_type": self.component_type,
            "version": OBJECT_VERSION,
        }

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> CubeComponentData:
        _version(data, "cube component", _KNOWN_OBJECT_VERSIONS)
        _require(data, ("origin", "shape", "peak", "model"), "Cube component")
        shape = tuple(int(s) for s in data["shape"])
        return cls(
            origin=(int(data["origin"][0]), int(data["origin"][1])),
            peak=(float(data["peak"][0]), float(data["peak"][1])),
            cube=_array(data["model"], shape, dtype, "cube component model"),
        )


_COMPONENT_TYPES = {
    "factorized": FactorizedComponentData,
    "component": CubeComponentData,
    "cube": CubeComponentData,
}


def _component_from_dict(data: dict, dtype) -> FactorizedComponentData | CubeComponentData:
    kind = data.get("component_type", "factorized")
    if kind not in _COMPONENT_TYPES:
        raise ScarletModelDataError(f"Unknown component type {kind!r}.")
    return _COMPONENT_TYPES[kind].from_dict(data, dtype)


@dataclasses.dataclass
class SourceData:
    """A deblended source: a list of components and metadata (``peak_id``, ``id``)."""

    components: list[FactorizedComponentData | CubeComponentData]
    metadata: dict[str, Any] | None = None

    source_type = "source"

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
        version = _version(data, "source", _KNOWN_OBJECT_VERSIONS)
        components = list(data.get("components", []))
        metadata = decode_metadata(data.get("metadata"))
        if version == _PRE_SCHEMA:
            # Pre-schema sources kept factorized components apart and the peak id at top level.
            components += list(data.get("factorized", []))
            if metadata is None and "peak_id" in data:
                metadata = {"peak_id": data["peak_id"]}
        return cls([_component_from_dict(c, dtype) for c in components], metadata)


@dataclasses.dataclass
class IsolatedSourceData:
    """An undeblended single-peak footprint: its model is the image inside ``span_array``."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    span_array: np.ndarray
    metadata: dict[str, Any] | None = None

    source_type = "isolated"

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
        _version(data, "isolated source", _KNOWN_OBJECT_VERSIONS)
        if data.get("source_type", "isolated") != "isolated":
            raise ScarletModelDataError(
                f"Expected an isolated source, got source type {data['source_type']!r}."
            )
        _require(data, ("origin", "shape", "peak", "span_array"), "Isolated source")
        shape = tuple(int(s) for s in data["shape"])
        return cls(
            origin=(int(data["origin"][0]), int(data["origin"][1])),
            peak=(float(data["peak"][0]), float(data["peak"][1])),
            span_array=_array(data["span_array"], shape, dtype, "span_array"),
            metadata=decode_metadata(data.get("metadata")),
        )


@dataclasses.dataclass
class BlendData:
    """Sources fitted together in one model box."""

    origin: tuple[int, int]
    shape: tuple[int, int]
    sources: dict[int, SourceData]
    metadata: dict[str, Any] | None = None

    blend_type = "blend"

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
        version = _version(data, "blend", _KNOWN_OBJECT_VERSIONS)
        _require(data, ("origin", "shape", "sources"), "Blend")
        metadata = decode_metadata(data.get("metadata"))
        if version == _PRE_SCHEMA and metadata is None and "psf" in data:
            # Pre-schema blends carried their own observed PSFs and bands.
            _require(data, ("psf_shape", "bands"), "Pre-schema blend")
            metadata = {
                "psf": _array(data["psf"], tuple(data["psf_shape"]), np.float32, "blend psf"),
                "bands": tuple(data["bands"]),
            }
            if "psf_center" in data:
                metadata["psf_center"] = tuple(data["psf_center"])
        sources = {}
        for key, source in data["sources"].items():
            if source.get("source_type", "source") != "source":
                raise ScarletModelDataError(f"Unknown source type {source['source_type']!r} in a blend.")
            sources[int(key)] = SourceData.from_dict(source, dtype)
        return cls(
            origin=(int(data["origin"][0]), int(data["origin"][1])),
            shape=(int(data["shape"][0]), int(data["shape"][1])),
            sources=sources,
            metadata=metadata,
        )


@dataclasses.dataclass
class HierarchicalBlendData:
    """A parent footprint split into child blends (LSST writes one per parent)."""

    children: dict[int, BlendData]
    metadata: dict[str, Any] | None = None

    blend_type = "hierarchical"

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
        _version(data, "hierarchical blend", _KNOWN_OBJECT_VERSIONS)
        _require(data, ("children",), "Hierarchical blend")
        children = {int(k): _blend_from_dict(c, dtype) for k, c in data["children"].items()}
        return cls(children=children, metadata=decode_metadata(data.get("metadata")))


_BLEND_TYPES = {"blend": BlendData, "hierarchical": HierarchicalBlendData}


def _blend_from_dict(data: dict, dtype) -> BlendData | HierarchicalBlendData:
    kind = data.get("blend_type", "blend")
    if kind not in _BLEND_TYPES:
        raise ScarletModelDataError(f"Unknown blend type {kind!r}.")
    return _BLEND_TYPES[kind].from_dict(data, dtype)


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
        version = _version(data, "scarlet model data", _KNOWN_MODEL_VERSIONS)
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type not in (MODEL_TYPE, "scarlet_model"):
            raise ScarletModelDataError(f"Unknown scarlet model type {model_type!r}.")
        metadata = data.get("metadata")
        if version == _PRE_SCHEMA and "psfShape" in data:
            # Pre-schema layout (e.g. LSST v29): the model PSF at top level.
            _require(data, ("psf",), "Pre-schema model data")
            metadata = {
                "model_psf": data["psf"],
                "model_psf_shape": list(data["psfShape"]),
                "array_keys": ["model_psf"],
            }
        metadata = decode_metadata(metadata)
        wanted = None if blend_ids is None else {int(b) for b in blend_ids}
        blends = {}
        for key, blend in data.get("blends", {}).items():
            if wanted is not None and int(key) not in wanted:
                continue
            try:
                blends[int(key)] = _blend_from_dict(blend, dtype)
            except ScarletModelDataError as err:
                raise ScarletModelDataError(f"Blend {key}: {err}") from None
        isolated = {}
        for key, source in data.get("isolated", {}).items():
            if wanted is not None and int(key) not in wanted:
                continue
            try:
                isolated[int(key)] = IsolatedSourceData.from_dict(source, dtype)
            except ScarletModelDataError as err:
                raise ScarletModelDataError(f"Isolated source {key}: {err}") from None
        if wanted is not None:
            missing = wanted - set(blends) - set(isolated)
            if missing:
                raise ScarletModelDataError(f"No blend or isolated source with id(s) {sorted(missing)}.")
        return cls(blends=blends, isolated=isolated, metadata=metadata)
