"""Files of scarlet model data: LSST's ``.scarlet`` zip container and single JSON files.

The container (meas_extensions_scarlet ``io/utils.py``) is a zip archive with
one JSON member per parent blend and per isolated source, named by its id,
plus a ``metadata`` member (the encoded model metadata) and a ``version``
member (a JSON string, ``"1.0.1"``). A single JSON file holds the whole
model-data dict; the older LSST layout (no ``version``, top-level ``psf``
and ``psfShape``) is read too.

The container functions take a path or an open binary stream (a Butler
formatter's, or `io.BytesIO`); `scarlet_model_to_bytes` gives the container
as bytes. A stream needs to be seekable, as every zip reader needs.
"""

from __future__ import annotations

__all__ = ["write_scarlet_model", "scarlet_model_to_bytes", "read_scarlet_model", "read_model_data"]

import io
import json
import os
import zipfile
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np

from .model_data import MODEL_DATA_VERSION, ScarletModelData, ScarletModelDataError

PathOrStream = str | os.PathLike | BinaryIO
"""Where a container is read from or written to."""


def _describe(source: PathOrStream) -> str:
    """How error messages name ``source``."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    name = getattr(source, "name", None)
    return repr(name) if isinstance(name, str) else "the stream"


def write_scarlet_model(destination: PathOrStream, model_data: ScarletModelData) -> None:
    """Write ``model_data`` as a ``.scarlet`` zip container.

    Parameters
    ----------
    destination : path-like or binary stream
        File to write (replaced if it exists) or a writable binary stream.
    model_data : `ScarletModelData`
        What to write.

    Raises
    ------
    ScarletModelDataError
        If an id is both a blend and an isolated source.
    """
    encoded = model_data.as_dict()
    clash = set(encoded["blends"]) & set(encoded["isolated"])
    if clash:
        raise ScarletModelDataError(
            f"Id(s) {sorted(int(k) for k in clash)} are both blends and isolated sources."
        )
    target = os.fspath(destination) if isinstance(destination, (str, os.PathLike)) else destination
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, blend in encoded["blends"].items():
            archive.writestr(str(key), json.dumps(blend))
        for key, source in encoded["isolated"].items():
            archive.writestr(str(key), json.dumps(source))
        archive.writestr("metadata", json.dumps(encoded["metadata"]))
        archive.writestr("version", json.dumps(MODEL_DATA_VERSION))


def scarlet_model_to_bytes(model_data: ScarletModelData) -> bytes:
    """The ``.scarlet`` container of ``model_data`` as bytes (what `write_scarlet_model` writes)."""
    buffer = io.BytesIO()
    write_scarlet_model(buffer, model_data)
    return buffer.getvalue()


def read_scarlet_model(
    source: PathOrStream, blend_ids: Iterable[int] | None = None, dtype=np.float32
) -> ScarletModelData:
    """Read a ``.scarlet`` zip container (all blends, or only ``blend_ids``).

    Parameters
    ----------
    source : path-like or binary stream
        The container file, or a seekable binary stream holding it.
    blend_ids : iterable of `int`, optional
        Read only the members of these parent blends or isolated sources
        (and the metadata); the other members are not decompressed.
    dtype : numpy dtype
        Dtype of the arrays.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ScarletModelDataError
        If it is not a readable container, holds an unknown version/type, or
        has no member for one of ``blend_ids``.
    """
    what = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if not os.path.exists(source):
            raise FileNotFoundError(f"Scarlet model file {what} does not exist.")
    wanted = None if blend_ids is None else {str(int(b)) for b in blend_ids}
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if wanted is not None and wanted - set(names):
                raise ScarletModelDataError(
                    f"{what} has no blend(s) {sorted(int(w) for w in wanted - set(names))}."
                )
            members = {
                name: json.loads(archive.read(name))
                for name in names
                if name in ("metadata", "version", "psf", "psf_shape") or wanted is None or name in wanted
            }
    except zipfile.BadZipFile as err:
        raise ScarletModelDataError(f"{what} is not a scarlet model container (zip): {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScarletModelDataError(f"{what} has a member that is not valid JSON: {err}") from None
    data: dict = {"blends": {}, "isolated": {}}
    if "version" in members:
        data["version"] = members.pop("version")
    if "metadata" in members:
        data["metadata"] = members.pop("metadata")
    elif "psf" in members:
        # Legacy containers stored the model PSF as two members.
        data["psf"] = members.pop("psf")
        data["psfShape"] = members.pop("psf_shape", None)
    for name, member in members.items():
        if not isinstance(member, dict):
            raise ScarletModelDataError(f"{what}: member {name!r} is not a JSON object.")
        try:
            key = int(name)
        except ValueError:
            raise ScarletModelDataError(f"{what}: unexpected member {name!r}.") from None
        if "blend_type" in member:
            data["blends"][key] = member
        elif member.get("source_type") == "isolated":
            data["isolated"][key] = member
        else:
            raise ScarletModelDataError(f"{what}: member {name!r} is neither a blend nor an isolated source.")
    try:
        return ScarletModelData.from_dict(data, dtype=dtype)
    except ScarletModelDataError as err:
        raise ScarletModelDataError(f"{what}: {err}") from None


def read_model_data(path: str | os.PathLike, blend_ids: Iterable[int] | None = None) -> ScarletModelData:
    """Read scarlet model data from a ``.scarlet`` container or a JSON file (any known layout)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Scarlet model file {path!r} does not exist.")
    if zipfile.is_zipfile(path):
        return read_scarlet_model(path, blend_ids)
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScarletModelDataError(f"{path!r} is neither a scarlet zip container nor JSON: {err}") from None
    try:
        return ScarletModelData.from_dict(data, blend_ids=blend_ids)
    except ScarletModelDataError as err:
        raise ScarletModelDataError(f"{path!r}: {err}") from None
