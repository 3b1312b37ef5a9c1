"""Model packages: trained weights with everything needed to use them.

A model package is ONE zip file (conventionally ``*.zip``) with two members:

``metadata.json``
    UTF-8 JSON object (see `ModelMetadata`): ``format``
    (``"residual-detectron-model"``), ``format_version`` (1), ``name``,
    ``mode`` (``"residual"`` or ``"image"``), ``recipe`` (channel recipe,
    e.g. ``"residual+model"``), ``bands``, ``channels`` (channel names),
    ``classes`` (e.g. ``["star", "galaxy"]``; label 0 is background),
    ``normalisation`` (`ChannelNormalisation` fields), ``channel_mean`` and
    ``channel_std`` (per-channel standardisation done inside the model),
    ``model`` (`ModelConfig` fields), ``stamp_size`` (training stamp side),
    ``inference`` (defaults: ``tile_size``, ``tile_overlap``,
    ``score_threshold``, ``merge_ios``, ``class_nms_iou``), ``training`` (the training
    configuration), ``provenance`` (versions, git commit, dataset seeds,
    epochs, dates), ``metrics`` (validation figures), ``weights_dtype`` and
    ``weights_sha256`` (of the ``weights.pt`` member).
``weights.pt``
    The model's ``state_dict`` saved by `torch.save` (floating-point tensors
    stored as ``weights_dtype``, float16 by default; loaded as float32).

The metadata can be read without loading the weights (`read_model_metadata`),
e.g. by a Butler formatter or to check that a package fits the data.
"""

from __future__ import annotations

__all__ = [
    "PACKAGE_FORMAT",
    "PACKAGE_FORMAT_VERSION",
    "ModelPackageError",
    "ModelMetadata",
    "ModelPackage",
    "save_model_package",
    "load_model_package",
    "read_model_metadata",
    "default_model_path",
    "MODES",
]

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import check_band_order
from .model import ModelConfig, build_model
from .recipes import ChannelNormalisation, channel_names, parse_recipe, recipe_needs_model

PACKAGE_FORMAT = "residual-detectron-model"
PACKAGE_FORMAT_VERSION = 1
MODES = ("residual", "image")

_METADATA_MEMBER = "metadata.json"
_WEIGHTS_MEMBER = "weights.pt"
_DEFAULT_MODELS = {"residual": "residual_ugrizy.zip", "image": "image_ugrizy.zip"}


class ModelPackageError(ValueError):
    """A model package is unreadable, inconsistent, or does not fit the data."""


@dataclasses.dataclass
class ModelMetadata:
    """Everything about a trained model except its weights."""

    name: str
    mode: str
    recipe: str
    bands: tuple[str, ...]
    classes: tuple[str, ...]
    model: ModelConfig
    normalisation: ChannelNormalisation = dataclasses.field(default_factory=ChannelNormalisation)
    channel_mean: list[float] | None = None
    channel_std: list[float] | None = None
    stamp_size: int = 128
    tile_size: int = 512
    tile_overlap: int = 64
    score_threshold: float = 0.5
    merge_ios: float = 0.5
    class_nms_iou: float = 0.7
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ModelPackageError(f"Unknown model mode {self.mode!r}; choose one of {', '.join(MODES)}.")
        try:
            parse_recipe(self.recipe)
            self.bands = check_band_order(tuple(self.bands), "Model package bands")
        except ValueError as err:
            raise ModelPackageError(str(err)) from None
        self.classes = tuple(self.classes)
        if self.mode == "residual" and not recipe_needs_model(self.recipe):
            raise ModelPackageError(
                f"A residual-mode model needs a residual or model channel; recipe is {self.recipe!r}."
            )
        nchan = len(self.channels)
        if self.model.in_channels != nchan:
            raise ModelPackageError(
                f"Model takes {self.model.in_channels} channels but recipe {self.recipe!r} on bands "
                f"{''.join(self.bands)} makes {nchan}."
            )
        if self.model.num_classes != len(self.classes) + 1:
            raise ModelPackageError(
                f"Model has {self.model.num_classes} outputs but the package lists classes {self.classes} "
                "(+ background)."
            )
        for key in ("channel_mean", "channel_std"):
            values = getattr(self, key)
            if values is None:
                setattr(self, key, [0.0 if key == "channel_mean" else 1.0] * nchan)
            elif len(values) != nchan:
                raise ModelPackageError(f"{key} has {len(values)} values for {nchan} channels.")
        if not all(v > 0 for v in self.channel_std):
            raise ModelPackageError("channel_std values must be positive.")
        if self.tile_overlap < 0 or self.tile_overlap >= self.tile_size:
            raise ModelPackageError(
                f"tile_overlap must be in [0, tile_size); got {self.tile_overlap}, {self.tile_size}."
            )

    @property
    def inference(self):
        """The package's inference settings (interim: built from the flat fields)."""
        from .inference_config import InferenceConfig

        return InferenceConfig(
            tile_size=self.tile_size,
            tile_overlap=self.tile_overlap,
            score_threshold=self.score_threshold,
            merge_ios=self.merge_ios,
            class_nms_iou=self.class_nms_iou,
        )

    @property
    def channels(self) -> list[str]:
        return channel_names(self.recipe, self.bands)

    @property
    def needs_model(self) -> bool:
        """Whether inputs must include the first-pass model cube."""
        return recipe_needs_model(self.recipe)

    def check_data(self, bands: tuple[str, ...] | list[str], has_model: bool) -> list[int]:
        """Check that data with ``bands`` (and a model cube or not) fits this package.

        Returns
        -------
        index : `list` [`int`]
            Position of each of the package's bands in ``bands``.

        Raises
        ------
        ModelPackageError
            If a band the model needs is missing, or the recipe needs a
            first-pass model and none is given.
        """
        bands = tuple(bands)
        missing = [b for b in self.bands if b not in bands]
        if missing:
            raise ModelPackageError(
                f"Model package {self.name!r} needs bands {','.join(self.bands)}; the data has "
                f"{','.join(bands) or 'none'} (missing {','.join(missing)})."
            )
        if self.needs_model and not has_model:
            raise ModelPackageError(
                f"Model package {self.name!r} uses channel recipe {self.recipe!r}, "
                "which needs the first-pass "
                "(Scarlet) model; none was given."
            )
        return [bands.index(b) for b in self.bands]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PACKAGE_FORMAT,
            "format_version": PACKAGE_FORMAT_VERSION,
            "name": self.name,
            "mode": self.mode,
            "recipe": self.recipe,
            "bands": list(self.bands),
            "channels": self.channels,
            "classes": list(self.classes),
            "normalisation": self.normalisation.to_dict(),
            "channel_mean": [float(v) for v in self.channel_mean],
            "channel_std": [float(v) for v in self.channel_std],
            "model": self.model.to_dict(),
            "stamp_size": self.stamp_size,
            "inference": {
                "tile_size": self.tile_size,
                "tile_overlap": self.tile_overlap,
                "score_threshold": self.score_threshold,
                "merge_ios": self.merge_ios,
                "class_nms_iou": self.class_nms_iou,
            },
            "training": self.training,
            "provenance": self.provenance,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metadata") -> ModelMetadata:
        if data.get("format") != PACKAGE_FORMAT:
            raise ModelPackageError(
                f"{source}: not a ResidualDetectron model package (format {data.get('format')!r})."
            )
        version = data.get("format_version")
        if version != PACKAGE_FORMAT_VERSION:
            raise ModelPackageError(
                f"{source}: package format version {version}; "
                f"this code reads version {PACKAGE_FORMAT_VERSION}."
            )
        try:
            inference = data.get("inference", {})
            return cls(
                name=data["name"],
                mode=data["mode"],
                recipe=data["recipe"],
                bands=tuple(data["bands"]),
                classes=tuple(data["classes"]),
                model=ModelConfig.from_dict(data["model"]),
                normalisation=ChannelNormalisation.from_dict(data.get("normalisation", {})),
                channel_mean=data.get("channel_mean"),
                channel_std=data.get("channel_std"),
                stamp_size=int(data.get("stamp_size", 128)),
                tile_size=int(inference.get("tile_size", 512)),
                tile_overlap=int(inference.get("tile_overlap", 64)),
                score_threshold=float(inference.get("score_threshold", 0.5)),
                merge_ios=float(inference.get("merge_ios", 0.5)),
                class_nms_iou=float(inference.get("class_nms_iou", 0.7)),
                training=data.get("training", {}),
                provenance=data.get("provenance", {}),
                metrics=data.get("metrics", {}),
            )
        except KeyError as err:
            raise ModelPackageError(f"{source}: metadata has no {err.args[0]!r} entry.") from None
        except ModelPackageError as err:
            raise ModelPackageError(f"{source}: {err}") from None
        except (TypeError, ValueError) as err:
            raise ModelPackageError(f"{source}: invalid metadata: {err}") from None


@dataclasses.dataclass
class ModelPackage:
    """A loaded model package: metadata and float32 weights."""

    metadata: ModelMetadata
    state_dict: dict
    path: str | None = None

    def build(self, device: str = "cpu"):
        """The torchvision model with the package's weights, in eval mode on ``device``."""
        meta = self.metadata
        model = build_model(meta.model, meta.channel_mean, meta.channel_std, input_size=meta.tile_size)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as err:
            detail = str(err).splitlines()
            raise ModelPackageError(
                f"Weights of package {meta.name!r} do not fit its model configuration: "
                f"{' '.join(line.strip() for line in detail[:3])}"
            ) from None
        return model.to(device).eval()


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def default_provenance() -> dict[str, Any]:
    """Versions and date to record in a new package."""
    import datetime

    import torch
    import torchvision

    from .. import __version__

    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
    }


def save_model_package(
    path: str | os.PathLike, metadata: ModelMetadata, state_dict: dict, weights_dtype: str = "float16"
) -> Path:
    """Write a model package (see module docstring).

    Parameters
    ----------
    path : path-like
        Output zip file; replaced if it exists.
    metadata : `ModelMetadata`
        Metadata; ``provenance`` gets versions and date added where missing.
    state_dict : `dict`
        The model's ``state_dict``.
    weights_dtype : `str`
        ``"float16"`` (default, half the size) or ``"float32"``.
    """
    import torch

    if weights_dtype not in ("float16", "float32"):
        raise ValueError(f"weights_dtype must be float16 or float32, not {weights_dtype!r}.")
    dtype = torch.float16 if weights_dtype == "float16" else torch.float32
    stored = {
        key: value.detach().to("cpu", dtype=dtype) if value.is_floating_point() else value.detach().cpu()
        for key, value in state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    weights = buffer.getvalue()
    data = metadata.to_dict()
    data["provenance"] = {**default_provenance(), **metadata.provenance}
    data["weights_dtype"] = weights_dtype
    data["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_METADATA_MEMBER, json.dumps(data, indent=2, default=_json_default))
        archive.writestr(_WEIGHTS_MEMBER, weights)
    os.replace(tmp, path)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _open(path: str | os.PathLike) -> tuple[zipfile.ZipFile, str]:
    source = os.fspath(path)
    if os.path.isdir(source):
        raise ModelPackageError(f"{source!r} is a directory; a model package is one zip file.")
    if not os.path.exists(source):
        raise FileNotFoundError(f"Model package {source!r} does not exist.")
    try:
        return zipfile.ZipFile(source), source
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelPackageError(
            f"{source!r} is not a model package (not a readable zip file: {err})."
        ) from None


def _read_metadata(archive: zipfile.ZipFile, source: str) -> tuple[ModelMetadata, dict]:
    if _METADATA_MEMBER not in archive.namelist():
        raise ModelPackageError(f"{source!r} is not a model package: no {_METADATA_MEMBER} member.")
    try:
        data = json.loads(archive.read(_METADATA_MEMBER).decode("utf-8"))
    except (ValueError, zipfile.BadZipFile, OSError) as err:
        raise ModelPackageError(f"{source!r}: {_METADATA_MEMBER} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ModelPackageError(f"{source!r}: {_METADATA_MEMBER} is not a JSON object.")
    return ModelMetadata.from_dict(data, source=repr(source)), data


def read_model_metadata(path: str | os.PathLike) -> ModelMetadata:
    """The metadata of a package, without loading its weights."""
    archive, source = _open(path)
    with archive:
        return _read_metadata(archive, source)[0]


def load_model_package(path: str | os.PathLike) -> ModelPackage:
    """Load a model package (metadata and weights, as float32 on the CPU).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ModelPackageError
        If the file is not a package, is corrupt (checksum), or its weights
        do not fit its metadata.
    """
    import torch

    archive, source = _open(path)
    with archive:
        metadata, data = _read_metadata(archive, source)
        if _WEIGHTS_MEMBER not in archive.namelist():
            raise ModelPackageError(f"{source!r}: no {_WEIGHTS_MEMBER} member.")
        try:
            weights = archive.read(_WEIGHTS_MEMBER)
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelPackageError(
                f"{source!r}: {_WEIGHTS_MEMBER} is unreadable (corrupt file?): {err}"
            ) from None
    expected = data.get("weights_sha256")
    if expected and hashlib.sha256(weights).hexdigest() != expected:
        raise ModelPackageError(f"{source!r}: weights checksum mismatch (corrupt or modified file).")
    try:
        stored = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad pickles/zips
        raise ModelPackageError(f"{source!r}: weights could not be read: {err}") from None
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    package = ModelPackage(metadata=metadata, state_dict=state_dict, path=source)
    package.build("cpu")  # raises ModelPackageError if the weights do not fit the architecture
    return package


def default_model_path(mode: str = "residual") -> Path:
    """Path of the model package shipped with this package for ``mode``.

    Raises
    ------
    ValueError
        If ``mode`` is unknown.
    FileNotFoundError
        If the shipped package is missing (an incomplete installation).
    """
    if mode not in _DEFAULT_MODELS:
        raise ValueError(f"Unknown model mode {mode!r}; choose one of {', '.join(_DEFAULT_MODELS)}.")
    path = Path(__file__).resolve().parent.parent / "data" / "models" / _DEFAULT_MODELS[mode]
    if not path.exists():
        raise FileNotFoundError(f"The shipped {mode}-mode model package {path} is missing.")
    return path
