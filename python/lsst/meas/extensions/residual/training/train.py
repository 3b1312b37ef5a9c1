"""Train a model package: data generation, training loop, validation, packaging.

``train(config, out_dir)`` runs the whole job:

1. generate (or reuse) the cached training and validation sets
   (`generate_dataset`; validation scenes use their own seed range);
2. build the model (`build_model`) with per-channel standardisation measured
   on the training set;
3. train with AdamW, linear warm-up then cosine decay, gradient clipping, AMP
   on CUDA; batches are random augmented stamps whose content depends only on
   (seed, epoch, step), and the torch RNG state is checkpointed, so a run
   resumed from ``checkpoint.pt`` continues exactly;
4. after each epoch, run the model on the whole validation scenes (tiled
   inference) and compute precision, recall and F1 along a score grid
   (`groundtruth.metrics`); keep the weights with the best F1;
5. write ``model.zip`` (the model package, with the validation threshold at
   which precision ≥ 90% gives the best recall as its default score
   threshold), ``history.json`` and ``training.png``.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "OptimizerConfig", "train", "load_train_config", "validate"]

import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic

from ..configs import StrictModel, make_config, validate_config
from ..errors import ConfigError
from ..groundtruth.labels import ARTEFACT_CLASS, CLASSES
from ..network.inference_config import InferenceConfig
from ..network.model import ModelConfig, build_model, set_input_size
from ..network.package import ModelMetadata, ModelPackage, save_model_package
from ..network.recipes import channel_names, parse_recipe
from .dataset import (
    AugmentConfig,
    BandDropout,
    DatasetConfig,
    StampSampler,
    code_digest,
    generate_dataset,
    load_dataset,
)

_log = logging.getLogger(__name__)


class OptimizerConfig(StrictModel):
    """AdamW with linear warm-up, then cosine decay."""

    lr: float = pydantic.Field(default=1e-3, gt=0.0)
    """Peak learning rate (reached at the end of the warm-up)."""
    weight_decay: float = pydantic.Field(default=1e-4, ge=0.0)
    """AdamW's decoupled weight decay."""
    warmup_steps: int = pydantic.Field(default=300, ge=0)
    """Steps of the linear warm-up from ``lr``/warmup_steps to ``lr``."""
    grad_clip: float = pydantic.Field(default=10.0, gt=0.0)
    """Gradients are clipped to this total norm."""
    final_lr_fraction: float = pydantic.Field(default=0.05, ge=0.0, le=1.0)
    """The cosine decay ends at this fraction of ``lr``."""


class TrainConfig(StrictModel):
    """A training job (the YAML file of ``residual-detectron train``)."""

    name: str = pydantic.Field(default="residual_ugrizy", min_length=1)
    """Name of the model package."""
    mode: Literal["residual", "image"] = "residual"
    """``"residual"`` (missed sources) or ``"image"`` (direct detection)."""
    seed: int = 1234
    """Seed of the weight initialisation and of the stamp sampling."""
    cache_dir: str = "data_cache"
    """Root of the dataset cache (relative paths: to the working directory)."""
    dataset: DatasetConfig = DatasetConfig()
    """The training set. Its labels follow the job's ``mode`` unless it says otherwise."""
    validation: dict[str, Any] = pydantic.Field(default_factory=lambda: {"n_scenes": 16, "seed": 900_000})
    """Fields of the validation `DatasetConfig` that differ from ``dataset``
    (its seeds must not overlap the training seeds)."""
    model: dict[str, Any] = pydantic.Field(default_factory=dict)
    """`ModelConfig` fields (``in_channels``/``num_classes`` come from the recipe and classes)."""
    stamp_size: int = pydantic.Field(default=128, gt=0, multiple_of=32)
    """Side of the training stamps, a multiple of 32, at most the scene size."""
    batch_size: int = pydantic.Field(default=4, ge=1)
    """Stamps per training step."""
    epochs: int = pydantic.Field(default=10, ge=1)
    """Epochs (a validation run after each)."""
    steps_per_epoch: int = pydantic.Field(default=1000, ge=1)
    """Training steps per epoch."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimizer and learning-rate schedule."""
    augment: AugmentConfig = AugmentConfig()
    """Augmentation of the training stamps."""
    focus: dict[str, Annotated[float, pydantic.Field(ge=0.0, le=1.0)]] = pydantic.Field(default_factory=dict)
    """Fraction of stamps centred near a label of a class, e.g. ``{star: 0.3}``
    (stars are ~10% of the sources: without this the classifier calls most
    faint stars galaxies)."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: bool = True
    """Mixed precision on CUDA (ignored on CPU)."""
    num_threads: int | None = pydantic.Field(default=None, ge=1)
    """torch CPU threads (default: torch's choice)."""
    match_radius: float = pydantic.Field(default=3.0, gt=0.0)
    """Pixels within which a detection matches a true source (validation)."""
    inference: InferenceConfig = InferenceConfig(tile_size=512, tile_overlap=64, merge_ios=0.5)
    """The package's inference settings (None: the package defaults). The
    score threshold is chosen on the validation scenes (``target_precision``)
    and the batch size when the package is run, so neither is given here."""
    target_precision: float = pydantic.Field(default=0.9, gt=0.0, le=1.0)
    """The package's score threshold is the validation threshold with the best
    recall at this precision (the best-F1 threshold if none reaches it)."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _labels_follow_mode(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode, dataset = data.get("mode", "residual"), data.get("dataset", {})
        if (
            mode in ("residual", "image")
            and isinstance(dataset, dict)
            and isinstance(dataset.get("labels", {}), dict)
        ):
            labels = {"mode": mode, **dataset.get("labels", {})}
            data = {**data, "dataset": {**dataset, "labels": labels}}
        return data

    # Checks that need other fields are on the later field (fields are validated in order), so
    # that an error names that field; they are skipped where the earlier field is itself invalid.
    @pydantic.field_validator("dataset")
    @classmethod
    def _labels_of_the_mode(cls, dataset: DatasetConfig, info: pydantic.ValidationInfo) -> DatasetConfig:
        mode = info.data.get("mode")
        if mode is not None and dataset.labels.mode != mode:
            raise ValueError(
                f"the job's mode is {mode!r} but the dataset's labels are {dataset.labels.mode!r}"
            )
        return dataset

    @pydantic.field_validator("validation")
    @classmethod
    def _held_out_dataset(cls, validation: dict[str, Any], info: pydantic.ValidationInfo) -> dict[str, Any]:
        unknown = sorted(set(validation) - set(DatasetConfig.model_fields))
        if unknown:
            raise ValueError(f"not DatasetConfig fields: {', '.join(unknown)}")
        if "dataset" in info.data:
            _validation_dataset(info.data["dataset"], validation)
        return validation

    @pydantic.field_validator("model")
    @classmethod
    def _architecture(cls, model: dict[str, Any], info: pydantic.ValidationInfo) -> dict[str, Any]:
        derived = sorted(set(model) & {"in_channels", "num_classes"})
        if derived:
            raise ValueError(f"{', '.join(derived)} follow from the recipe, bands and classes; remove them")
        if "dataset" in info.data:
            _network_config(info.data["dataset"], model)
        return model

    @pydantic.field_validator("stamp_size")
    @classmethod
    def _stamp_in_scene(cls, stamp_size: int, info: pydantic.ValidationInfo) -> int:
        dataset = info.data.get("dataset")
        if dataset is not None and stamp_size > dataset.scene_size:
            raise ValueError(f"{stamp_size} exceeds the dataset's scene_size ({dataset.scene_size})")
        return stamp_size

    @pydantic.field_validator("augment")
    @classmethod
    def _dropout_needs_bad_channel(
        cls, augment: AugmentConfig, info: pydantic.ValidationInfo
    ) -> AugmentConfig:
        dataset = info.data.get("dataset")
        if augment.band_dropout > 0 and dataset is not None and "bad" not in parse_recipe(dataset.recipe):
            raise ValueError(
                f"band_dropout needs the 'bad' channel in the dataset's recipe (e.g. "
                f"'{dataset.recipe}+bad'), so that the model sees which bands it lacks"
            )
        return augment

    def band_dropout(self) -> BandDropout | None:
        """The stamps' `BandDropout`: with a ``bad`` channel in the recipe (so that no augmentation
        noise goes into it, even at ``augment.band_dropout`` 0), else None."""
        if "bad" not in parse_recipe(self.dataset.recipe):
            return None
        return BandDropout(
            kinds=parse_recipe(self.dataset.recipe),
            nbands=len(self.dataset.bands),
            snr_cut=self.dataset.labels.snr_cut,
            probability=self.augment.band_dropout,
        )

    @pydantic.field_validator("focus")
    @classmethod
    def _known_classes(cls, focus: dict[str, float], info: pydantic.ValidationInfo) -> dict[str, float]:
        dataset = info.data.get("dataset")
        classes = CLASSES if dataset is None else dataset.labels.classes
        unknown = sorted(set(focus) - set(classes))
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; classes are {list(classes)}")
        if sum(focus.values()) > 1:
            raise ValueError(f"fractions must sum to at most 1, not {sum(focus.values())}")
        return focus

    @pydantic.field_validator("inference")
    @classmethod
    def _package_settings_only(cls, inference: InferenceConfig) -> InferenceConfig:
        if inference.score_threshold is not None:
            raise ValueError("score_threshold is chosen on the validation scenes (see target_precision)")
        if inference.batch_size is not None:
            raise ValueError("batch_size is not part of a package (give it when running the model)")
        return inference

    def validation_dataset(self) -> DatasetConfig:
        """The validation set: ``dataset`` with ``validation``'s fields."""
        return _validation_dataset(self.dataset, self.validation)

    def network_config(self) -> ModelConfig:
        """The architecture: ``model``'s fields with the channels and classes of the data."""
        return _network_config(self.dataset, self.model)


def _validation_dataset(dataset: DatasetConfig, validation: dict[str, Any]) -> DatasetConfig:
    """``dataset`` with ``validation``'s fields, named ``<name>-val``.

    Raises
    ------
    ConfigError
        If the fields are invalid or its scene seeds overlap the training seeds.
    """
    fields = {**dataset.model_dump(), "name": f"{dataset.name}-val", **validation}
    config = make_config(DatasetConfig, "validation dataset", **fields)
    if max(dataset.seed, config.seed) < min(dataset.seed + dataset.n_scenes, config.seed + config.n_scenes):
        raise ConfigError(
            f"validation scene seeds {config.seed}..{config.seed + config.n_scenes - 1} overlap the "
            f"training seeds {dataset.seed}..{dataset.seed + dataset.n_scenes - 1}; "
            "give validation its own seed"
        )
    return config


def _network_config(dataset: DatasetConfig, model: dict[str, Any]) -> ModelConfig:
    channels = len(channel_names(dataset.recipe, dataset.bands))
    classes = dataset.labels.classes
    return make_config(ModelConfig, "model", **model, in_channels=channels, num_classes=len(classes) + 1)


def load_train_config(path: str | os.PathLike) -> TrainConfig:
    """Read a training YAML file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ConfigError
        If it is not valid YAML or has unknown or invalid keys (each named).
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Training config {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return validate_config(TrainConfig, data, str(path))


def _lr_factor(step: int, total: int, config: OptimizerConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.final_lr_fraction + (1 - config.final_lr_fraction) * cosine


def _metadata(config: TrainConfig, mean, std, score_threshold: float, provenance, metrics) -> ModelMetadata:
    return ModelMetadata(
        name=config.name,
        mode=config.mode,
        recipe=config.dataset.recipe,
        bands=config.dataset.bands,
        classes=config.dataset.labels.classes,
        model=config.network_config(),
        normalisation=config.dataset.normalisation,
        channel_mean=[float(v) for v in mean],
        channel_std=[float(v) for v in std],
        stamp_size=config.stamp_size,
        inference=config.inference.replace(score_threshold=float(score_threshold)),
        training=config.model_dump(mode="json"),
        provenance=provenance,
        metrics=metrics,
        band_subsets=config.augment.band_dropout > 0,
        pixel_scales=_trained_pixel_scales(config.dataset),
    )


def _trained_pixel_scales(dataset: DatasetConfig) -> tuple[float, float]:
    """(min, max) arcsec per pixel of a dataset's scenes."""
    simulation = dataset.simulation()
    return simulation.pixel_scale_range or (simulation.pixel_scale, simulation.pixel_scale)


def validate(detector, records, mode: str, match_radius: float) -> dict[str, Any]:
    """Precision/recall/F1 curves of a detector on cached validation scenes.

    The curves score sources: detections of the class ``artefact`` (a model
    trained with artefact targets) claim no source, so they neither match
    one nor count against the precision; their number is reported.
    """
    from ..groundtruth.metrics import (
        DEFAULT_THRESHOLDS,
        CurveCounts,
        count_curve,
        curve_metrics,
        precision_at_recall,
        recall_at_precision,
    )

    thresholds = DEFAULT_THRESHOLDS
    total = CurveCounts.zeros(thresholds)
    classes = tuple(detector.metadata.classes)
    source_classes = [c for c, name in enumerate(classes, start=1) if name != ARTEFACT_CLASS]
    per_class = {c: CurveCounts.zeros(thresholds) for c in source_classes}
    n_artefact_detections = 0
    size = min(records[0].channels.shape[1:])
    tile = max(32, int(math.ceil(size / 32)) * 32)
    for record in records:
        found = detector.find_channels(
            record.channels,
            inference=InferenceConfig(
                tile_size=tile, tile_overlap=min(64, tile // 4), score_threshold=float(thresholds[0])
            ),
        )
        is_artefact = np.asarray(found.table["class"]).astype(str) == ARTEFACT_CLASS
        n_artefact_detections += int(np.count_nonzero(is_artefact))
        found = found.select(~is_artefact)
        truth = record.truth_set(mode)
        xy, score = found.xy, np.asarray(found.table["score"])
        det_class = np.asarray(found.table["class_id"])
        total = total + count_curve(truth, xy, score, match_radius, thresholds)
        for c in per_class:
            per_class[c] = per_class[c] + count_curve(
                truth, xy, score, match_radius, thresholds, det_class, c
            )
    if total.n_targets == 0:
        raise ValueError(
            "The validation scenes have no target sources; use more or larger validation scenes."
        )
    curves = curve_metrics(total)
    best = int(np.argmax(np.nan_to_num(curves["f1"])))
    result: dict[str, Any] = {
        "n_targets": int(total.n_targets),
        "best_f1": float(curves["f1"][best]),
        "best_f1_threshold": float(thresholds[best]),
        "precision_at_best_f1": float(curves["precision"][best]),
        "recall_at_best_f1": float(curves["recall"][best]),
        "curves": {k: [float(v) for v in values] for k, values in curves.items()},
    }
    for c, counts in per_class.items():
        class_curves = curve_metrics(counts)
        result[f"{classes[c - 1]}_precision_at_80_recall"] = precision_at_recall(
            class_curves["precision"], class_curves["recall"], 0.8
        )
        result[f"{classes[c - 1]}_n_targets"] = int(counts.n_targets)
    if ARTEFACT_CLASS in classes:
        result["n_artefact_detections"] = n_artefact_detections
    recall, index = recall_at_precision(curves["precision"], curves["recall"], 0.9)
    result["recall_at_precision_0.9"] = recall
    result["threshold_at_precision_0.9"] = None if index is None else float(thresholds[index])
    return result


def _plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in history[0]["losses"]:
        axes[0].plot(epochs, [h["losses"][key] for h in history], marker="o", label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("mean training loss")
    axes[0].legend(fontsize=7)
    for key in ("best_f1", "precision_at_best_f1", "recall_at_best_f1", "recall_at_precision_0.9"):
        axes[1].plot(epochs, [h["validation"][key] for h in history], marker="o", label=key)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=7)
    axes[1].set_title("validation (held-out scenes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _StepBatches:
    """The training batches by (epoch, step), as a map-style dataset of a `torch.utils.data.DataLoader`.

    A loader process is spawned (a forked copy of the training process, whose torch and CUDA
    threads run, can deadlock) and gets the dataset's directory, not its scenes: it reads them
    (memory-mapped) and makes its own `StampSampler`, which draws the same stamps.
    """

    def __init__(self, directory: Path, sampler: StampSampler, size: int):
        self.directory, self.sampler, self.size = directory, sampler, size

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "sampler": None, "settings": self.sampler.settings()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        settings = state.pop("settings")
        self.__dict__.update(state)
        self.sampler = StampSampler(load_dataset(self.directory), **settings)

    def __getitem__(self, key: tuple[int, int]):
        return self.sampler.batch(key, self.size)


def _save_whole(state: Any, path: Path) -> None:
    """`torch.save` ``state`` to ``path`` whole or not at all: a full disk leaves the previous file.

    Through a Python file, so that the system's error (ENOSPC, EDQUOT) reaches the caller: torch's
    own file writer keeps only "unexpected pos" of it.
    """
    import torch

    temporary = path.with_name(f".{path.name}.partial")
    try:
        with open(temporary, "wb") as stream:
            torch.save(state, stream)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    restart: bool = False,
    progress: bool = True,
    deblender=None,
    workers: int = 1,
    time_limit: float | None = None,
    loader_workers: int = 0,
) -> Path:
    """Run a training job; returns the path of the written model package.

    Parameters
    ----------
    config : `TrainConfig`
        The job.
    out_dir : path-like
        Output directory: ``checkpoint.pt``, ``best_weights.pt``,
        ``history.json``, ``training.png``, ``config.json``, ``model.zip``.
    restart : `bool`
        Ignore an existing checkpoint (default: resume from it).
    progress : `bool`
        Progress bars.
    deblender : callable, optional
        Stand-in first-pass deblender for dataset generation (tests).
    workers : `int`
        Processes that make the training and validation scenes
        (`generate_dataset`); the data, and so the model, do not depend on
        it, nor does resuming from a checkpoint.
    time_limit : `float`, optional
        Seconds of this run (data generation included) after which training
        stops at the end of the epoch that passes them, as a batch job's
        wall-time limit asks: the package is written from the best epoch so
        far (its provenance gives ``epochs_trained`` of ``epochs``), and the
        same command without the limit resumes from the checkpoint to the
        end of the schedule, to the weights of an uninterrupted run.
    loader_workers : `int`
        Processes of the `torch.utils.data.DataLoader` that cut and augment
        the training batches ahead of the steps (``num_workers``; 0: in this
        process, between steps). Each batch depends only on (seed, epoch,
        step), so the weights do not depend on it; on a GPU the batches
        (about 23 ms for 4 stamps of the v2 recipe on one core) would
        otherwise hold up every step.

    Raises
    ------
    ValueError
        If ``out_dir`` holds a checkpoint of a different configuration, or
        ``loader_workers`` is negative.
    """
    if loader_workers < 0:
        raise ValueError(f"loader_workers must be at least 0, not {loader_workers}.")
    import torch
    from tqdm import tqdm

    from ..network.inference import Detector, select_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
    checkpoint_path = out / "checkpoint.pt"
    if checkpoint_path.exists() and not restart:
        saved = out / "config.json"
        if saved.exists() and json.loads(saved.read_text()) != json.loads(config_text):
            raise ValueError(
                f"{out} holds a checkpoint of a different configuration; use another --out or --restart."
            )
    (out / "config.json").write_text(config_text)

    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    device = select_device(config.device)
    use_amp = bool(config.amp) and device.startswith("cuda")
    started = time.time()

    cache = Path(config.cache_dir)
    make = functools.partial(generate_dataset, progress=progress, deblender=deblender, workers=workers)
    train_dir = make(config.dataset, cache)
    val_config = config.validation_dataset()
    val_dir = make(val_config, cache)
    train_records = load_dataset(train_dir)
    val_records = load_dataset(val_dir)
    manifest = json.loads((train_dir / "manifest.json").read_text())
    mean, std = np.asarray(manifest["channel_mean"]), np.asarray(manifest["channel_std"])

    torch.manual_seed(config.seed)
    model = build_model(config.network_config(), mean, std, input_size=config.stamp_size).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay
    )
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, total_steps, config.optimizer)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    best = {"f1": -1.0, "epoch": None, "validation": None}
    start_epoch = 0
    if checkpoint_path.exists() and not restart:
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        datasets = [train_dir.name, val_dir.name]
        if state.get("datasets", datasets) != datasets:
            raise ValueError(
                f"{out} was trained on datasets {state['datasets']}, but the current code makes {datasets} "
                "(the simulator, first pass or labels changed); use --restart to train on the new data."
            )
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        _log.info("Resuming %s after epoch %d.", out, state["epoch"] + 1)

    focus = {config.dataset.labels.classes.index(name) + 1: p for name, p in config.focus.items()}
    sampler = StampSampler(
        train_records, config.stamp_size, config.augment, config.seed, focus, config.band_dropout()
    )
    keys = [(e, step) for e in range(start_epoch, config.epochs) for step in range(config.steps_per_epoch)]
    loader = torch.utils.data.DataLoader(
        _StepBatches(train_dir, sampler, config.batch_size),
        batch_size=None,  # each item is a whole batch
        sampler=keys,
        num_workers=loader_workers,
        multiprocessing_context="spawn" if loader_workers > 0 else None,
        pin_memory=device.startswith("cuda"),
        # Its own generator: the loader draws its workers' base seed from it, not from torch's global
        # RNG, which the RPN's and heads' sampling use and the checkpoint restores.
        generator=torch.Generator(),
    )
    batches = iter(loader)
    provisional = ModelPackage(_metadata(config, mean, std, 0.5, {}, {}), state_dict={})
    for epoch in range(start_epoch, config.epochs):
        model.train()
        set_input_size(model, config.stamp_size)
        sums: dict[str, float] = {}
        steps = tqdm(
            range(config.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress,
        )
        epoch_start = time.time()
        for step in steps:
            images, targets = next(batches)
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device_type="cuda", enabled=use_amp):
                losses = model(images, targets)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Training loss became {float(loss)} at epoch {epoch + 1}, step {step}."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            sums["total"] = sums.get("total", 0.0) + float(loss.detach())
            if progress and step % 20 == 0:
                steps.set_postfix(loss=f"{sums['total'] / (step + 1):.3f}")
            elif not progress and (step + 1) % 100 == 0:
                _log.info(
                    "epoch %d step %d/%d: mean loss %.4f, %.2f s/step",
                    epoch + 1,
                    step + 1,
                    config.steps_per_epoch,
                    sums["total"] / (step + 1),
                    (time.time() - epoch_start) / (step + 1),
                )
        model.eval()
        detector = Detector(provisional, device=device, model=model)
        validation = validate(detector, val_records, config.mode, config.match_radius)
        entry = {
            "epoch": epoch + 1,
            "losses": {k: v / config.steps_per_epoch for k, v in sums.items()},
            "lr": float(scheduler.get_last_lr()[0]),
            "seconds": round(time.time() - epoch_start, 1),
            "validation": {k: v for k, v in validation.items() if k != "curves"},
        }
        history.append(entry)
        _log.info(
            "epoch %d: loss %.4f, validation F1 %.3f (P %.3f, R %.3f at score %.2f)",
            epoch + 1,
            entry["losses"]["total"],
            validation["best_f1"],
            validation["precision_at_best_f1"],
            validation["recall_at_best_f1"],
            validation["best_f1_threshold"],
        )
        if validation["best_f1"] > best["f1"]:
            best = {"f1": validation["best_f1"], "epoch": epoch + 1, "validation": validation}
            _save_whole(model.state_dict(), out / "best_weights.pt")
        _save_whole(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "best": best,
                "epoch": epoch,
                "datasets": [train_dir.name, val_dir.name],
            },
            checkpoint_path,
        )
        (out / "history.json").write_text(json.dumps(history, indent=2))
        _plot_history(history, out / "training.png")
        if time_limit is not None and epoch + 1 < config.epochs and time.time() - started >= time_limit:
            _log.warning(
                "Time limit of %.0f s reached after epoch %d of %d: writing the package from epoch %d; "
                "run again without the limit to resume.",
                time_limit,
                epoch + 1,
                config.epochs,
                best["epoch"],
            )
            break
    del batches  # its worker processes end

    validation = best["validation"]
    threshold = validation["threshold_at_precision_0.9"]
    rule = f"best validation recall at precision >= {config.target_precision}"
    if config.target_precision != 0.9 or threshold is None:
        curves = validation["curves"]
        from ..groundtruth.metrics import recall_at_precision

        _, index = recall_at_precision(
            np.asarray(curves["precision"]), np.asarray(curves["recall"]), config.target_precision
        )
        if index is None:
            threshold, rule = validation["best_f1_threshold"], "best validation F1"
        else:
            threshold = curves["threshold"][index]
    provenance = {
        "training_dataset": {
            "directory": train_dir.name,
            "seeds": [config.dataset.seed, config.dataset.seed + config.dataset.n_scenes - 1],
        },
        "validation_dataset": {
            "directory": val_dir.name,
            "seeds": [val_config.seed, val_config.seed + val_config.n_scenes - 1],
        },
        "data_code_digest": code_digest(config.dataset.needs_model),
        "epochs": config.epochs,
        "epochs_trained": len(history),
        "best_epoch": best["epoch"],
        "device": device,
        "score_threshold_rule": rule,
        "training_wall_seconds_this_run": round(time.time() - started, 1),
    }
    metrics = {"validation": {k: v for k, v in validation.items() if k != "curves"}}
    metadata = _metadata(config, mean, std, threshold, provenance, metrics)
    weights = torch.load(out / "best_weights.pt", map_location="cpu", weights_only=True)
    return save_model_package(out / "model.zip", metadata, weights)
