"""Detection metrics against truth: precision, recall, F1, PR curves.

Training's validation and evaluation both score detectors with these.

Definitions (the same for the network and for the baselines):

- *targets*: true sources the detector should find (residual mode:
  recoverable sources the first pass missed; image mode: all recoverable
  sources);
- *real*: true sources a detection may correctly point at (residual mode:
  every source the first pass missed, whatever its S/N; image mode: every
  source). A detection of an already-detected source is a false positive in
  residual mode: it would add a duplicate peak to the second pass.
- recall = targets matched / targets; precision (purity) = detections matched
  to a real source / detections. Matching is one to one (Hungarian, within
  ``radius`` pixels), done separately for recall and precision.
- per class: only detections predicted as the class and true sources of the
  class take part.

Curves are computed on a grid of score thresholds; "precision at 80% recall"
is the best precision among thresholds whose recall is at least 0.8
(interpolated precision, as in Burke et al. 2019 and COCO).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_THRESHOLDS",
    "TruthSet",
    "CurveCounts",
    "count_curve",
    "detection_labels",
    "curve_metrics",
    "precision_at_recall",
    "recall_at_precision",
    "matched_targets",
    "binned_recall",
    "mask_iou",
]

import dataclasses

import numpy as np

from ..geometry import Footprint, mask_overlap
from .matching import match_positions

#: Score thresholds of the PR curves.
DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.999, 0.025), 4)


@dataclasses.dataclass
class TruthSet:
    """True sources of one scene as the metrics see them."""

    xy: np.ndarray
    """(N, 2) positions."""
    class_id: np.ndarray
    """(N,) 1-based class labels."""
    target: np.ndarray
    """(N,) bool: counts for recall."""
    real: np.ndarray
    """(N,) bool: a detection matched to one is correct."""
    mag: np.ndarray
    """(N,) reference-band magnitude (for recall versus magnitude)."""
    snr: np.ndarray | None = None
    """(N,) isolated optimal S/N (for `restricted`)."""
    ignore: np.ndarray | None = None
    """(N,) bool: sources outside the evaluated subset; a detection that only
    matches one of them is left out of the counts (COCO's "ignore")."""

    def restricted(self, min_snr: float = 0.0, max_snr: float = np.inf) -> TruthSet:
        """The same truth evaluated only on sources with ``min_snr`` ≤ S/N < ``max_snr``.

        The other real sources become "ignore": detecting them is neither
        right nor wrong, so the precision of the subset is not diluted by
        (correct or incorrect) detections of sources outside it.
        """
        if self.snr is None:
            raise ValueError("This TruthSet has no S/N to restrict on.")
        inside = (self.snr >= min_snr) & (self.snr < max_snr)
        return dataclasses.replace(
            self, target=self.target & inside, real=self.real & inside, ignore=self.real & ~inside
        )

    @classmethod
    def from_sources(cls, sources, mode: str) -> TruthSet:
        """From a `~lsst.meas.extensions.residual.groundtruth.labels.SceneLabels` ``sources`` table."""
        n = len(sources)
        detected = np.asarray(sources["detected"], dtype=bool)
        return cls(
            xy=np.column_stack([sources["x"], sources["y"]]).astype(np.float64).reshape(n, 2),
            class_id=np.asarray(sources["class_id"], dtype=np.int64),
            target=np.asarray(sources["target"], dtype=bool),
            real=~detected if mode == "residual" else np.ones(n, dtype=bool),
            mag=np.asarray(sources["mag"], dtype=np.float64),
            snr=np.asarray(sources["snr"], dtype=np.float64),
        )


@dataclasses.dataclass
class CurveCounts:
    """Counts along a threshold grid; add the counts of several scenes with ``+``."""

    thresholds: np.ndarray
    n_targets: int
    matched_targets: np.ndarray
    matched_real: np.ndarray
    n_detections: np.ndarray

    def __add__(self, other: CurveCounts) -> CurveCounts:
        if not np.array_equal(self.thresholds, other.thresholds):
            raise ValueError("Cannot add counts on different threshold grids.")
        return CurveCounts(
            self.thresholds,
            self.n_targets + other.n_targets,
            self.matched_targets + other.matched_targets,
            self.matched_real + other.matched_real,
            self.n_detections + other.n_detections,
        )

    @classmethod
    def zeros(cls, thresholds) -> CurveCounts:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        z = np.zeros(len(thresholds), dtype=np.int64)
        return cls(thresholds, 0, z.copy(), z.copy(), z.copy())


def count_curve(
    truth: TruthSet,
    det_xy: np.ndarray,
    det_score: np.ndarray | None,
    radius: float,
    thresholds=DEFAULT_THRESHOLDS,
    det_class: np.ndarray | None = None,
    class_id: int | None = None,
) -> CurveCounts:
    """Matched counts of one scene at each score threshold.

    Parameters
    ----------
    truth : `TruthSet`
        The scene's true sources.
    det_xy : `numpy.ndarray`
        (M, 2) detection positions.
    det_score : `numpy.ndarray`, optional
        (M,) scores; None for a detector without scores (every threshold
        then sees all detections).
    radius : `float`
        Matching radius in pixels.
    thresholds : array-like
        Score thresholds.
    det_class : `numpy.ndarray`, optional
        (M,) predicted class labels; required with ``class_id``.
    class_id : `int`, optional
        Restrict to one class (detections predicted as it, truth of it).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    det_xy = np.asarray(det_xy, dtype=np.float64).reshape(-1, 2)
    score = np.ones(len(det_xy)) if det_score is None else np.asarray(det_score, dtype=np.float64)
    in_class = np.ones(len(det_xy), dtype=bool)
    truth_in_class = np.ones(len(truth.xy), dtype=bool)
    if class_id is not None:
        if det_class is None:
            raise ValueError("det_class is needed to count one class.")
        in_class = np.asarray(det_class) == class_id
        truth_in_class = truth.class_id == class_id
    target_xy = truth.xy[truth.target & truth_in_class]
    real_xy = truth.xy[truth.real & truth_in_class]
    ignore_xy = truth.xy[truth.ignore] if truth.ignore is not None else np.zeros((0, 2))
    counts = CurveCounts.zeros(thresholds)
    counts.n_targets = len(target_xy)
    for k, threshold in enumerate(thresholds):
        chosen = det_xy[in_class & (score >= threshold)]
        counts.matched_targets[k] = len(match_positions(target_xy, chosen, radius)[0])
        _, real_match = match_positions(real_xy, chosen, radius)
        counts.matched_real[k] = len(real_match)
        ignored = 0
        if len(ignore_xy):
            unmatched = np.delete(chosen, real_match, axis=0)
            ignored = len(match_positions(ignore_xy, unmatched, radius)[0])
        counts.n_detections[k] = len(chosen) - ignored
    return counts


def detection_labels(
    truth: TruthSet, det_xy: np.ndarray, det_score: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """(real, counted): bool per detection, the labels a score calibration is fitted on.

    Detections are taken in decreasing score, each matched to the nearest
    real source within ``radius`` not matched yet (COCO's rule): ``real``
    says it found one, so a lower-scoring duplicate of a source is false.
    ``counted``: not an otherwise unmatched detection of an ignored source
    (those are neither right nor wrong, as in `count_curve`).
    """
    from scipy.spatial import cKDTree

    det_xy = np.asarray(det_xy, dtype=np.float64).reshape(-1, 2)
    real = np.zeros(len(det_xy), dtype=bool)
    real_xy = truth.xy[truth.real]
    if len(real_xy) and len(det_xy):
        tree = cKDTree(real_xy)
        taken = np.zeros(len(real_xy), dtype=bool)
        for index in np.argsort(-np.asarray(det_score, dtype=np.float64), kind="stable"):
            near = tree.query_ball_point(det_xy[index], radius)
            free = [j for j in near if not taken[j]]
            if free:
                distances = np.hypot(*(real_xy[free] - det_xy[index]).T)
                taken[free[int(np.argmin(distances))]] = True
                real[index] = True
    counted = np.ones(len(det_xy), dtype=bool)
    if truth.ignore is not None and np.any(truth.ignore):
        unmatched = np.flatnonzero(~real)
        _, ignored = match_positions(truth.xy[truth.ignore], det_xy[unmatched], radius)
        counted[unmatched[ignored]] = False
    return real, counted


def curve_metrics(counts: CurveCounts) -> dict[str, np.ndarray]:
    """Precision, recall and F1 along the threshold grid (precision 1 where nothing is detected)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(
            counts.n_detections > 0, counts.matched_real / np.maximum(counts.n_detections, 1), 1.0
        )
        recall = (
            counts.matched_targets / counts.n_targets
            if counts.n_targets
            else np.full(len(counts.thresholds), np.nan)
        )
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"threshold": counts.thresholds, "precision": precision, "recall": recall, "f1": f1}


def precision_at_recall(precision: np.ndarray, recall: np.ndarray, target: float = 0.8) -> float | None:
    """Best precision among thresholds reaching ``target`` recall (None if none does)."""
    ok = np.asarray(recall) >= target
    return float(np.max(np.asarray(precision)[ok])) if np.any(ok) else None


def recall_at_precision(
    precision: np.ndarray, recall: np.ndarray, target: float = 0.9
) -> tuple[float, int | None]:
    """Best recall among thresholds with precision at least ``target``, and that threshold's index."""
    ok = np.asarray(precision) >= target
    if not np.any(ok):
        return 0.0, None
    index = int(np.flatnonzero(ok)[np.argmax(np.asarray(recall)[ok])])
    return float(recall[index]), index


def matched_targets(truth: TruthSet, det_xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Which targets a detection list finds, and which detection finds each.

    Returns
    -------
    found : `numpy.ndarray`
        (ntargets,) bool, in target order.
    detection_index : `numpy.ndarray`
        (ntargets,) index of the matched detection, -1 where none.
    """
    target_index = np.flatnonzero(truth.target)
    ref, cand = match_positions(truth.xy[target_index], det_xy, radius)
    found = np.zeros(len(target_index), dtype=bool)
    found[ref] = True
    which = np.full(len(target_index), -1, dtype=np.int64)
    which[ref] = cand
    return found, which


def binned_recall(values: np.ndarray, found: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Recall in bins of ``values`` (e.g. magnitude): counts, found, recall per bin."""
    values = np.asarray(values, dtype=np.float64)
    found = np.asarray(found, dtype=bool)
    which = np.digitize(values, edges) - 1
    total, hits = [], []
    for b in range(len(edges) - 1):
        in_bin = which == b
        total.append(int(in_bin.sum()))
        hits.append(int((found & in_bin).sum()))
    recall = [h / t if t else None for h, t in zip(hits, total, strict=False)]
    return {"edges": [float(e) for e in edges], "total": total, "found": hits, "recall": recall}


def mask_iou(a: Footprint, b: Footprint) -> float:
    """Intersection over union of two footprints."""
    inter = mask_overlap(a, b)
    union = a.area + b.area - inter
    return inter / union if union else 0.0
