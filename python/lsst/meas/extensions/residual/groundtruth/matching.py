"""One-to-one matching of positions (Hungarian assignment within a radius)."""

from __future__ import annotations

__all__ = ["match_positions"]

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


def match_positions(
    reference: np.ndarray, candidates: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Match two position lists one to one, minimising the summed distance.

    Only pairs closer than ``radius`` can match. The problem is split into the
    connected groups of the "closer than radius" graph and each group is solved
    exactly with the Hungarian algorithm, so large catalogues stay cheap.

    Parameters
    ----------
    reference, candidates : `numpy.ndarray`
        (N, 2) and (M, 2) positions.
    radius : `float`
        Largest matching distance.

    Returns
    -------
    ref_index, cand_index : `numpy.ndarray`
        Indices of the matched pairs (same length), sorted by ``ref_index``.
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
    n, m = len(reference), len(candidates)
    if n == 0 or m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # "ndarray" output keeps pairs at zero distance (a sparse matrix would drop them).
    pairs = cKDTree(reference).sparse_distance_matrix(cKDTree(candidates), radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pair_ref, pair_cand = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    # Bipartite graph over n + m nodes; solve each connected group on its own.
    graph = coo_matrix((np.ones(len(pairs)), (pair_ref, pair_cand + n)), shape=(n + m, n + m))
    _, labels = connected_components(graph, directed=False)
    distance = {(int(r), int(c)): d for r, c, d in zip(pair_ref, pair_cand, pairs["v"], strict=True)}
    order = np.argsort(labels[pair_ref], kind="stable")
    rows, cols, groups = pair_ref[order], pair_cand[order], labels[pair_ref[order]]
    boundaries = np.flatnonzero(np.diff(groups)) + 1
    matched_ref, matched_cand = [], []
    for group_rows, group_cols in zip(np.split(rows, boundaries), np.split(cols, boundaries), strict=True):
        ref_ids, cand_ids = np.unique(group_rows), np.unique(group_cols)
        # Pairs beyond the radius cost more than any feasible assignment.
        cost = np.full((len(ref_ids), len(cand_ids)), 2.0 * radius * (len(ref_ids) + len(cand_ids)) + 1.0)
        ref_pos = {r: i for i, r in enumerate(ref_ids)}
        cand_pos = {c: j for j, c in enumerate(cand_ids)}
        for r, c in zip(group_rows, group_cols, strict=True):
            cost[ref_pos[r], cand_pos[c]] = distance[(int(r), int(c))]
        row_ind, col_ind = linear_sum_assignment(cost)
        feasible = cost[row_ind, col_ind] <= radius
        matched_ref.append(ref_ids[row_ind[feasible]])
        matched_cand.append(cand_ids[col_ind[feasible]])
    ref_index = np.concatenate(matched_ref).astype(np.int64)
    cand_index = np.concatenate(matched_cand).astype(np.int64)
    order = np.argsort(ref_index)
    return ref_index[order], cand_index[order]
