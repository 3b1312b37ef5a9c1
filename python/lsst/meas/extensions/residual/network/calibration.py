"""Score calibration: a network score made into the probability that a detection is a real source.

A Mask R-CNN's class score ranks detections well but is not a probability,
and off the training domain its scale drifts: a fixed threshold then gives
another purity than the one it was chosen for. A package may carry a
`ScoreCalibration`, fitted on held-out simulated scenes: the isotonic
(monotone non-decreasing) regression of "is a real source" on the raw score
(`scipy.optimize.isotonic_regression`), stored as knots and interpolated
linearly between them. `Detector` then reports calibrated scores, and the
package's score threshold is a probability.

How well a set of probabilities is calibrated is measured by the expected
calibration error (`expected_calibration_error`: the detection-weighted mean
|mean probability − fraction real| over equal-width probability bins) and
shown by a reliability diagram (`plot_reliability`).
"""

from __future__ import annotations

__all__ = [
    "ScoreCalibration",
    "fit_score_calibration",
    "expected_calibration_error",
    "reliability_bins",
    "threshold_for_purity",
    "plot_reliability",
]

import os
from typing import Any, Literal

import numpy as np
import pydantic

from ..configs import StrictModel


class ScoreCalibration(StrictModel):
    """Knots (raw score → probability) of a monotone calibration; linear between knots, flat beyond."""

    method: Literal["isotonic"] = "isotonic"
    """How the knots were fitted."""
    scores: tuple[float, ...] = pydantic.Field(min_length=2)
    """Raw scores of the knots, increasing."""
    probabilities: tuple[float, ...] = pydantic.Field(min_length=2)
    """Calibrated probability at each knot, non-decreasing, in [0, 1]."""
    fitted_on: dict[str, Any] = pydantic.Field(default_factory=dict)
    """What the fit saw (scenes, seeds, numbers of detections)."""

    @pydantic.model_validator(mode="after")
    def _monotone(self) -> ScoreCalibration:
        x, y = np.asarray(self.scores), np.asarray(self.probabilities)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} knot scores but {len(y)} probabilities")
        if np.any(np.diff(x) <= 0):
            raise ValueError("knot scores must increase")
        if np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1:
            raise ValueError("knot probabilities must be non-decreasing and in [0, 1]")
        return self

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw ``scores`` (float32 like the network's)."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.scores, self.probabilities).astype(
            np.float32
        )

    def raw_threshold(self, probability: float) -> float:
        """The lowest raw score whose calibrated probability reaches ``probability`` (inf if none).

        Cutting raw scores there keeps exactly the detections whose calibrated score is at least
        ``probability`` (the calibration is non-decreasing).
        """
        x, y = np.asarray(self.scores), np.asarray(self.probabilities)
        if probability <= y[0]:
            return float("-inf")
        if probability > y[-1]:
            return float("inf")
        k = int(np.argmax(y >= probability))  # first knot at or above; k >= 1 here
        # On the segment (k-1, k) the probability rises linearly from y[k-1] < p to y[k] >= p.
        fraction = (probability - y[k - 1]) / (y[k] - y[k - 1])
        return float(x[k - 1] + fraction * (x[k] - x[k - 1]))


def fit_score_calibration(
    scores: np.ndarray, is_real: np.ndarray, max_knots: int = 64, **fitted_on: Any
) -> ScoreCalibration:
    """Isotonic regression of ``is_real`` on ``scores`` (`scipy.optimize.isotonic_regression`).

    Parameters
    ----------
    scores : `numpy.ndarray`
        Raw scores of held-out detections.
    is_real : `numpy.ndarray`
        Whether each matches a real source.
    max_knots : `int`
        At most this many knots are kept (the fit's steps, thinned evenly).
    **fitted_on
        Provenance stored with the calibration.

    Raises
    ------
    ValueError
        If there are fewer than two distinct scores, or no real or no false detection.
    """
    from scipy.optimize import isotonic_regression

    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_real = np.asarray(is_real, dtype=bool).ravel()
    if scores.shape != is_real.shape:
        raise ValueError(f"{len(scores)} scores but {len(is_real)} labels.")
    if is_real.all() or not is_real.any():
        raise ValueError("A calibration needs both real and false detections.")
    # One point per distinct score, weighted by its detections.
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    if len(unique) < 2:
        raise ValueError("A calibration needs at least two distinct scores.")
    real_share = np.bincount(inverse, weights=is_real.astype(np.float64)) / counts
    fitted = isotonic_regression(real_share, weights=counts.astype(np.float64), increasing=True).x
    # Knots: the first and last score, and the ends of each constant step of the fit.
    steps = np.flatnonzero(np.diff(fitted) != 0)
    keep = np.unique(np.concatenate([[0], steps, steps + 1, [len(unique) - 1]]))
    if len(keep) > max_knots:
        keep = keep[np.unique(np.linspace(0, len(keep) - 1, max_knots).round().astype(int))]
    fitted_on = {"n_detections": int(len(scores)), "n_real": int(is_real.sum()), **fitted_on}
    return ScoreCalibration(
        scores=tuple(float(v) for v in unique[keep]),
        probabilities=tuple(float(np.clip(v, 0.0, 1.0)) for v in fitted[keep]),
        fitted_on=fitted_on,
    )


def reliability_bins(
    probabilities: np.ndarray, is_real: np.ndarray, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Per equal-width probability bin: ``count``, ``mean_probability``, ``fraction_real`` (NaN if empty)."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    is_real = np.asarray(is_real, dtype=bool).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(which, weights=probabilities, minlength=n_bins) / count
        real = np.bincount(which, weights=is_real.astype(np.float64), minlength=n_bins) / count
    return {"edges": edges, "count": count, "mean_probability": mean, "fraction_real": real}


def expected_calibration_error(probabilities: np.ndarray, is_real: np.ndarray, n_bins: int = 10) -> float:
    """Σ_bins (n_bin / n) |mean probability − fraction real| (NaN without detections)."""
    bins = reliability_bins(probabilities, is_real, n_bins)
    count = bins["count"]
    if count.sum() == 0:
        return float("nan")
    used = count > 0
    gap = np.abs(bins["mean_probability"][used] - bins["fraction_real"][used])
    return float(np.sum(count[used] * gap) / count.sum())


def threshold_for_purity(probabilities: np.ndarray, is_real: np.ndarray, purity: float) -> float | None:
    """The lowest score threshold at which the detections kept are at least ``purity`` real (None if none)."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    is_real = np.asarray(is_real, dtype=bool).ravel()
    order = np.argsort(-probabilities, kind="stable")
    kept_real = np.cumsum(is_real[order])
    purity_at = kept_real / np.arange(1, len(order) + 1)
    # A threshold keeps every detection at or above it: test only where the score changes.
    sorted_scores = probabilities[order]
    last_of_value = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    ok = np.flatnonzero(last_of_value & (purity_at >= purity))
    return float(sorted_scores[ok[-1]]) if len(ok) else None


def plot_reliability(
    probabilities: np.ndarray, is_real: np.ndarray, path: str | os.PathLike, title: str, n_bins: int = 10
) -> None:
    """Reliability diagram (fraction real against mean probability per bin, with counts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = reliability_bins(probabilities, is_real, n_bins)
    used = bins["count"] > 0
    ece = expected_calibration_error(probabilities, is_real, n_bins)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, height_ratios=(3, 1))
    ax.plot([0, 1], [0, 1], "k--", lw=0.7, label="perfect calibration")
    ax.plot(bins["mean_probability"][used], bins["fraction_real"][used], "o-", label=f"ECE {ece:.3f}")
    ax.set_ylabel("fraction of detections that are real")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    centres = 0.5 * (bins["edges"][1:] + bins["edges"][:-1])
    hist.bar(centres, bins["count"], width=1.0 / n_bins, edgecolor="k", lw=0.4)
    hist.set_xlabel("score (probability)")
    hist.set_ylabel("detections")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
