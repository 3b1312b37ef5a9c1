"""Step 3 of the chain: the network on the first-pass residuals, and which of its detections are new."""

from __future__ import annotations

__all__ = ["ARTEFACT_CLASS", "NewSources", "NewSourcesConfig", "find_new_sources", "select_new_sources"]

import dataclasses

import numpy as np
import pydantic
from scipy.spatial import cKDTree

from ..configs import StrictModel
from ..network import Detector, InferenceConfig, SourceDetections, find_sources_in_scene
from ..network.classes import ARTEFACT_CLASS
from ..scene import Scene


class NewSourcesConfig(StrictModel):
    """Which of the network's detections are new sources."""

    match_radius: float = pydantic.Field(default=2.0, ge=0.0)
    """A network detection closer than this (pixels) to a first-pass peak is not new."""


@dataclasses.dataclass
class NewSources:
    """Network detections kept as new sources of one patch (patch pixels, local ids).

    Attributes
    ----------
    detections : `SourceDetections`
        The new sources; ``id`` is the peak id the second pass gives each
        (after the largest first-pass peak id), in decreasing score.
    parents : `numpy.ndarray`
        Local id of the first-pass parent whose footprint holds each
        source's pixel (0: none).
    n_matched : `int`
        Detections dropped because they sit on a first-pass peak.
    n_masked : `int`
        Detections dropped because their centre pixel has no data in any
        band (masked pixels never make sources).
    """

    detections: SourceDetections
    parents: np.ndarray
    n_matched: int
    n_masked: int = 0

    def __len__(self) -> int:
        return len(self.detections)

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.detections.table["id"], dtype=np.int64)

    @property
    def xy(self) -> np.ndarray:
        return self.detections.xy

    @property
    def peaks(self) -> np.ndarray:
        """Bool per new source: whether it becomes a second-pass peak (every one but the artefacts)."""
        return np.asarray(self.detections.table["class"]).astype(str) != ARTEFACT_CLASS


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


def find_new_sources(
    scene: Scene,
    first_pass_model: np.ndarray,
    first_pass_parents: np.ndarray,
    existing_xy: np.ndarray,
    next_id: int,
    detector: Detector,
    inference: InferenceConfig | None = None,
    config: NewSourcesConfig | None = None,
    progress: bool = False,
) -> NewSources:
    """Run the network on ``scene`` with its first-pass model and keep what is new.

    Parameters
    ----------
    scene : `Scene`
        The patch (patch pixels).
    first_pass_model : `numpy.ndarray`
        (nbands, H, W) first-pass model, observed PSF.
    first_pass_parents : `numpy.ndarray`
        (H, W) local parent id of each pixel (`parent_footprints`).
    existing_xy : `numpy.ndarray`
        (N, 2) first-pass source positions (x, y), patch pixels.
    next_id : `int`
        Local id of the first new source (the largest first-pass peak id + 1).
    detector : `Detector`
        The network.
    inference : `InferenceConfig`, optional
        Overrides of the package's inference settings.
    config : `NewSourcesConfig`, optional
        Which detections are new (default: `NewSourcesConfig`'s).
    progress : `bool`
        Progress bar over tile batches.

    Raises
    ------
    lsst.meas.extensions.residual.network.ModelPackageError
        If the scene lacks a band the package needs.
    """
    found = find_sources_in_scene(detector, scene, first_pass_model, inference=inference, progress=progress)
    config = NewSourcesConfig() if config is None else config
    x, y = _pixels(found, scene.shape)
    with_data = scene.has_data()[y, x]
    found = found.select(with_data)
    new, n_matched = select_new_sources(found, existing_xy, config.match_radius)
    new.table["id"] = np.arange(next_id, next_id + len(new), dtype=np.int64)
    x, y = _pixels(new, scene.shape)
    parents = np.asarray(first_pass_parents)[y, x].astype(np.int64)
    return NewSources(new, parents, n_matched, int(np.sum(~with_data)))


def _pixels(detections: SourceDetections, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of each detection's centre pixel, inside the image."""
    height, width = shape
    x = np.clip(np.floor(np.asarray(detections.table["x"]) + 0.5).astype(int), 0, width - 1)
    y = np.clip(np.floor(np.asarray(detections.table["y"]) + 0.5).astype(int), 0, height - 1)
    return x, y
