"""How the values in scarlet model data are written to JSON and read back.

Arrays in metadata are a flat list plus ``<key>_shape`` and ``<key>_dtype``,
with the keys listed in ``array_keys`` (scarlet_lite's ``encode_metadata``);
arrays in the objects (morphologies, spectra, spans) are flat lists whose
shape is stored beside them.
"""

from __future__ import annotations

__all__ = ["encode_metadata", "decode_metadata", "read_array", "require", "int_pair", "float_pair"]

from typing import Any

import numpy as np

from .registries import ScarletModelDataError


def read_array(values: Any, shape: tuple[int, ...], dtype, what: str) -> np.ndarray:
    """``values`` as an array of ``shape`` and ``dtype``, or a `ScarletModelDataError` naming ``what``."""
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except (TypeError, ValueError) as err:
        raise ScarletModelDataError(f"{what}: cannot read an array of shape {shape}: {err}") from None


def require(data: dict, keys: tuple[str, ...], what: str) -> None:
    """Raise a `ScarletModelDataError` naming the ``keys`` that ``data`` lacks."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise ScarletModelDataError(f"{what} is missing {', '.join(repr(k) for k in missing)}.")


def int_pair(values) -> tuple[int, int]:
    """A stored (y, x) origin or shape."""
    return int(values[0]), int(values[1])


def float_pair(values) -> tuple[float, float]:
    """A stored (y, x) peak."""
    return float(values[0]), float(values[1])


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
        decoded[key] = read_array(decoded[key], tuple(shape), dtype, f"metadata {key!r}")
    return decoded
