"""The whole chain on one scene, without a Butler (what ``residual-detectron run`` does).

first-pass detection -> first-pass deblending -> network on the residuals ->
new sources (away from existing peaks) -> second deblending pass.

`select_new_sources` is shared with `ResidualDetectionTask`, so the Butler
and the file-based chain decide "new" the same way. This module imports no
Butler code.
"""

from __future__ import annotations

__all__ = ["ChainConfig", "ChainResult", "run_chain", "select_new_sources", "final_catalog"]

import dataclasses
import logging
import time

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from ..deblending import DeblendConfig, DeblendResult, deblend, deblend_with_new_peaks
from ..detection import DetectionConfig, Detections, detect_peaks
from ..network import Detector, InferenceConfig, SourceDetections
from ..scene import Scene

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class ChainConfig:
    """Parameters of the chain (network ones default to the model package's)."""

    detection: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
    deblend: DeblendConfig = dataclasses.field(default_factory=DeblendConfig)
    match_radius: float = 2.0
    """A network detection closer than this (pixels) to a first-pass peak is not new."""
    score_threshold: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.match_radius < 0:
            raise ValueError(f"match_radius must be >= 0, not {self.match_radius}.")


@dataclasses.dataclass
class ChainResult:
    """Everything the chain produced for one scene (patch pixels, local ids)."""

    detections: Detections
    first_pass: DeblendResult
    new_sources: SourceDetections
    """Network detections kept as new, ids = the second pass's ids for them."""
    n_matched: int
    """Network detections dropped because they sit on a first-pass peak."""
    second_pass: DeblendResult
    timing: dict


def select_new_sources(
    found: SourceDetections, existing_xy: np.ndarray, radius: float
) -> tuple[SourceDetections, int]:
    """The detections with no existing peak within ``radius`` pixels, and how many were dropped."""
    points = found.xy
    reference = np.asarray(existing_xy, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0 or len(reference) == 0 or radius <= 0:
        keep = np.ones(len(points), dtype=bool)
    else:
        distance, _ = cKDTree(reference).query(points, k=1, distance_upper_bound=radius)
        keep = ~np.isfinite(distance) | (distance > radius)
    return found.select(keep), int(np.sum(~keep))


def run_chain(
    scene: Scene, detector: Detector, config: ChainConfig | None = None, progress: bool = False
) -> ChainResult:
    """Run the chain on ``scene``.

    Parameters
    ----------
    scene : `Scene`
        The scene (bad pixels are handled by every stage).
    detector : `Detector`
        The network (`Detector(package, device)`).
    config : `ChainConfig`, optional
        Parameters.
    progress : `bool`
        Progress bars over deblended blends and network tiles.

    Returns
    -------
    result : `ChainResult`

    Raises
    ------
    lsst.meas.extensions.residual.network.ModelPackageError
        If the scene lacks a band the package needs.
    """
    config = ChainConfig() if config is None else config
    detector.metadata.check_data(scene.bands, has_model=True)
    deblend_config = dataclasses.replace(config.deblend, show_progress=progress)
    timing = {}
    start = time.perf_counter()
    detections = detect_peaks(scene, config.detection)
    timing["detection"] = time.perf_counter() - start
    start = time.perf_counter()
    first_pass = deblend(scene, detections, deblend_config)
    timing["first_pass"] = time.perf_counter() - start
    start = time.perf_counter()
    found = detector.find(
        scene.image,
        scene.variance,
        scene.bands,
        first_pass.model,
        scene.mask,
        inference=InferenceConfig(
            tile_size=config.tile_size,
            tile_overlap=config.overlap,
            batch_size=config.batch_size,
            score_threshold=config.score_threshold,
        ),
        progress=progress,
    )
    existing = np.column_stack([first_pass.catalog["x"], first_pass.catalog["y"]]).reshape(-1, 2)
    new_sources, n_matched = select_new_sources(found, existing, config.match_radius)
    timing["network"] = time.perf_counter() - start
    start = time.perf_counter()
    n_old = len(detections.peaks)
    if len(new_sources):
        second_pass = deblend_with_new_peaks(scene, first_pass, new_sources.xy, deblend_config)
        new_ids = np.asarray(second_pass.detections.peaks["id"][n_old:], dtype=np.int64)
    else:
        second_pass = first_pass
        new_ids = np.zeros(0, dtype=np.int64)
    new_sources.table["id"] = new_ids
    timing["second_pass"] = time.perf_counter() - start
    _log.info(
        "%d first-pass peaks, %d new sources (%d on existing peaks dropped), "
        "%d sources after the second pass.",
        n_old,
        len(new_sources),
        n_matched,
        len(second_pass.catalog),
    )
    return ChainResult(detections, first_pass, new_sources, n_matched, second_pass, timing)


def final_catalog(result: ChainResult) -> Table:
    """The second-pass catalog with the network's class and score for the sources it found.

    ``found_by`` is ``"first_pass"`` or ``"residual"``; ``class`` is empty and
    ``score`` NaN for first-pass sources.
    """
    catalog = result.second_pass.catalog.copy()
    new = result.new_sources.table
    by_id = {int(i): k for k, i in enumerate(np.asarray(new["id"]))}
    rows = [by_id.get(int(i), -1) for i in catalog["id"]]
    catalog["class"] = np.array([str(new["class"][r]) if r >= 0 else "" for r in rows], dtype="U16")
    catalog["score"] = np.array(
        [float(new["score"][r]) if r >= 0 else np.nan for r in rows], dtype=np.float32
    )
    return catalog
