"""Hungarian matching within a radius."""

from __future__ import annotations

import numpy as np
from lsst.meas.extensions.residual.groundtruth import match_positions


def test_optimal_not_greedy():
    # Greedy nearest-first would match ref 0 to cand 0 (d=0.9) and leave ref 1
    # unmatched; the optimal assignment matches both.
    reference = np.array([[0.0, 0.0], [1.8, 0.0]])
    candidates = np.array([[0.9, 0.0], [-0.95, 0.0]])
    ref, cand = match_positions(reference, candidates, radius=1.0)
    assert list(zip(ref, cand, strict=True)) == [(0, 1), (1, 0)]


def test_radius_and_zero_distance():
    reference = np.array([[5.0, 5.0], [20.0, 20.0]])
    candidates = np.array([[5.0, 5.0], [23.0, 20.0]])
    ref, cand = match_positions(reference, candidates, radius=2.0)
    assert list(ref) == [0] and list(cand) == [0]


def test_empty_inputs():
    ref, cand = match_positions(np.zeros((0, 2)), np.array([[1.0, 2.0]]), radius=1.0)
    assert len(ref) == len(cand) == 0


def test_many_independent_groups_match_brute_force():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 200, size=(300, 2))
    candidates = reference[rng.permutation(300)[:250]] + rng.normal(0, 0.3, size=(250, 2))
    ref, cand = match_positions(reference, candidates, radius=1.5)
    assert len(ref) >= 245
    assert len(set(ref)) == len(ref) and len(set(cand)) == len(cand)
    assert np.all(np.hypot(*(reference[ref] - candidates[cand]).T) <= 1.5)
