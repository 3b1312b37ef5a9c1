"""Files of scarlet model data: LSST's ``.scarlet`` zip container and single JSON files.

The container (meas_extensions_scarlet ``io/utils.py``) is a zip archive with
one JSON member per parent blend and per isolated source, named by its id,
plus a ``metadata`` member (the encoded model metadata) and a ``version``
member (a JSON string, ``"1.0.1"``). A single JSON file holds the whole
model-data dict; the older LSST layout (no ``version``, top-level ``psf``
and ``psfShape``) is read too.
"""

from __future__ import annotations

__all__ = ["write_scarlet_model", "read_scarlet_model", "read_model_data"]

import json
import os
import zipfile
from collections.abc import Iterable

import numpy as np

from .model_data import MODEL_DATA_VERSION, ScarletModelData, ScarletModelDataError


def write_scarlet_model(path: str | os.PathLike, model_data: ScarletModelData) -> None:
    """Write ``model_data`` as a ``.scarlet`` zip container."""
    encoded = model_data.as_dict()
    with zipfile.ZipFile(os.fspath(path), "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, blend in encoded["blends"].items():
            archive.writestr(str(key), json.dumps(blend))
        for key, source in encoded["isolated"].items():
            if key in encoded["blends"]:
                raise ScarletModelDataError(f"Id {key} is both a blend and an isolated source.")
            archive.writestr(str(key), json.dumps(source))
        archive.writestr("metadata", json.dumps(encoded["metadata"]))
        archive.writestr("version", json.dumps(MODEL_DATA_VERSION))


def read_scarlet_model(
    path: str | os.PathLike, blend_ids: Iterable[int] | None = None, dtype=np.float32
) -> ScarletModelData:
    """Read a ``.scarlet`` zip container (all blends, or only ``blend_ids``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ScarletModelDataError
        If it is not a readable container or holds an unknown version/type.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Scarlet model file {path!r} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            wanted = None if blend_ids is None else {str(int(b)) for b in blend_ids}
            members = {}
            for name in names:
                if name in ("metadata", "version") or wanted is None or name in wanted:
                    members[name] = json.loads(archive.read(name))
    except zipfile.BadZipFile as err:
        raise ScarletModelDataError(f"{path!r} is not a scarlet model container (zip): {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScarletModelDataError(f"{path!r} has a member that is not valid JSON: {err}") from None
    if wanted is not None and wanted - set(members):
        raise ScarletModelDataError(
            f"{path!r} has no blend(s) {sorted(int(w) for w in wanted - set(members))}."
        )
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
            raise ScarletModelDataError(f"{path!r}: member {name!r} is not a JSON object.")
        try:
            key = int(name)
        except ValueError:
            raise ScarletModelDataError(f"{path!r}: unexpected member {name!r}.") from None
        if "blend_type" in member:
            data["blends"][key] = member
        elif member.get("source_type") == "isolated":
            data["isolated"][key] = member
        else:
            raise ScarletModelDataError(
                f"{path!r}: member {name!r} is neither a blend nor an isolated source."
            )
    try:
        return ScarletModelData.from_dict(data, dtype=dtype)
    except ScarletModelDataError as err:
        raise ScarletModelDataError(f"{path!r}: {err}") from None


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
