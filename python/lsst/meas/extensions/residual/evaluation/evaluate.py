"""Evaluate a model package on held-out simulated scenes, against baselines.

Each scene (seeds ``seed`` ... ``seed + n_scenes - 1``, which must not be
among the package's training or validation seeds) is simulated with the
package's training settings, taken through the first pass (peaks, and the
deblender in residual mode) and labelled exactly as training data are
(`~lsst.meas.extensions.residual.groundtruth.scenes.prepare_scene`). The
network then runs on the whole scene (tiled), and on the same input
(residual in residual mode, image in image mode) so do the baselines: SEP at
3σ and 5σ of the PSF-filtered noise, SEP at 5σ per pixel with its default
3×3 filter (SExtractor's convention, a much higher S/N cut), and photutils
segmentation + deblending (`baselines`); in image mode also the first-pass
peaks.

Reported (``evaluation.json`` + PNGs), with the definitions of
`~lsst.meas.extensions.residual.groundtruth.metrics`:

- precision, recall and F1 along a score grid, for all sources and per class
  (``pr_curves.png``); star and galaxy precision at 80% recall;
- the best recall at precision ≥ 90% and the ratio to SEP 5σ's recall;
- figures at the package's score threshold, including the median mask IoU of
  matched targets;
- star and galaxy precision at 80% recall again for sources with S/N ≥
  ``bright_snr`` (20), fainter sources being ignored (a detection that only
  matches one is left out), to separate classification from faint-source
  confusion;
- star and galaxy precision at 80% recall (and the most recall) with each
  class's detections counted on their own, as COCO's per-category
  evaluation counts them: the network is run a second time without the
  merge across classes (``class_nms_iou`` = 1), so that a source the
  network finds both as a star and, scoring higher, as a galaxy counts in
  the star curve at its star score (``*_each_class_alone``);
- recall of the targets versus magnitude for every detector
  (``recall_vs_mag.png``);
- an overlay of the first scene (``example_overlay.png``).
"""

from __future__ import annotations

__all__ = ["EvaluationConfig", "evaluate_package", "check_held_out"]

import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from ..bands import parse_bands
from ..configs import StrictModel, validate_config
from ..deblending import DeblendConfig
from ..detection import DetectionConfig
from ..errors import InputError
from ..groundtruth.labels import ARTEFACT_CLASS, LabelConfig
from ..groundtruth.metrics import (
    DEFAULT_THRESHOLDS,
    CurveCounts,
    TruthSet,
    binned_recall,
    count_curve,
    curve_metrics,
    detection_labels,
    mask_iou,
    matched_targets,
    precision_at_recall,
    recall_at_precision,
)
from ..groundtruth.scenes import prepare_scene
from ..network.calibration import (
    expected_calibration_error,
    plot_reliability,
    reliability_bins,
    threshold_for_purity,
)
from ..network.inference import Detector
from ..network.inference_config import InferenceConfig
from ..network.package import ModelPackage, load_model_package
from ..simulation import SimulationConfig
from ..workers import ordered_map
from .baselines import chi_image, photutils_detect, sep_detect
from .extendedness import LSST_EXTENDEDNESS_CUT, RATIO_GRID, extendedness_ratio

#: Purities whose score thresholds the evaluation reports (0.92: issue 11's default operating point).
CALIBRATION_PURITIES = (0.9, 0.92, 0.95)


def _correlated_noise() -> dict[str, Any]:
    from ..simulation import ArtefactConfig, NoiseKernelConfig

    kernel = NoiseKernelConfig(kind="lanczos", order=3, shift=0.5)  # LSST's warping kernel
    return {"artefacts": ArtefactConfig.without_artefacts(correlated_noise_kernel=kernel)}


#: Held-out variants of the scenes, by name: `SimulationConfig` changes to the package's training
#: simulation (a callable where the value needs building). Each differs from the training data in one
#: way the real sky does.
EVALUATION_VARIANTS: dict[str, Any] = {
    "training": {},
    "kolmogorov_airy": {"psf_model": "kolmogorov_airy"},
    "moffat": {"psf_model": "moffat"},
    "compact": {"galaxy_sizes": "compact"},
    "correlated_noise": _correlated_noise,
    "1yr": {"depth": "1yr"},
    # Outside the widened mix too (held out for network v2 as well):
    "standard_galaxies": {"galaxy_sizes": "standard"},
    "dense": {"galaxy_density": 150.0},  # 2.5x the 10-year default: crowding
    "star_field": {"star_density": 60.0},  # low Galactic latitude
    "poor_seeing": {"psf_fwhm_range": (1.1, 1.5)},  # beyond the 0.5-1.1" every training drew from
}
#: The variants whose scenes the widened mix (`SimulationConfig.widened`, network v2's training)
#: already draws: held out for a package trained without it, not for one trained on it.
WIDENED_MIX_VARIANTS = ("kolmogorov_airy", "moffat", "compact", "1yr")


class EvaluationConfig(StrictModel):
    """What to evaluate on, and how.

    Build one with ``EvaluationConfig(**values)`` or, for a one-line
    `~lsst.meas.extensions.residual.errors.ConfigError`,
    `~lsst.meas.extensions.residual.configs.make_config`.
    """

    n_scenes: int = pydantic.Field(default=20, ge=1)
    """Number of held-out scenes."""
    seed: int = pydantic.Field(default=1_000_000, ge=0)
    """Scenes have seeds ``seed`` ... ``seed + n_scenes - 1``."""
    scene_size: int = pydantic.Field(default=512, ge=32)
    """Side of the square scenes (pixels)."""
    match_radius: float = pydantic.Field(default=3.0, gt=0.0)
    """Pixels within which a detection matches a true source."""
    score_threshold: float | None = pydantic.Field(default=None, ge=0.0, le=1.0)
    """Operating threshold; None: the package's."""
    mag_edges: tuple[float, ...] = tuple(20.0 + 0.5 * i for i in range(17))
    """Edges of the magnitude bins of recall versus magnitude (increasing)."""
    baselines: bool = True
    """Also run the classical detectors (SEP, photutils) on the same inputs."""
    device: str = "auto"
    """Torch device of the network: ``auto``, ``cpu`` or ``cuda[:N]``."""
    variant: str = "training"
    """Scenes as the package's training simulation made them (``training``), or one of
    `EVALUATION_VARIANTS` (another PSF family, compact galaxies, correlated noise, 1-year depth)."""
    bright_snr: float = pydantic.Field(default=20.0, ge=0.0)
    """Per-class precision at 80% recall is also reported for sources above
    this S/N (fainter ones ignored: neither right nor wrong)."""
    bands: tuple[str, ...] | None = None
    """Bands of the scenes: a subset of the package's, for a package taking band subsets. The
    scenes are simulated in the package's bands and cut to these, so every subset sees the same
    sources; the first pass, the labels' S/N and the network see only these. None: the
    package's."""

    @pydantic.field_validator("bands", mode="before")
    @classmethod
    def _parse_bands(cls, bands: Any) -> tuple[str, ...] | None:
        return None if bands is None else parse_bands(bands)

    @pydantic.field_validator("variant")
    @classmethod
    def _known_variant(cls, variant: str) -> str:
        if variant not in EVALUATION_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(EVALUATION_VARIANTS)}")
        return variant

    @pydantic.field_validator("mag_edges")
    @classmethod
    def _increasing(cls, edges: tuple[float, ...]) -> tuple[float, ...]:
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"need at least two increasing magnitude edges, not {edges}")
        return edges


def check_held_out(package: ModelPackage, seed: int, n_scenes: int) -> None:
    """Refuse scene seeds the package was trained or validated on.

    Raises
    ------
    InputError
        If the seed ranges overlap.
    """
    provenance = package.metadata.provenance
    wanted = range(seed, seed + n_scenes)
    for key in ("training_dataset", "validation_dataset"):
        seeds = provenance.get(key, {}).get("seeds")
        if seeds and max(seeds[0], wanted.start) <= min(seeds[1], wanted.stop - 1):
            raise InputError(
                f"Evaluation seeds {wanted.start}..{wanted.stop - 1} overlap the package's "
                f"{key.replace('_', ' ')} "
                f"seeds {seeds[0]}..{seeds[1]}; choose scenes the model never saw (another --seed)."
            )


def _scene_bands(meta, config: EvaluationConfig) -> tuple[str, ...]:
    """The bands of the evaluation scenes (`EvaluationConfig.bands`), checked against the package."""
    if config.bands is None:
        return tuple(meta.bands)
    meta.check_data(config.bands, has_model=True)  # a subset needs a package that takes them
    extra = sorted(set(config.bands) - set(meta.bands))
    if extra:
        raise InputError(f"Model package {meta.name!r} does not use band(s) {','.join(extra)}.")
    return tuple(config.bands)


def _settings(package: ModelPackage, config: EvaluationConfig):
    """The simulation, labels, detection and deblending of the package's training data (with the
    variant's changes, at the evaluation's size)."""
    dataset = package.metadata.training.get("dataset", {})
    meta = package.metadata
    changes = EVALUATION_VARIANTS[config.variant]
    changes = changes() if callable(changes) else changes
    fields = {
        "height": config.scene_size,
        "width": config.scene_size,
        "bands": meta.bands,
        "galaxy_density": dataset.get("galaxy_density"),
        "star_density": dataset.get("star_density", 8.0),
    }
    if dataset.get("artefacts") is not None:
        fields["artefacts"] = dataset["artefacts"]
    if dataset.get("widened"):
        # The mix draws depth and PSF; a variant's value replaces that draw (`SimulationConfig.widened`).
        simulation = SimulationConfig.widened(**{**fields, **changes})
    else:
        fields |= {"depth": dataset.get("depth", "10yr"), "psf_model": dataset.get("psf_model", "kolmogorov")}
        simulation = SimulationConfig(**{**fields, **changes})
    where = f"model package {meta.name!r}: training dataset"
    labels = validate_config(LabelConfig, {**dataset.get("labels", {}), "mode": meta.mode}, f"{where} labels")
    detection = validate_config(DetectionConfig, dataset.get("detection", {}), f"{where} detection")
    deblend = validate_config(DeblendConfig, dataset.get("deblend", {}), f"{where} deblend")
    return simulation, labels, detection, deblend


def _max_or_none(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(np.nanmax(values)) if np.any(np.isfinite(values)) else None


def _point(counts: CurveCounts) -> dict[str, Any]:
    curves = curve_metrics(counts)
    return {
        "recall": float(curves["recall"][0]),
        "precision": float(curves["precision"][0]),
        "f1": float(curves["f1"][0]),
        "n_detections": int(counts.n_detections[0]),
        "n_matched_targets": int(counts.matched_targets[0]),
    }


def _calibration_summary(meta, scores: np.ndarray, is_real: np.ndarray, config: EvaluationConfig) -> dict:
    """ECE, reliability bins and purity thresholds of the scores of every detection of the run."""
    bins = reliability_bins(scores, is_real)
    return {
        "scores": "calibrated" if meta.score_calibration is not None else "raw",
        "n_detections": int(len(scores)),
        "n_real": int(np.sum(is_real)),
        "expected_calibration_error": expected_calibration_error(scores, is_real) if len(scores) else None,
        "reliability": {k: [None if not np.isfinite(v) else float(v) for v in bins[k]] for k in bins},
        "threshold_for_purity": {
            f"{purity:g}": threshold_for_purity(scores, is_real, purity) for purity in CALIBRATION_PURITIES
        },
        "purity_at_operating_threshold": (
            float(np.mean(is_real[scores >= _operating(meta, config)]))
            if np.any(scores >= _operating(meta, config))
            else None
        ),
    }


def _ratio_grid(name: str) -> np.ndarray:
    """Cuts on the extendedness score of ``name``: the ratio for stars (star if ratio ≥ cut), its
    negative for galaxies (galaxy if ratio < cut, i.e. −ratio > −cut), ascending either way."""
    return RATIO_GRID if name == "star" else np.sort(-RATIO_GRID)


def _extendedness_summary(counts: dict, config: EvaluationConfig) -> dict:
    """Precision at 80% recall of the extendedness cut, swept, and at LSST's cut, per class."""
    summary = {
        "statistic": "PSF flux / point-source-equivalent segment flux, reference band (extendedness.py)",
        "detections": "the network's, at the operating threshold",
        "lsst_cut": LSST_EXTENDEDNESS_CUT,
    }
    for subset, key in (("all", "all"), ("faint", f"snr_lt_{config.bright_snr:g}")):
        entry = {}
        for name, cc in counts[subset].items():
            metrics = curve_metrics(cc)
            at_cut = int(np.flatnonzero(np.isclose(np.abs(cc.thresholds), LSST_EXTENDEDNESS_CUT))[0])
            entry[name] = {
                "precision_at_80_recall": precision_at_recall(metrics["precision"], metrics["recall"], 0.8),
                "max_recall": _max_or_none(metrics["recall"]),
                "at_lsst_cut": {
                    "precision": float(metrics["precision"][at_cut]),
                    "recall": float(metrics["recall"][at_cut]),
                },
                "n_targets": int(cc.n_targets),
            }
        summary[key] = entry
    return summary


def _operating(meta, config: EvaluationConfig) -> float:
    return meta.score_threshold if config.score_threshold is None else float(config.score_threshold)


def _find(detector: Detector, prepared, threshold: float, timing: dict[str, float], **settings):
    """The network's detections on a prepared scene down to ``threshold`` (``settings``: other
    `InferenceConfig` fields); its time is added to ``timing["network"]``."""
    start = time.perf_counter()
    scene = prepared.scene
    found = detector.find(
        scene.image,
        scene.variance,
        scene.bands,
        prepared.model,
        scene.bad_mask(),
        inference=InferenceConfig(score_threshold=threshold, **settings),
    )
    timing["network"] += time.perf_counter() - start
    return found


def evaluate_package(
    package: ModelPackage | str,
    config: EvaluationConfig,
    out_dir: str | Path,
    progress: bool = True,
    deblender=None,
    workers: int = 1,
) -> dict[str, Any]:
    """Evaluate ``package`` (see module docstring); returns the summary written to ``evaluation.json``.

    ``workers`` processes simulate the scenes and take them through the first pass
    (`ordered_map`) while this one runs the network on them in seed order: the summary
    is the same for any number, except ``seconds["prepare"]``, the time spent waiting
    for prepared scenes (their preparation time with one worker). ``deblender`` (a
    stand-in first pass, for tests) must then be picklable.
    """
    from tqdm import tqdm

    from .plots import plot_overlay, plot_pr_curves, plot_recall_vs_magnitude

    package = package if isinstance(package, ModelPackage) else load_model_package(package)
    meta = package.metadata
    check_held_out(package, config.seed, config.n_scenes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    detector = Detector(package, device=config.device)
    simulation, label_config, detection_config, deblend_config = _settings(package, config)
    scene_bands = _scene_bands(meta, config)
    operating = _operating(meta, config)
    thresholds = np.union1d(DEFAULT_THRESHOLDS, [operating])
    op_index = int(np.flatnonzero(np.isclose(thresholds, operating))[0])
    # Detections classed as artefacts claim no source: the source metrics leave them out.
    classes = [name for name in meta.classes if name != ARTEFACT_CLASS]
    n_artefact_detections = 0

    total = CurveCounts.zeros(thresholds)
    per_class = {c: CurveCounts.zeros(thresholds) for c in classes}
    # Each class's detections on their own (no merge across classes): COCO's per-category counting.
    alone_per_class = {c: CurveCounts.zeros(thresholds) for c in classes}
    bright_per_class = {c: CurveCounts.zeros(thresholds) for c in classes}
    faint_per_class = {c: CurveCounts.zeros(thresholds) for c in classes}
    # LSST's extendedness on the same (operating) detections, its cut swept: image mode only.
    with_extendedness = config.baselines and meta.mode == "image" and {"star", "galaxy"} <= set(classes)
    extendedness = {
        subset: {c: CurveCounts.zeros(_ratio_grid(c)) for c in ("star", "galaxy")}
        for subset in ("all", "faint")
    }
    baseline_names = []
    if config.baselines:
        baseline_names = ["SEP 3σ", "SEP 5σ", "SEP 5σ per pixel, 3×3 filter", "photutils 3σ + deblend"]
        if meta.mode == "image":
            baseline_names.append("first-pass peaks")
    baseline_counts = {name: CurveCounts.zeros([0.0]) for name in baseline_names}
    found = {"network": [], **{name: [] for name in baseline_names}}
    target_mags, ious = [], []
    n_sources = n_detected_first_pass = 0
    scored, scored_real = [], []  # every detection's score and whether it is real (calibration)
    timing = {"prepare": 0.0, "network": 0.0, "baselines": 0.0}
    seeds = range(config.seed, config.seed + config.n_scenes)
    prepare = functools.partial(
        prepare_scene,
        simulation=simulation,
        labels=label_config,
        need_model=meta.needs_model,
        detection=detection_config,
        deblend_config=deblend_config,
        deblender=deblender,
        bands=scene_bands,
    )
    # Its workers end when the loop does, also when it raises (not when the generator is collected).
    with contextlib.closing(ordered_map(prepare, seeds, workers)) as prepared_scenes:
        for k in tqdm(range(config.n_scenes), desc="evaluate", unit="scene", disable=not progress):
            start = time.perf_counter()
            prepared = next(prepared_scenes)
            timing["prepare"] += time.perf_counter() - start
            seed = prepared.seed
            scene, labels = prepared.scene, prepared.labels
            truth = TruthSet.from_sources(labels.sources, meta.mode)
            n_sources += len(truth.xy)
            n_detected_first_pass += int(np.sum(labels.sources["detected"]))

            detections = _find(detector, prepared, float(thresholds[0]), timing)
            is_artefact = np.asarray(detections.table["class"]).astype(str) == ARTEFACT_CLASS
            n_artefact_detections += int(
                np.count_nonzero(is_artefact & (detections.table["score"] >= operating))
            )
            detections = detections.select(~is_artefact)
            xy, score = detections.xy, np.asarray(detections.table["score"], dtype=float)
            det_class = np.asarray(detections.table["class_id"])
            total = total + count_curve(truth, xy, score, config.match_radius, thresholds)
            real, counted = detection_labels(truth, xy, score, config.match_radius)
            scored.append(score[counted])
            scored_real.append(real[counted])
            for name in classes:
                c = meta.classes.index(name) + 1
                per_class[name] = per_class[name] + count_curve(
                    truth, xy, score, config.match_radius, thresholds, det_class, c
                )
                bright_per_class[name] = bright_per_class[name] + count_curve(
                    truth.restricted(config.bright_snr),
                    xy,
                    score,
                    config.match_radius,
                    thresholds,
                    det_class,
                    c,
                )
                faint_per_class[name] = faint_per_class[name] + count_curve(
                    truth.restricted(max_snr=config.bright_snr),
                    xy,
                    score,
                    config.match_radius,
                    thresholds,
                    det_class,
                    c,
                )
            if len(classes) > 1:
                unmerged = _find(detector, prepared, float(thresholds[0]), timing, class_nms_iou=1.0)
                unmerged = unmerged.select(np.asarray(unmerged.table["class"]).astype(str) != ARTEFACT_CLASS)
                for name in classes:
                    c = meta.classes.index(name) + 1
                    alone_per_class[name] = alone_per_class[name] + count_curve(
                        truth,
                        unmerged.xy,
                        np.asarray(unmerged.table["score"], dtype=float),
                        config.match_radius,
                        thresholds,
                        np.asarray(unmerged.table["class_id"]),
                        c,
                    )
            operating_detections = detections.above(operating)
            if with_extendedness:
                start = time.perf_counter()
                ratio = extendedness_ratio(scene, operating_detections)
                for subset, subset_truth in (
                    ("all", truth),
                    ("faint", truth.restricted(max_snr=config.bright_snr)),
                ):
                    for name in ("star", "galaxy"):
                        c = meta.classes.index(name) + 1
                        extendedness[subset][name] = extendedness[subset][name] + count_curve(
                            subset_truth,
                            operating_detections.xy,
                            ratio if name == "star" else -ratio,
                            config.match_radius,
                            _ratio_grid(name),
                            np.full(len(ratio), c),
                            c,
                        )
                timing["baselines"] += time.perf_counter() - start
            hit, which = matched_targets(truth, operating_detections.xy, config.match_radius)
            found["network"].append(hit)
            target_mags.append(truth.mag[truth.target])
            for target_row, det_index in enumerate(which):
                if det_index >= 0:
                    ious.append(
                        mask_iou(labels.footprints[target_row], operating_detections.footprints[det_index])
                    )

            if config.baselines:
                start = time.perf_counter()
                data = prepared.residual if meta.mode == "residual" else scene.clean_image()
                usable = scene.good.any(axis=0)
                chi = chi_image(data, scene.variance, scene.good)
                positions = {
                    "SEP 3σ": sep_detect(chi, 3.0, usable, scene.psf),
                    "SEP 5σ": sep_detect(chi, 5.0, usable, scene.psf),
                    "SEP 5σ per pixel, 3×3 filter": sep_detect(chi, 5.0, usable),
                    "photutils 3σ + deblend": photutils_detect(chi, scene.psf, 3.0, usable),
                }
                if meta.mode == "image":
                    positions["first-pass peaks"] = prepared.detections.xy
                for name, positions_xy in positions.items():
                    baseline_counts[name] = baseline_counts[name] + count_curve(
                        truth, positions_xy, None, config.match_radius, [0.0]
                    )
                    found[name].append(matched_targets(truth, positions_xy, config.match_radius)[0])
                timing["baselines"] += time.perf_counter() - start

            if k == 0:
                plot_overlay(
                    scene.clean_image(),
                    scene.bands,
                    operating_detections,
                    out / "example_overlay.png",
                    targets_xy=truth.xy[truth.target],
                    residual=prepared.residual if prepared.model is not None else None,
                    title=f"{meta.name} on held-out scene seed {seed} (score ≥ {operating:.2f})",
                )

    curves = curve_metrics(total)
    class_curves = {name: curve_metrics(counts) for name, counts in per_class.items()}
    alone_curves = {name: curve_metrics(counts) for name, counts in alone_per_class.items()}
    best_recall, best_index = recall_at_precision(curves["precision"], curves["recall"], 0.9)
    summary: dict[str, Any] = {
        "model": meta.name,
        "mode": meta.mode,
        "recipe": meta.recipe,
        "scenes": {
            "n": config.n_scenes,
            "seeds": [config.seed, config.seed + config.n_scenes - 1],
            "size": config.scene_size,
            "depth": simulation.depth,
            "variant": config.variant,
            "bands": list(scene_bands),
            "widened": bool(simulation.psf_model_mix or simulation.depth_years_range),
            "artefacts": simulation.artefacts is not None,
        },
        "match_radius": config.match_radius,
        "n_true_sources": n_sources,
        "n_detected_by_first_pass": n_detected_first_pass,
        "n_targets": int(total.n_targets),
        "n_targets_per_class": {name: int(c.n_targets) for name, c in per_class.items()},
        "operating_threshold": operating,
        # Detections the model classes as artefacts at the operating threshold (left out above).
        "n_artefact_detections": n_artefact_detections if ARTEFACT_CLASS in meta.classes else None,
        "network_at_operating_threshold": {
            "recall": float(curves["recall"][op_index]),
            "precision": float(curves["precision"][op_index]),
            "f1": float(curves["f1"][op_index]),
            "n_detections": int(total.n_detections[op_index]),
            "median_mask_iou": float(np.median(ious)) if ious else None,
            "mean_mask_iou": float(np.mean(ious)) if ious else None,
            "per_class": {
                name: {"recall": float(cc["recall"][op_index]), "precision": float(cc["precision"][op_index])}
                for name, cc in class_curves.items()
            },
        },
        "network_recall_at_precision_0.9": best_recall,
        "network_threshold_at_precision_0.9": None if best_index is None else float(thresholds[best_index]),
        "network_best_f1": _max_or_none(curves["f1"]),
        "precision_at_80_recall": {
            name: precision_at_recall(cc["precision"], cc["recall"], 0.8) for name, cc in class_curves.items()
        },
        "max_recall_per_class": {name: _max_or_none(cc["recall"]) for name, cc in class_curves.items()},
        "precision_at_80_recall_each_class_alone": (
            {
                name: precision_at_recall(ac["precision"], ac["recall"], 0.8)
                for name, ac in alone_curves.items()
            }
            if len(classes) > 1
            else None
        ),
        "max_recall_each_class_alone": (
            {name: _max_or_none(ac["recall"]) for name, ac in alone_curves.items()}
            if len(classes) > 1
            else None
        ),
        f"precision_at_80_recall_snr_ge_{config.bright_snr:g}": {
            name: precision_at_recall(bc["precision"], bc["recall"], 0.8)
            for name, bc in ((n, curve_metrics(c)) for n, c in bright_per_class.items())
        },
        f"n_targets_per_class_snr_ge_{config.bright_snr:g}": {
            name: int(c.n_targets) for name, c in bright_per_class.items()
        },
        f"precision_at_80_recall_snr_lt_{config.bright_snr:g}": {
            name: precision_at_recall(fc["precision"], fc["recall"], 0.8)
            for name, fc in ((n, curve_metrics(c)) for n, c in faint_per_class.items())
        },
        "baselines": {name: _point(counts) for name, counts in baseline_counts.items()},
        "extendedness_baseline": _extendedness_summary(extendedness, config) if with_extendedness else None,
        "seconds": {k: round(v, 2) for k, v in timing.items()},
        "curves": {
            "all": {k: [float(v) for v in values] for k, values in curves.items()},
            **{
                name: {k: [float(v) for v in values] for k, values in cc.items()}
                for name, cc in class_curves.items()
            },
        },
    }
    if "SEP 5σ" in summary["baselines"]:
        sep5 = summary["baselines"]["SEP 5σ"]["recall"]
        summary["recall_ratio_to_sep5_at_precision_0.9"] = best_recall / sep5 if sep5 > 0 else None
    mags = np.concatenate(target_mags) if target_mags else np.zeros(0)
    edges = np.asarray(config.mag_edges)
    summary["recall_vs_magnitude"] = {
        name: binned_recall(mags, np.concatenate(hits) if hits else np.zeros(0, bool), edges)
        for name, hits in found.items()
    }

    scores = np.concatenate(scored) if scored else np.zeros(0)
    is_real = np.concatenate(scored_real) if scored_real else np.zeros(0, dtype=bool)
    summary["calibration"] = _calibration_summary(meta, scores, is_real, config)
    # The labelled scores, for fitting a calibration (``evaluate --calibrate``, `calibrate_package`).
    np.savez_compressed(out / "detection_scores.npz", score=scores, is_real=is_real)
    if len(scores):
        plot_reliability(
            scores,
            is_real,
            out / "reliability.png",
            f"{meta.name}: {len(scores)} detections, {config.n_scenes} held-out scenes "
            f"({'calibrated' if meta.score_calibration is not None else 'raw'} scores)",
        )
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2))
    plot_pr_curves(
        {"all": summary["curves"]["all"], **{name: summary["curves"][name] for name in classes}},
        summary["baselines"],
        out / "pr_curves.png",
        title=f"{meta.name}: {config.n_scenes} held-out {config.scene_size}² scenes",
    )
    plot_recall_vs_magnitude(
        summary["recall_vs_magnitude"],
        out / "recall_vs_mag.png",
        title=f"{meta.name}: recall of {'missed ' if meta.mode == 'residual' else ''}sources (targets)",
    )
    return summary
