"""Training sets: simulated scenes through the first pass, cached on disk.

A dataset is fixed by its `DatasetConfig` (recipe, bands, scene size, label
cuts, seeds...). Scene ``i`` is simulated with seed ``seed + i``; held-out
sets use a different ``seed`` range. Generating a dataset writes, under
``cache_dir/<name>-<hash>/`` (hash of the config):

``config.json``
    The dataset config. The directory hash covers it and `code_digest`, a
    hash of the source of the simulator, first pass, labels and recipes, so
    data made by older code are never reused.
``scene_NNNNNN.npy``
    float16 (nchannels, H, W): the recipe's channels of scene NNNNNN.
``scene_NNNNNN.npz``
    Its labels: ``boxes`` (N, 4), ``class_ids`` (N,), footprint geometry
    ``fp_y0``, ``fp_x0``, ``fp_height``, ``fp_width`` and ``fp_masks``
    (concatenated flat), target truth (``x``, ``y``, ``mag``, ``snr``), every
    true source (``src_x``, ``src_y``, ``src_class_id``, ``src_mag``,
    ``src_snr``, ``src_detected``, ``src_target``: see `SceneLabels`) and
    scene facts (``seed``, ``n_sources``, ``n_peaks``).
``manifest.json``
    Written when every scene is there: counts and per-channel statistics.

Each scene file is written atomically, so an interrupted generation resumes
where it stopped and a finished one is reused as is. Training samples random
``stamp_size`` crops of the cached scenes (`StampSampler`), with flips,
rot90 and noise augmentation.
"""

from __future__ import annotations

__all__ = [
    "DatasetConfig",
    "AugmentConfig",
    "BandDropout",
    "SceneRecord",
    "generate_dataset",
    "dataset_dir",
    "code_digest",
    "load_dataset",
    "channel_statistics",
    "StampSampler",
]

import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from ..bands import LSST_BANDS, parse_bands
from ..configs import StrictModel, validate_config
from ..deblending import DeblendConfig
from ..detection import DetectionConfig
from ..errors import InputError
from ..geometry import Box, Footprint
from ..groundtruth.labels import LabelConfig
from ..groundtruth.scenes import prepare_scene
from ..network.recipes import (
    ChannelNormalisation,
    channel_names,
    make_channels,
    parse_recipe,
    recipe_needs_model,
)
from ..packing import pack_footprints, unpack_footprints
from ..simulation import ArtefactConfig, Depth, PsfModel, SimulationConfig
from ..workers import ordered_map

_log = logging.getLogger(__name__)
_CACHE_FORMAT = 1  # bump when _write_scene or the cache layout changes


class DatasetConfig(StrictModel):
    """Everything that fixes a generated dataset."""

    name: str = pydantic.Field(default="residual", pattern=r"^[A-Za-z0-9_.-]+$")
    """Name of the dataset (the start of its cache directory's name)."""
    recipe: str = "residual+model"
    """Channel recipe of the network inputs (see `parse_recipe`)."""
    bands: tuple[str, ...] = LSST_BANDS
    """Bands, e.g. ``"ugrizy"`` (kept in LSST wavelength order)."""
    n_scenes: int = pydantic.Field(default=400, ge=1)
    """Number of scenes."""
    seed: int = pydantic.Field(default=0, ge=0)
    """Scene i has seed ``seed + i``."""
    scene_size: int = pydantic.Field(default=256, ge=32)
    """Side of the square scenes (pixels)."""
    depth: Depth = "10yr"
    """Coadd depth (`SimulationConfig.depth`)."""
    galaxy_density: float | None = pydantic.Field(default=None, ge=0.0)
    """Galaxies per arcmin² (`SimulationConfig.galaxy_density`; None: the depth's default)."""
    star_density: float = pydantic.Field(default=8.0, ge=0.0)
    """Stars per arcmin² (`SimulationConfig.star_density`)."""
    psf_model: PsfModel = "kolmogorov"
    """PSF profile (`SimulationConfig.psf_model`)."""
    widened: bool = False
    """Draw every scene from the widened mix (`SimulationConfig.widened`: PSF families and model
    error, compact and knotty galaxies, 1-10-year depths, background offsets); it draws the depth
    and the PSF, so ``depth`` and ``psf_model`` must then keep their defaults."""
    artefacts: ArtefactConfig | None = None
    """Coadd artefacts added to every scene, with their mask planes (the channels' bad pixels and
    the labels follow the masks); None: none."""
    labels: LabelConfig = LabelConfig()
    """Which true sources become labels."""
    normalisation: ChannelNormalisation = ChannelNormalisation()
    """How pixel values become channels."""
    detection: DetectionConfig = DetectionConfig()
    """First-pass detection."""
    deblend: DeblendConfig = DeblendConfig()
    """First-pass deblender (for the residual and model channels)."""

    @pydantic.field_validator("bands", mode="before")
    @classmethod
    def _parse_bands(cls, bands: Any) -> tuple[str, ...]:
        return parse_bands(bands)

    @pydantic.field_validator("recipe")
    @classmethod
    def _known_recipe(cls, recipe: str) -> str:
        parse_recipe(recipe)
        return recipe

    @pydantic.model_validator(mode="after")
    def _widened_draws_depth_and_psf(self) -> DatasetConfig:
        # Compared with the defaults, not with the fields given: a dumped config (the cache's
        # config.json) holds every field.
        fields = type(self).model_fields
        given = sorted(name for name in ("depth", "psf_model") if getattr(self, name) != fields[name].default)
        if self.widened and given:
            raise ValueError(f"the widened mix draws the depth and the PSF; remove {', '.join(given)}")
        return self

    @pydantic.model_validator(mode="after")
    def _labels_fit_recipe(self) -> DatasetConfig:
        if self.labels.mode == "residual" and not recipe_needs_model(self.recipe):
            raise ValueError(
                f"Residual-mode labels need a residual or model channel; recipe is {self.recipe!r}"
            )
        return self

    @property
    def needs_model(self) -> bool:
        return recipe_needs_model(self.recipe)

    def simulation(self) -> SimulationConfig:
        fields = {
            "height": self.scene_size,
            "width": self.scene_size,
            "bands": self.bands,
            "galaxy_density": self.galaxy_density,
            "star_density": self.star_density,
            "artefacts": self.artefacts,
        }
        if self.widened:
            return SimulationConfig.widened(**fields)
        return SimulationConfig(**fields, depth=self.depth, psf_model=self.psf_model)

    def digest(self) -> str:
        """Hash of the config and of the code that turns it into data (`code_digest`)."""
        data = {
            "cache_format": _CACHE_FORMAT,
            "code": code_digest(self.needs_model),
            **self.model_dump(mode="json"),
        }
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# The code that turns a dataset config into data: a change to any of these
# files (simulator, first pass, labels, recipes) makes a new dataset, so a
# cache made by older code is never reused by mistake. This module itself is
# not hashed (its sampling code changes without changing the data): bump
# _CACHE_FORMAT when `_write_scene` or the file layout changes.
_DATA_CODE = (
    "scene.py",
    "truth.py",
    "bands.py",
    "simulation",
    "detection",
    "geometry.py",
    "packing.py",
    "groundtruth/labels.py",
    "groundtruth/matching.py",
    "groundtruth/scenes.py",
    "chain/first_pass.py",
    "network/recipes.py",
    "network/footprints.py",
)


def code_digest(with_deblender: bool) -> str:
    """SHA-256 (16 hex digits) of the source files that generate a dataset."""
    root = Path(__file__).resolve().parent.parent
    paths = []
    for entry in (*_DATA_CODE, *(("deblending",) if with_deblender else ())):
        path = root / entry
        paths.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class AugmentConfig(StrictModel):
    """Training-time augmentation of stamps."""

    flips: bool = True
    """Flip stamps left-right and up-down (each with probability 1/2)."""
    rot90: bool = True
    """Rotate stamps by a random multiple of 90°."""
    noise_sigma_max: float = pydantic.Field(default=0.2, ge=0.0)
    """Gaussian noise of σ uniform in [0, this] (channel units) is added (not to ``bad`` channels)."""
    band_dropout: float = pydantic.Field(default=0.0, ge=0.0, le=1.0)
    """Probability that a stamp loses bands (`BandDropout`): a model that takes band subsets is
    trained with it (the recipe needs the ``bad`` channel)."""


@dataclasses.dataclass(frozen=True)
class BandDropout:
    """Which channels make a band, and which labels a stamp keeps without some bands.

    A stamp that drops bands loses from 1 to nbands − 1 of them, drawn at
    random: their channels become what inference gives for a band the data
    lack (0, and 1 in ``bad``), and a label stays only if its S/N over the
    bands kept still reaches the dataset's ``snr_cut`` (the label cut).
    """

    kinds: tuple[str, ...]
    """Channel kinds of the recipe, in stacking order (`parse_recipe`)."""
    nbands: int
    snr_cut: float
    probability: float

    def __post_init__(self) -> None:
        if "bad" not in self.kinds:
            raise ValueError(
                f"Band dropout needs the 'bad' channel to say which bands are gone; the recipe has "
                f"{'+'.join(self.kinds)}."
            )

    @property
    def bad_channels(self) -> np.ndarray:
        """(nchannels,) bool: the ``bad`` channels."""
        return np.repeat(np.array([kind == "bad" for kind in self.kinds]), self.nbands)

    def draw(self, rng: np.random.Generator, band_snr2: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(dropped, kept): the bands a stamp loses (bool per band; None: it keeps all) and the
        labels it keeps (bool per row of ``band_snr2``, the (N, nbands) S/N² of its labels)."""
        if self.nbands < 2 or rng.uniform() >= self.probability:
            return None, np.ones(len(band_snr2), dtype=bool)
        n_drop = int(rng.integers(1, self.nbands))
        dropped = np.zeros(self.nbands, dtype=bool)
        dropped[rng.choice(self.nbands, size=n_drop, replace=False)] = True
        return dropped, band_snr2[:, ~dropped].sum(axis=1) >= self.snr_cut**2

    def apply(self, channels: np.ndarray, dropped: np.ndarray) -> None:
        """Make the ``dropped`` bands of (C, S, S) ``channels`` (in place) what inference gives for a
        band the data lack."""
        for index, kind in enumerate(self.kinds):
            block = channels[index * self.nbands : (index + 1) * self.nbands]
            block[dropped] = 1.0 if kind == "bad" else 0.0


def dataset_dir(config: DatasetConfig, cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / f"{config.name}-{config.digest()}"


def _scene_paths(directory: Path, index: int) -> tuple[Path, Path]:
    return directory / f"scene_{index:06d}.npy", directory / f"scene_{index:06d}.npz"


def _write_scene(index: int, directory: Path, config: DatasetConfig, deblender=None) -> dict[str, Any]:
    seed = config.seed + index
    prepared = prepare_scene(
        seed,
        config.simulation(),
        config.labels,
        need_model=config.needs_model,
        detection=config.detection,
        deblend_config=config.deblend,
        deblender=deblender,
    )
    scene = prepared.scene
    channels = make_channels(
        config.recipe,
        scene.image,
        scene.variance,
        prepared.model,
        scene.good,
        normalisation=config.normalisation,
    )
    labels = prepared.labels
    targets, artefacts = labels.targets, labels.artefacts
    boxes, class_ids, fps = labels.network_targets()
    fp_columns, fp_masks = pack_footprints(fps, bool)
    nbands, no_value = len(config.bands), np.full(len(artefacts), np.nan)
    arrays = {
        "boxes": boxes,
        "class_ids": class_ids,
        **fp_columns,
        "fp_masks": fp_masks,
        # Per target: the sources', then the artefacts' (no magnitude or S/N; band dropout keeps an
        # artefact while one of the bands it lies in is kept, hence an infinite S/N² there).
        "x": np.concatenate([np.asarray(targets["x"], dtype=np.float64), artefacts["x"]]),
        "y": np.concatenate([np.asarray(targets["y"], dtype=np.float64), artefacts["y"]]),
        "mag": np.concatenate([np.asarray(targets["mag"], dtype=np.float64), no_value]),
        "snr": np.concatenate([np.asarray(targets["snr"], dtype=np.float64), no_value]),
        "band_snr2": np.concatenate(
            [
                np.asarray(targets["band_snr2"], dtype=np.float64).reshape(len(targets), nbands),
                np.where(np.asarray(artefacts["band_present"]).reshape(-1, nbands), np.inf, 0.0),
            ]
        ),
        "src_x": np.asarray(labels.sources["x"], dtype=np.float64),
        "src_y": np.asarray(labels.sources["y"], dtype=np.float64),
        "src_class_id": np.asarray(labels.sources["class_id"], dtype=np.int64),
        "src_mag": np.asarray(labels.sources["mag"], dtype=np.float64),
        "src_snr": np.asarray(labels.sources["snr"], dtype=np.float64),
        "src_detected": np.asarray(labels.sources["detected"], dtype=bool),
        "src_target": np.asarray(labels.sources["target"], dtype=bool),
        "seed": np.int64(seed),
        "n_sources": np.int64(len(labels.sources)),
        "n_peaks": np.int64(len(prepared.detections.peaks)),
    }
    channel_path, label_path = _scene_paths(directory, index)
    # Write to temporary names, then rename: an interrupted run leaves no half file.
    tmp_channels = channel_path.with_suffix(".tmp.npy")
    np.save(tmp_channels, channels.astype(np.float16))
    tmp_labels = label_path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp_labels, **arrays)
    os.replace(tmp_labels, label_path)
    os.replace(tmp_channels, channel_path)
    return {"targets": len(fps), "sources": len(labels.sources), "peaks": len(prepared.detections.peaks)}


def generate_dataset(
    config: DatasetConfig,
    cache_dir: str | os.PathLike,
    progress: bool = True,
    deblender=None,
    workers: int = 1,
) -> Path:
    """Generate (or finish, or reuse) the cached dataset of ``config``.

    Parameters
    ----------
    config : `DatasetConfig`
        What to generate.
    cache_dir : path-like
        Root of the cache; the dataset goes in `dataset_dir`.
    progress : `bool`
        Show a progress bar.
    deblender : callable, optional
        ``deblender(scene, detections) -> model`` replacing the project's
        deblender (tests use simple stand-ins); picklable when ``workers``
        is above 1.
    workers : `int`
        Processes that make the scenes (`ordered_map`): each depends only
        on its seed, so the files are the same for any number.

    Returns
    -------
    directory : `pathlib.Path`
        The dataset directory.
    """
    from tqdm import tqdm

    directory = dataset_dir(config, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "config.json"
    text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True)
    if config_path.exists() and json.loads(config_path.read_text()) != json.loads(text):
        raise ValueError(f"{config_path} describes a different dataset (hash collision or edited file).")
    config_path.write_text(text)
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        return directory
    missing = [i for i in range(config.n_scenes) if not all(p.exists() for p in _scene_paths(directory, i))]
    if missing:
        _log.info("Dataset %s: generating %d of %d scenes.", directory, len(missing), config.n_scenes)
    write = functools.partial(_write_scene, directory=directory, config=config, deblender=deblender)
    bar = tqdm(total=len(missing), desc=f"dataset {config.name}", unit="scene", disable=not progress)
    with bar:
        for _ in ordered_map(write, missing, workers):
            bar.update()
    records = load_dataset(directory)
    mean, std = channel_statistics(records)
    # ``bad`` channels are 0/1 flags, already on the network's scale: a clean training set has none
    # set, and its σ (the 1e-6 floor) would blow a bad pixel seen in inference up to 10⁶.
    is_bad = np.array([name.startswith("bad_") for name in channel_names(config.recipe, config.bands)])
    mean[is_bad], std[is_bad] = 0.0, 1.0
    manifest = {
        "n_scenes": len(records),
        "n_targets": int(sum(len(r.class_ids) for r in records)),
        "n_targets_per_class": {
            name: int(sum(int(np.sum(r.class_ids == c)) for r in records))
            for c, name in enumerate(config.labels.classes, start=1)
        },
        "channels": channel_names(config.recipe, config.bands),
        "channel_mean": mean.tolist(),
        "channel_std": std.tolist(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return directory


@dataclasses.dataclass
class SceneRecord:
    """One cached scene: channels (memory-mapped) and labels."""

    channels: np.ndarray
    boxes: np.ndarray
    class_ids: np.ndarray
    footprints: list[Footprint]
    info: dict[str, np.ndarray]

    def truth_set(self, mode: str):
        """The scene's true sources for the metrics (`~..groundtruth.metrics.TruthSet`)."""
        from ..groundtruth.metrics import TruthSet

        detected = self.info["src_detected"].astype(bool)
        return TruthSet(
            xy=np.column_stack([self.info["src_x"], self.info["src_y"]]).reshape(-1, 2),
            class_id=self.info["src_class_id"].astype(np.int64),
            target=self.info["src_target"].astype(bool),
            real=~detected if mode == "residual" else np.ones(len(detected), dtype=bool),
            mag=self.info["src_mag"],
        )


def load_dataset(directory: str | os.PathLike, indices=None) -> list[SceneRecord]:
    """Load cached scenes (channels memory-mapped).

    Raises
    ------
    FileNotFoundError
        If the directory or a scene is missing.
    ValueError
        If a scene file is corrupt.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{directory} is not a dataset directory (no config.json).")
    config = validate_config(DatasetConfig, json.loads(config_path.read_text()), str(config_path))
    records = []
    for index in range(config.n_scenes) if indices is None else indices:
        channel_path, label_path = _scene_paths(directory, index)
        if not channel_path.exists() or not label_path.exists():
            raise FileNotFoundError(f"Dataset {directory} has no scene {index}; generate it first.")
        try:
            channels = np.load(channel_path, mmap_mode="r")
            with np.load(label_path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"Corrupt dataset file for scene {index} in {directory}: {err}") from err
        try:
            footprints = unpack_footprints(arrays, arrays.get("fp_masks"), "fp_masks")
        except InputError as err:
            raise ValueError(f"Corrupt labels for scene {index} in {directory}: {err}") from None
        records.append(
            SceneRecord(
                channels=channels,
                boxes=arrays["boxes"].astype(np.float32).reshape(-1, 4),
                class_ids=arrays["class_ids"].astype(np.int64),
                footprints=footprints,
                info={
                    k: v
                    for k, v in arrays.items()
                    if not k.startswith("fp_") and k not in ("boxes", "class_ids")
                },
            )
        )
    return records


def channel_statistics(records: list[SceneRecord], max_scenes: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation over (up to ``max_scenes``) scenes."""
    sample = records[:max_scenes]
    total = np.zeros(sample[0].channels.shape[0])
    total2 = np.zeros_like(total)
    count = 0
    for record in sample:
        values = np.asarray(record.channels, dtype=np.float64)
        total += values.sum(axis=(1, 2))
        total2 += (values**2).sum(axis=(1, 2))
        count += values.shape[1] * values.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total2 / count - mean**2, 1e-12))
    return mean, std


class StampSampler:
    """Random stamps (crops) of cached scenes with their targets, augmented.

    A label belongs to a stamp when its true centre (the centre of its box)
    lies inside; its box is clipped and its mask cut to the stamp. Sampling
    is a pure function of (``seed``, ``key``): the same key gives the same
    batch, so training is repeatable and resumable.

    Parameters
    ----------
    records : `list` [`SceneRecord`]
        Scenes to sample.
    stamp_size : `int`
        Side of the stamps (≤ the scene side).
    augment : `AugmentConfig`, optional
        Augmentation (none if None).
    seed : `int`
        Base seed.
    focus : `dict` [`int`, `float`], optional
        Fraction of stamps centred near a label of each class id.
    band_dropout : `BandDropout`, optional
        Drop bands from some stamps (none if None).
    """

    def __init__(
        self,
        records: list[SceneRecord],
        stamp_size: int,
        augment: AugmentConfig | None,
        seed: int,
        focus: dict[int, float] | None = None,
        band_dropout: BandDropout | None = None,
    ):
        if not records:
            raise ValueError("No scenes to sample stamps from.")
        size = min(min(r.channels.shape[1:]) for r in records)
        if stamp_size > size:
            raise ValueError(f"stamp_size {stamp_size} exceeds the scene size {size}.")
        self.records = records
        self.stamp_size = stamp_size
        self.augment = augment
        self.seed = seed
        if band_dropout is not None and band_dropout.probability > 0:
            if "band_snr2" not in records[0].info:
                raise ValueError(
                    "Band dropout needs the labels' per-band S/N (a dataset made by older code?)."
                )
            nchannels = len(band_dropout.kinds) * band_dropout.nbands
            if records[0].channels.shape[0] != nchannels:
                raise ValueError(
                    f"Band dropout for {nchannels} channels; the dataset has {records[0].channels.shape[0]}."
                )
        self.band_dropout = band_dropout
        self._settings = {
            "stamp_size": stamp_size,
            "augment": augment,
            "seed": seed,
            "focus": focus,
            "band_dropout": band_dropout,
        }
        # focus: {class_id: probability}: that fraction of stamps is centred near a random label
        # of the class (rare classes, e.g. stars among faint galaxies, are seen more often).
        self.focus = {int(c): float(p) for c, p in (focus or {}).items()}
        if sum(self.focus.values()) > 1 or any(p < 0 for p in self.focus.values()):
            raise ValueError(f"focus probabilities must be >= 0 and sum to at most 1, not {self.focus}.")
        self._by_class = {
            c: [(i, int(j)) for i, r in enumerate(records) for j in np.flatnonzero(r.class_ids == c)]
            for c in self.focus
        }
        empty = [c for c, labels in self._by_class.items() if not labels]
        if empty:
            raise ValueError(f"focus class(es) {empty} have no labels in the training set.")

    def _focused_corner(self, rng: np.random.Generator) -> tuple[int | None, tuple[int, int] | None]:
        """A scene and crop corner holding a label of a focus class (or (None, None))."""
        u = rng.uniform()
        for class_id, probability in self.focus.items():
            if u < probability:
                labels = self._by_class[class_id]
                scene, label = labels[int(rng.integers(len(labels)))]
                box = self.records[scene].boxes[label]
                cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
                height, width = self.records[scene].channels.shape[1:]
                s = self.stamp_size
                # Any corner that keeps the centre inside the stamp, and the stamp inside the scene.
                ix, iy = int(np.floor(cx)), int(np.floor(cy))
                x0 = int(rng.integers(max(0, ix - s + 1), min(width - s, ix) + 1))
                y0 = int(rng.integers(max(0, iy - s + 1), min(height - s, iy) + 1))
                return scene, (y0, x0)
            u -= probability
        return None, None

    def stamp(self, rng: np.random.Generator, scene_index: int | None = None, corner=None):
        """One stamp: (channels float32 (C, S, S), boxes (N, 4), class_ids (N,), masks uint8 (N, S, S))."""
        s = self.stamp_size
        if scene_index is None and corner is None and self.focus:
            scene_index, corner = self._focused_corner(rng)
        index = int(rng.integers(len(self.records))) if scene_index is None else scene_index
        record = self.records[index]
        height, width = record.channels.shape[1:]
        if corner is None:
            y0, x0 = int(rng.integers(0, height - s + 1)), int(rng.integers(0, width - s + 1))
        else:
            y0, x0 = corner
        channels = np.asarray(record.channels[:, y0 : y0 + s, x0 : x0 + s], dtype=np.float32)
        stamp_box = Box(y0, x0, s, s)
        dropout = self.band_dropout
        dropped = kept = None
        if dropout is not None and dropout.probability > 0:
            band_snr2 = np.asarray(record.info["band_snr2"]).reshape(len(record.boxes), -1)
            dropped, kept = dropout.draw(rng, band_snr2)
        boxes, classes, masks = [], [], []
        for index, (box, class_id, fp) in enumerate(
            zip(record.boxes, record.class_ids, record.footprints, strict=False)
        ):
            cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
            if not (x0 <= cx < x0 + s and y0 <= cy < y0 + s):
                continue
            if kept is not None and not kept[index]:
                continue  # too faint in the bands the stamp keeps
            mask = fp.cut(stamp_box).astype(np.uint8)
            if not mask.any():
                continue
            clipped = np.array(
                [max(box[0] - x0, 0), max(box[1] - y0, 0), min(box[2] - x0, s), min(box[3] - y0, s)],
                dtype=np.float32,
            )
            boxes.append(clipped)
            classes.append(class_id)
            masks.append(mask)
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.array(classes, dtype=np.int64)
        masks = np.array(masks, dtype=np.uint8).reshape(-1, s, s)
        if self.augment is not None:
            noisy = None if dropout is None else ~dropout.bad_channels
            channels, boxes, masks = _augment(rng, channels, boxes, masks, self.augment, noisy)
        if dropped is not None:
            # After the noise: a band the data lack is exactly 0 (and 1 in ``bad``), as in inference.
            channels = np.array(channels, dtype=np.float32)
            dropout.apply(channels, dropped)
        return channels, boxes, classes, masks

    def settings(self) -> dict[str, Any]:
        """The arguments other than the scenes: with the same scenes they make the same sampler."""
        return dict(self._settings)

    def batch(self, key: tuple[int, ...], size: int):
        """``size`` stamps as torchvision inputs: (list of (C, S, S) tensors, list of target dicts)."""
        import torch

        rng = np.random.default_rng([self.seed, *key])
        images, targets = [], []
        for _ in range(size):
            channels, boxes, classes, masks = self.stamp(rng)
            images.append(torch.from_numpy(np.ascontiguousarray(channels)))
            targets.append(
                {
                    "boxes": torch.from_numpy(boxes),
                    "labels": torch.from_numpy(classes),
                    "masks": torch.from_numpy(np.ascontiguousarray(masks)),
                }
            )
        return images, targets


def _augment(rng, channels, boxes, masks, config: AugmentConfig, noisy: np.ndarray | None = None):
    """Flip, rotate by a multiple of 90°, add noise (to the ``noisy`` channels; default all): the sky
    has no preferred orientation."""
    s = channels.shape[-1]
    if config.flips and rng.uniform() < 0.5:  # left-right
        channels, masks = channels[:, :, ::-1], masks[:, :, ::-1]
        boxes = np.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], axis=1)
    if config.flips and rng.uniform() < 0.5:  # up-down
        channels, masks = channels[:, ::-1, :], masks[:, ::-1, :]
        boxes = np.stack([boxes[:, 0], s - boxes[:, 3], boxes[:, 2], s - boxes[:, 1]], axis=1)
    if config.rot90:
        for _ in range(int(rng.integers(4))):
            # np.rot90 (counter-clockwise in array view): new[y', x'] = old[x', s-1-y'],
            # so a box (x0, y0, x1, y1) becomes (y0, s - x1, y1, s - x0).
            channels, masks = np.rot90(channels, axes=(1, 2)), np.rot90(masks, axes=(1, 2))
            boxes = np.stack([boxes[:, 1], s - boxes[:, 2], boxes[:, 3], s - boxes[:, 0]], axis=1)
    channels = np.ascontiguousarray(channels, dtype=np.float32)
    if config.noise_sigma_max > 0:
        sigma = rng.uniform(0.0, config.noise_sigma_max)
        noise = rng.normal(0.0, sigma, size=channels.shape).astype(np.float32)
        if noisy is not None:
            noise[~noisy] = 0.0
        channels = channels + noise
    # np.array copies: ascontiguousarray keeps the negative strides of an empty (no-label) view,
    # which torch.from_numpy refuses.
    return channels, boxes.astype(np.float32).reshape(-1, 4), np.array(masks, dtype=np.uint8, order="C")
