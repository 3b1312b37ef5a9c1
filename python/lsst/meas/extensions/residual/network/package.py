"""Model packages: trained weights with everything needed to use them.

A model package is ONE zip file (conventionally ``*.zip``) with two members:

``metadata.json``
    UTF-8 JSON object: ``format`` (``"residual-detectron-model"``),
    ``format_version`` (2), the fields of `ModelMetadata` (``name``, ``mode``,
    ``recipe``, ``bands``, ``classes``, ``normalisation``, ``channel_mean``,
    ``channel_std``, ``model``, ``stamp_size``, ``inference``, ``training``,
    ``provenance``, ``metrics``, ``score_calibration``, ``band_subsets``),
    ``channels`` (the channel names, which follow from recipe and bands and
    are checked against them),
    ``weights_dtype`` and ``weights_sha256`` (of the ``weights.pt`` member).
    Any other key is refused.
``weights.pt``
    The model's ``state_dict`` saved by `torch.save` (floating-point tensors
    stored as ``weights_dtype``, float16 by default; loaded as float32).

The metadata can be read without loading the weights (`read_model_metadata`),
e.g. by a Butler formatter or to check that a package fits the data.

Files of an older format version are brought to the current one by the
functions of `MIGRATIONS`, applied in order (as scarlet_lite migrates its
model data); a new layout bumps `PACKAGE_FORMAT_VERSION` and registers the
function that upgrades the previous one.
"""

from __future__ import annotations

__all__ = [
    "PACKAGE_FORMAT",
    "PACKAGE_FORMAT_VERSION",
    "MIGRATIONS",
    "DEFAULT_PACKAGE_INFERENCE",
    "ModelPackageError",
    "ModelMetadata",
    "ModelPackage",
    "migrate_metadata",
    "save_model_package",
    "calibrate_package",
    "model_package_bytes",
    "load_model_package",
    "read_model_metadata",
    "default_model_path",
    "shipped_model_paths",
    "model_path",
    "band_subset_model_path",
    "MODES",
]

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pydantic

from ..bands import check_band_order
from ..configs import StrictModel, validate_config
from ..errors import ConfigError, InputError, MissingInputError
from .calibration import ScoreCalibration, fit_score_calibration, threshold_for_purity
from .inference_config import InferenceConfig
from .model import ModelConfig, build_model
from .recipes import ChannelNormalisation, channel_names, parse_recipe, recipe_needs_model

PACKAGE_FORMAT = "residual-detectron-model"
PACKAGE_FORMAT_VERSION = 3
MODES = ("residual", "image")


def _v1_to_v2(content: dict[str, Any]) -> dict[str, Any]:
    """Version 2 says whether a model takes band subsets (``band_subsets``) and may carry a score
    calibration (``score_calibration``); version 1 models were all trained on their full band list
    and report raw scores."""
    present = sorted({"band_subsets", "score_calibration"} & set(content))
    if present:
        raise ModelPackageError(
            f"A format version 1 package has no {', '.join(present)} entry; this one has."
        )
    return {**content, "score_calibration": None, "band_subsets": False}


def _v2_to_v3(content: dict[str, Any]) -> dict[str, Any]:
    """Version 3 says which pixel scales a model was trained on (``pixel_scales``); every earlier
    model was trained on the simulator's 0.2″ pixels (no training option varied them)."""
    if "pixel_scales" in content:
        raise ModelPackageError("A format version 2 package has no pixel_scales entry; this one has.")
    return {**content, "pixel_scales": [TRAINED_PIXEL_SCALE, TRAINED_PIXEL_SCALE]}


#: ``{format_version: upgrade}``: ``upgrade`` takes the ``metadata.json``
#: content of that version (without ``format``/``format_version``) and
#: returns it in the layout of the next version.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}

#: A package's inference settings where it gives none (packages written
#: before ``class_nms_iou`` existed have no such entry).
DEFAULT_PACKAGE_INFERENCE = InferenceConfig(
    tile_size=512,
    tile_overlap=64,
    score_threshold=0.5,
    merge_ios=0.5,
    class_nms_iou=0.7,
    pixel_scale_tolerance=0.05,
)
#: Arcsec per pixel of the scenes of every model trained before pixel scales were drawn.
TRAINED_PIXEL_SCALE = 0.2

_METADATA_MEMBER = "metadata.json"
_WEIGHTS_MEMBER = "weights.pt"
#: The default package of each mode. ``residual_v2`` (network v2: band subsets, 0.17-0.27" pixels,
#: masked pixels, an artefact class) is shipped too, not the default: trained on a CPU budget, it
#: loses recall of missed sources against ``residual_ugrizy`` on LSST ugrizy patches (the README).
_DEFAULT_MODELS = {"residual": "residual_ugrizy.zip", "image": "image_ugrizy.zip"}


class ModelPackageError(InputError):
    """A model package is unreadable, inconsistent, or does not fit the data."""


class ModelMetadata(StrictModel):
    """Everything about a trained model except its weights.

    Validation checks that the parts fit together: the recipe on the bands
    makes ``model.in_channels`` channels, the model has one output per class
    plus background, and a residual-mode model sees the first-pass model.
    Built directly, bad values raise `pydantic.ValidationError`; read from a
    package (`read_model_metadata`), `ModelPackageError` naming the key.
    ``model_dump(mode="json")`` gives the fields as ``metadata.json`` holds them.
    """

    name: str = pydantic.Field(min_length=1)
    """Name of the model (e.g. ``"residual_ugrizy"``)."""
    mode: Literal[MODES]
    """``"residual"`` (finds the sources the first pass missed) or
    ``"image"`` (finds every source)."""
    recipe: str
    """Channel recipe, e.g. ``"residual+model"`` (see `parse_recipe`)."""
    bands: tuple[str, ...]
    """The bands the model takes, in LSST wavelength order."""
    classes: tuple[str, ...] = pydantic.Field(min_length=1)
    """Class of each network label from 1 (label 0 is background)."""
    normalisation: ChannelNormalisation = ChannelNormalisation()
    """How pixel values become channels."""
    channel_mean: tuple[float, ...] | None = None
    """Per-channel mean subtracted inside the model (given as None: 0 for every channel)."""
    channel_std: tuple[pydantic.PositiveFloat, ...] | None = None
    """Per-channel scale divided out inside the model (given as None: 1 for every channel)."""
    model: ModelConfig
    """The network architecture."""
    stamp_size: int = pydantic.Field(default=128, gt=0)
    """Side of the training stamps."""
    inference: InferenceConfig = DEFAULT_PACKAGE_INFERENCE
    """How the package is run by default: every field set but ``batch_size``
    (a property of the device, not of the model). Fields given as None take
    `DEFAULT_PACKAGE_INFERENCE`'s value."""
    training: dict[str, Any] = pydantic.Field(default_factory=dict)
    """The training configuration (``TrainConfig`` fields)."""
    provenance: dict[str, Any] = pydantic.Field(default_factory=dict)
    """Versions, git commit, dataset seeds, epochs, dates."""
    metrics: dict[str, Any] = pydantic.Field(default_factory=dict)
    """Validation figures."""
    score_calibration: ScoreCalibration | None = None
    """Raw network score → probability that a detection is real (`ScoreCalibration`), fitted on
    held-out scenes; `Detector` reports calibrated scores, and the score threshold is then a
    probability. None: raw scores."""
    band_subsets: bool = False
    """The model takes any non-empty subset of ``bands`` (it was trained with band dropout): a band
    the data lack enters as a plane of bad pixels, 0 in every channel but ``bad`` (1), so the
    recipe needs the ``bad`` channel. False: the data must have every band."""
    pixel_scales: tuple[pydantic.PositiveFloat, pydantic.PositiveFloat] = (
        TRAINED_PIXEL_SCALE,
        TRAINED_PIXEL_SCALE,
    )
    """(min, max) arcsec per pixel of the training scenes. Data whose pixel scale lies further
    outside than ``inference.pixel_scale_tolerance`` (relative) are refused (`check_pixel_scale`)."""

    # Checks that need other fields are on the later field (fields are validated in order), so
    # that an error names that field; they are skipped where the earlier field is itself invalid.
    @pydantic.field_validator("recipe")
    @classmethod
    def _recipe_fits_mode(cls, recipe: str, info: pydantic.ValidationInfo) -> str:
        parse_recipe(recipe)
        if info.data.get("mode") == "residual" and not recipe_needs_model(recipe):
            raise ValueError(f"a residual-mode model needs a residual or model channel; recipe is {recipe!r}")
        return recipe

    @pydantic.field_validator("pixel_scales")
    @classmethod
    def _ordered_scales(cls, scales: tuple[float, float]) -> tuple[float, float]:
        if scales[0] > scales[1]:
            raise ValueError(f"must be (min, max), not {list(scales)}")
        return scales

    @pydantic.field_validator("band_subsets")
    @classmethod
    def _subsets_need_bad_channel(cls, band_subsets: bool, info: pydantic.ValidationInfo) -> bool:
        if band_subsets and "recipe" in info.data and "bad" not in parse_recipe(info.data["recipe"]):
            raise ValueError(
                f"a model taking band subsets needs the 'bad' channel to see which bands it has; "
                f"recipe is {info.data['recipe']!r}"
            )
        return band_subsets

    @pydantic.field_validator("bands")
    @classmethod
    def _ordered_bands(cls, bands: tuple[str, ...]) -> tuple[str, ...]:
        return check_band_order(bands, "Model package bands")

    @pydantic.field_validator("channel_mean", "channel_std")
    @classmethod
    def _one_per_channel(
        cls, values: tuple[float, ...] | None, info: pydantic.ValidationInfo
    ) -> tuple[float, ...] | None:
        if "recipe" not in info.data or "bands" not in info.data:
            return values
        nchan = len(channel_names(info.data["recipe"], info.data["bands"]))
        if values is None:
            return (0.0 if info.field_name == "channel_mean" else 1.0,) * nchan
        if len(values) != nchan:
            raise ValueError(f"{len(values)} values for {nchan} channels")
        return values

    @pydantic.field_validator("model")
    @classmethod
    def _model_fits_data(cls, model: ModelConfig, info: pydantic.ValidationInfo) -> ModelConfig:
        if "recipe" in info.data and "bands" in info.data:
            recipe, bands = info.data["recipe"], info.data["bands"]
            nchan = len(channel_names(recipe, bands))
            if model.in_channels != nchan:
                raise ValueError(
                    f"Model takes {model.in_channels} channels but recipe {recipe!r} on bands "
                    f"{''.join(bands)} makes {nchan}"
                )
        classes = info.data.get("classes")
        if classes is not None and model.num_classes != len(classes) + 1:
            raise ValueError(
                f"Model has {model.num_classes} outputs but the package lists classes "
                f"{list(classes)} (+ background)"
            )
        return model

    @pydantic.field_validator("inference", mode="before")
    @classmethod
    def _complete_inference(cls, inference: Any) -> Any:
        if isinstance(inference, dict):
            return {
                **DEFAULT_PACKAGE_INFERENCE.model_dump(),
                **{key: value for key, value in inference.items() if value is not None},
            }
        if isinstance(inference, InferenceConfig):
            return inference.over(DEFAULT_PACKAGE_INFERENCE)
        return inference

    @pydantic.field_validator("inference")
    @classmethod
    def _no_batch_size(cls, inference: InferenceConfig) -> InferenceConfig:
        if inference.batch_size is not None:
            raise ValueError(
                "a package does not fix batch_size (it depends on the device); give it when running the model"
            )
        if inference.proposals_per_tile is not None:
            raise ValueError(
                "a package's proposals per tile are its model's (model.rpn_post_nms_top_n_test), "
                "not an inference setting"
            )
        for name in ("fit_tiles", "precision"):
            if getattr(inference, name) is not None:
                raise ValueError(
                    f"{name} is a choice of the run, not of a package; give it when running the model"
                )
        return inference

    @pydantic.field_serializer("inference")
    def _inference_without_batch_size(
        self, inference: InferenceConfig, info: pydantic.SerializationInfo
    ) -> dict[str, Any]:
        return inference.model_dump(
            mode=info.mode, exclude={"batch_size", "proposals_per_tile", "fit_tiles", "precision"}
        )

    @pydantic.field_validator("training", "provenance", "metrics", mode="before")
    @classmethod
    def _json_values(cls, value: Any) -> Any:
        # As they will be read back: numpy scalars and arrays become numbers and lists, tuples
        # lists; a value JSON cannot hold is refused now rather than when the package is saved.
        if not isinstance(value, dict):
            return value
        try:
            return json.loads(json.dumps(value, default=_json_default))
        except (TypeError, ValueError) as err:
            raise ValueError(f"not storable as JSON: {err}") from None

    @property
    def channels(self) -> list[str]:
        """Names of the input channels (recipe on bands)."""
        return channel_names(self.recipe, self.bands)

    @property
    def needs_model(self) -> bool:
        """Whether inputs must include the first-pass model cube."""
        return recipe_needs_model(self.recipe)

    # Read-only views of ``inference``, for callers not yet passing an InferenceConfig.
    @property
    def tile_size(self) -> int:
        """``inference.tile_size``."""
        return self.inference.tile_size

    @property
    def tile_overlap(self) -> int:
        """``inference.tile_overlap``."""
        return self.inference.tile_overlap

    @property
    def score_threshold(self) -> float:
        """``inference.score_threshold``."""
        return self.inference.score_threshold

    @property
    def merge_ios(self) -> float:
        """``inference.merge_ios``."""
        return self.inference.merge_ios

    @property
    def class_nms_iou(self) -> float:
        """``inference.class_nms_iou``."""
        return self.inference.class_nms_iou

    def check_pixel_scale(self, pixel_scale: float, tolerance: float | None = None) -> None:
        """Refuse data of ``pixel_scale`` arcsec per pixel beyond ``tolerance`` of `pixel_scales`.

        The network reads sizes and profiles in pixels: on pixels much finer or coarser than it
        was trained on, sources look like other sources (a galaxy like a star) and its scores
        mean something else. ``tolerance``: relative (default: the package's
        ``inference.pixel_scale_tolerance``).

        Raises
        ------
        ModelPackageError
            If the scale is outside ``[min · (1 - tolerance), max · (1 + tolerance)]``.
        """
        tolerance = self.inference.pixel_scale_tolerance if tolerance is None else float(tolerance)
        low, high = self.pixel_scales
        if low * (1.0 - tolerance) <= pixel_scale <= high * (1.0 + tolerance):
            return
        trained = f'{low:g}"' if low == high else f'{low:g}-{high:g}"'
        raise ModelPackageError(
            f"Model package {self.name!r} was trained on pixels of {trained}; the data has "
            f'{pixel_scale:.4g}" pixels, beyond its tolerance of {tolerance:.0%} '
            "(pixel_scale_tolerance, --pixel-scale-tolerance: raise it to run the model anyway)."
        )

    def check_data(self, bands: tuple[str, ...] | list[str], has_model: bool) -> list[int | None]:
        """Check that data with ``bands`` (and a model cube or not) fits this package.

        Returns
        -------
        index : `list` [`int` or `None`]
            Position of each of the package's bands in ``bands``; None for a
            band the data lack (only with `band_subsets`).

        Raises
        ------
        ModelPackageError
            If a band the model needs is missing (any of ``bands``, or with
            `band_subsets` all of them), or the recipe needs a first-pass
            model and none is given.
        """
        bands = tuple(bands)
        missing = [b for b in self.bands if b not in bands]
        if self.band_subsets and len(missing) == len(self.bands):
            raise ModelPackageError(
                f"Model package {self.name!r} takes any of bands {','.join(self.bands)}; the data has "
                f"{','.join(bands) or 'none'}, none of them."
            )
        if missing and not self.band_subsets:
            raise ModelPackageError(
                f"Model package {self.name!r} needs bands {','.join(self.bands)}; the data has "
                f"{','.join(bands) or 'none'} (missing {','.join(missing)}). A package trained on "
                "band subsets takes such data (the shipped 'residual_v2': any bands of ugrizy)."
            )
        if self.needs_model and not has_model:
            raise ModelPackageError(
                f"Model package {self.name!r} uses channel recipe {self.recipe!r}, "
                "which needs the first-pass "
                "(Scarlet) model; none was given."
            )
        return [bands.index(b) if b in bands else None for b in self.bands]


class _FileEntries(StrictModel):
    """The entries of ``metadata.json`` that are not `ModelMetadata` fields."""

    channels: tuple[str, ...] | None = None
    """Channel names as written (checked against recipe and bands)."""
    weights_dtype: Literal["float16", "float32"] | None = None
    """How the floating-point weights are stored."""
    weights_sha256: str | None = pydantic.Field(default=None, pattern="^[0-9a-f]{64}$")
    """Checksum of the ``weights.pt`` member."""


def migrate_metadata(data: dict[str, Any], source: str = "metadata") -> dict[str, Any]:
    """``metadata.json`` content in the current format (without ``format``/``format_version``).

    Raises
    ------
    ModelPackageError
        If it is not a model package's metadata, or of an unknown (e.g. newer) version.
    """
    if data.get("format") != PACKAGE_FORMAT:
        raise ModelPackageError(
            f"{source}: not a ResidualDetectron model package (format {data.get('format')!r})."
        )
    version = data.get("format_version")
    if type(version) is not int or not 1 <= version <= PACKAGE_FORMAT_VERSION:
        raise ModelPackageError(
            f"{source}: package format version {version!r}; this code reads versions 1 to "
            f"{PACKAGE_FORMAT_VERSION} (a newer version needs a newer ResidualDetectron)."
        )
    content = {key: value for key, value in data.items() if key not in ("format", "format_version")}
    for step in range(version, PACKAGE_FORMAT_VERSION):
        content = MIGRATIONS[step](content)
    return content


def _metadata_from_json(data: Any, source: str = "metadata") -> tuple[ModelMetadata, dict[str, Any]]:
    """The `ModelMetadata` of a ``metadata.json`` object, and its weights entries.

    Returns
    -------
    metadata : `ModelMetadata`
        The validated metadata.
    weights : `dict`
        ``weights_dtype`` and ``weights_sha256`` (None where absent).

    Raises
    ------
    ModelPackageError
        If the object is not valid package metadata (naming the key and the problem).
    """
    if not isinstance(data, dict):
        raise ModelPackageError(f"{source}: {_METADATA_MEMBER} is not a JSON object.")
    content = migrate_metadata(data, source)
    file_keys = {key: content.pop(key) for key in _FileEntries.model_fields if key in content}
    try:
        entries = validate_config(_FileEntries, file_keys, source)
        metadata = validate_config(ModelMetadata, content, source)
    except ConfigError as err:
        raise ModelPackageError(str(err)) from None
    if entries.channels is not None and list(entries.channels) != metadata.channels:
        raise ModelPackageError(
            f"{source}: channels {list(entries.channels)} differ from those of recipe "
            f"{metadata.recipe!r} on bands {','.join(metadata.bands)}: {metadata.channels}."
        )
    return metadata, entries.model_dump(exclude={"channels"})


def _metadata_json(metadata: ModelMetadata, weights_dtype: str, weights_sha256: str) -> dict[str, Any]:
    """The ``metadata.json`` object of a package (key order as documented)."""
    fields = metadata.model_dump(mode="json")
    ordered: dict[str, Any] = {"format": PACKAGE_FORMAT, "format_version": PACKAGE_FORMAT_VERSION}
    for key, value in fields.items():
        ordered[key] = value
        if key == "bands":
            ordered["channels"] = metadata.channels
    return {**ordered, "weights_dtype": weights_dtype, "weights_sha256": weights_sha256}


@dataclasses.dataclass
class ModelPackage:
    """A loaded model package: metadata and float32 weights."""

    metadata: ModelMetadata
    state_dict: dict
    path: str | None = None

    def build(self, device: str = "cpu"):
        """The torchvision model with the package's weights, in eval mode on ``device``."""
        meta = self.metadata
        model = build_model(
            meta.model, meta.channel_mean, meta.channel_std, input_size=meta.inference.tile_size
        )
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


def calibrate_package(
    package: ModelPackage, scores: np.ndarray, is_real: np.ndarray, purity: float = 0.92, **fitted_on: Any
) -> ModelPackage:
    """``package`` with a score calibration fitted to held-out detections, and the score threshold
    (now a probability) of the lowest cut whose detections are at least ``purity`` real.

    Parameters
    ----------
    package : `ModelPackage`
        A package reporting raw scores.
    scores, is_real : `numpy.ndarray`
        Raw score of every held-out detection and whether it is real (as
        ``evaluate`` labels them: ``detection_scores.npz``).
    purity : `float`
        Purity the default threshold is chosen for.
    **fitted_on
        Provenance stored with the calibration (scenes, seeds...).

    Raises
    ------
    ModelPackageError
        If the package is calibrated already, or no threshold reaches ``purity``.
    ValueError
        If the detections cannot be fitted (see `fit_score_calibration`).
    """
    meta = package.metadata
    if meta.score_calibration is not None:
        raise ModelPackageError(
            f"Model package {meta.name!r} is calibrated already; fit a calibration to raw scores "
            "(the uncalibrated package's)."
        )
    calibration = fit_score_calibration(scores, is_real, purity=purity, **fitted_on)
    threshold = threshold_for_purity(calibration.apply(scores), is_real, purity)
    if threshold is None:
        raise ModelPackageError(
            f"No score threshold of {meta.name!r} reaches purity {purity:g} on these detections."
        )
    metrics = {
        **meta.metrics,
        "calibration": {"purity": purity, "threshold": threshold, **calibration.fitted_on},
    }
    data = {
        **meta.model_dump(mode="json"),
        "score_calibration": calibration.model_dump(mode="json"),
        "inference": meta.inference.replace(score_threshold=threshold).model_dump(mode="json"),
        "metrics": metrics,
    }
    return ModelPackage(ModelMetadata.model_validate(data), package.state_dict, path=None)


def save_model_package(
    path: str | os.PathLike, metadata: ModelMetadata, state_dict: dict, weights_dtype: str = "float16"
) -> Path:
    """Write a model package (see module docstring).

    Parameters
    ----------
    path : path-like
        Output zip file; replaced if it exists.
    metadata, state_dict, weights_dtype
        As for `model_package_bytes`.
    """
    content = model_package_bytes(metadata, state_dict, weights_dtype)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    return path


def model_package_bytes(metadata: ModelMetadata, state_dict: dict, weights_dtype: str = "float16") -> bytes:
    """A model package zip (see module docstring) as bytes.

    Parameters
    ----------
    metadata : `ModelMetadata`
        Metadata; ``provenance`` gets versions and date added where missing.
    state_dict : `dict`
        The model's ``state_dict``.
    weights_dtype : `str`
        ``"float16"`` (default, half the size) or ``"float32"``.
    """
    import torch

    if weights_dtype not in ("float16", "float32"):
        raise InputError(f"weights_dtype must be float16 or float32, not {weights_dtype!r}.")
    dtype = torch.float16 if weights_dtype == "float16" else torch.float32
    stored = {
        key: value.detach().to("cpu", dtype=dtype) if value.is_floating_point() else value.detach().cpu()
        for key, value in state_dict.items()
    }
    buffer = io.BytesIO()
    torch.save(stored, buffer)
    weights = buffer.getvalue()
    data = _metadata_json(metadata, weights_dtype, hashlib.sha256(weights).hexdigest())
    data["provenance"] = {**default_provenance(), **metadata.provenance}
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(_METADATA_MEMBER, json.dumps(data, indent=2, default=_json_default))
        archive.writestr(_WEIGHTS_MEMBER, weights)
    return content.getvalue()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _open(path: str | os.PathLike | BinaryIO) -> tuple[zipfile.ZipFile, str]:
    if not isinstance(path, (str, os.PathLike)):
        # A seekable binary stream (a Butler formatter's, or io.BytesIO).
        name = getattr(path, "name", None)
        source = name if isinstance(name, str) else "<stream>"
        try:
            return zipfile.ZipFile(path), source
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelPackageError(
                f"{source!r} is not a model package (not a readable zip file: {err})."
            ) from None
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


def _read_metadata(archive: zipfile.ZipFile, source: str) -> tuple[ModelMetadata, dict[str, Any]]:
    if _METADATA_MEMBER not in archive.namelist():
        raise ModelPackageError(f"{source!r} is not a model package: no {_METADATA_MEMBER} member.")
    try:
        data = json.loads(archive.read(_METADATA_MEMBER).decode("utf-8"))
    except (ValueError, zipfile.BadZipFile, OSError) as err:
        raise ModelPackageError(f"{source!r}: {_METADATA_MEMBER} is not valid JSON: {err}") from None
    return _metadata_from_json(data, repr(source))


def read_model_metadata(path: str | os.PathLike | BinaryIO) -> ModelMetadata:
    """The metadata of a package (a file, or a seekable binary stream), without loading its weights."""
    archive, source = _open(path)
    with archive:
        return _read_metadata(archive, source)[0]


def load_model_package(path: str | os.PathLike | BinaryIO) -> ModelPackage:
    """Load a model package (metadata and weights, as float32 on the CPU).

    ``path`` is the package file, or a seekable binary stream holding it.

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
        metadata, entries = _read_metadata(archive, source)
        if _WEIGHTS_MEMBER not in archive.namelist():
            raise ModelPackageError(f"{source!r}: no {_WEIGHTS_MEMBER} member.")
        try:
            weights = archive.read(_WEIGHTS_MEMBER)
        except (zipfile.BadZipFile, OSError) as err:
            raise ModelPackageError(
                f"{source!r}: {_WEIGHTS_MEMBER} is unreadable (corrupt file?): {err}"
            ) from None
    expected = entries["weights_sha256"]
    if expected and hashlib.sha256(weights).hexdigest() != expected:
        raise ModelPackageError(f"{source!r}: weights checksum mismatch (corrupt or modified file).")
    try:
        stored = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad pickles/zips
        raise ModelPackageError(f"{source!r}: weights could not be read: {err}") from None
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    on_disk = source if isinstance(path, (str, os.PathLike)) else None
    package = ModelPackage(metadata=metadata, state_dict=state_dict, path=on_disk)
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


def shipped_model_paths(mode: str = "residual") -> dict[str, Path]:
    """Every model package shipped for ``mode``, by file stem: the default first, then the
    others (earlier versions, still loadable) by name."""
    default = default_model_path(mode)
    others = sorted(p for p in default.parent.glob(f"{mode}_*.zip") if p != default)
    return {path.stem: path for path in (default, *others)}


def model_path(model: str | os.PathLike | None, mode: str = "residual") -> Path:
    """The package file ``model`` names: a path, the name of a shipped package (`shipped_model_paths`,
    e.g. ``residual_v2``), or None for the mode's default.

    Raises
    ------
    MissingInputError
        If it is neither an existing file nor a shipped package's name.
    """
    if model is None:
        return default_model_path(mode)
    path = Path(model)
    if path.exists():
        return path
    shipped = {name: p for m in MODES for name, p in shipped_model_paths(m).items()}
    if str(model) in shipped:
        return shipped[str(model)]
    raise MissingInputError(
        f"Model package {model} does not exist (and is not a shipped one: {', '.join(sorted(shipped))})."
    )


def band_subset_model_path(mode: str = "residual") -> Path | None:
    """The first shipped package of ``mode`` that takes band subsets (network v2), or None."""
    for path in shipped_model_paths(mode).values():
        if read_model_metadata(path).band_subsets:
            return path
    return None
