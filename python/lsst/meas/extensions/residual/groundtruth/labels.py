"""Labels of a simulated scene: what the network should find, from the scene's truth.

Training learns from them and evaluation scores against them, so both take
them from here.

Every true source gets:

``detected``
    It has a first-pass peak: Hungarian (one-to-one) matching of true
    positions to peak positions within ``match_radius`` pixels. Two true
    sources sharing one peak leave one of them undetected.
``snr``
    Its optimal (matched-filter) S/N had it been alone: √(Σ_b Σ_pix
    stamp² / variance) over the usable pixels of the image.
``recoverable``
    ``snr >= snr_cut``.
``target``
    What the network must find: in ``residual`` mode, recoverable sources
    without a first-pass peak; in ``image`` mode, all recoverable sources.

Each target gets a footprint (mask) and a box. The mask holds the pixels
where the source's noiseless isolated image is above ``mask_nsigma`` times
the noise (combined over bands: √Σ_b (stamp_b / σ_b)²); a faint source whose
image never gets there in any pixel keeps its ``min_mask_pixels`` most
significant pixels instead, so every target has a mask. The box is the
mask's bounding box (torchvision convention: pixel i spans [i, i+1)).

With ``artefact_types`` set, the scene's artefact truth (``ARTEFACTS``) gives
targets of a third class, ``artefact``, so that a network learns to name what
would otherwise be spurious detections. An artefact's pixels (its footprint
in the truth) lose those that are bad in every band (the network sees
nothing there, and the chain drops detections centred on them) and those
inside a source target's mask (a real source on a spike is a source); what is
left is cut into square cells of ``artefact_cell`` pixels aligned on the
footprint's corner, and each cell's pixels are one target. Cells keep the
boxes within the anchor sizes a detector proposes (a satellite trail crosses
the whole scene; a spike runs 20–90 pixels), and a detection anywhere along
an artefact then has a target of its size to match.
"""

from __future__ import annotations

__all__ = ["LabelConfig", "SceneLabels", "make_labels", "CLASSES", "ARTEFACT_CLASS", "class_ids"]

import dataclasses
from typing import Literal

import numpy as np
import pydantic
from astropy.table import Table

from ..artefact_truth import ARTEFACT_TYPES
from ..configs import StrictModel
from ..errors import InputError
from ..geometry import Footprint
from ..network.classes import ARTEFACT_CLASS, CLASSES
from ..scene import Scene
from .matching import match_positions


def class_ids(classes, names=CLASSES) -> np.ndarray:
    """1-based network labels of class names."""
    lookup = {name: i + 1 for i, name in enumerate(names)}
    try:
        return np.array([lookup[str(c)] for c in classes], dtype=np.int64)
    except KeyError as err:
        raise InputError(f"Unknown source class {err.args[0]!r}; known: {', '.join(names)}.") from None


class LabelConfig(StrictModel):
    """Which true sources become labels, and their masks.

    Build one from a mapping with ``LabelConfig(**values)`` or, for a one-line
    `~lsst.meas.extensions.residual.errors.ConfigError`,
    `~lsst.meas.extensions.residual.configs.validate_config`; ``model_dump()``
    gives the mapping back.
    """

    mode: Literal["residual", "image"] = "residual"
    """``"residual"``: the targets are the recoverable sources the first pass
    missed; ``"image"``: all recoverable sources."""
    match_radius: float = pydantic.Field(default=2.0, gt=0.0)
    """Pixels within which a first-pass peak counts as detecting a true source."""
    snr_cut: float = pydantic.Field(default=5.0, ge=0.0)
    """Recoverability cut on the isolated optimal S/N."""
    mask_nsigma: float = pydantic.Field(default=1.0, gt=0.0)
    """Mask threshold in noise σ (combined over bands)."""
    min_mask_pixels: int = pydantic.Field(default=6, ge=1)
    """Fewest pixels in a mask."""
    artefact_types: tuple[str, ...] = ()
    """Types of the artefact truth (``ARTEFACT_TYPES``) whose pixels are targets of the class
    ``artefact``; empty: no artefact targets, and the classes are the source classes only."""
    artefact_cell: int = pydantic.Field(default=32, ge=4)
    """Side (pixels) of the cells an artefact's pixels are cut into, one target each."""

    @pydantic.field_validator("artefact_types")
    @classmethod
    def _known_artefact_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(types) - set(ARTEFACT_TYPES))
        if unknown:
            raise ValueError(f"unknown artefact type(s) {unknown}; known: {list(ARTEFACT_TYPES)}")
        return tuple(dict.fromkeys(types))

    @property
    def classes(self) -> tuple[str, ...]:
        """The network's classes these labels train (label ``k`` is ``classes[k - 1]``)."""
        return (*CLASSES, ARTEFACT_CLASS) if self.artefact_types else CLASSES


@dataclasses.dataclass
class SceneLabels:
    """Truth of one scene seen by the network.

    Attributes
    ----------
    sources : `astropy.table.Table`
        One row per true source: ``truth_index``, ``id``, ``x``, ``y``,
        ``class``, ``class_id``, ``mag`` (reference band), ``snr``,
        ``band_snr2`` (nbands: the S/N² in each band, which sum to
        ``snr``²), ``detected``, ``recoverable``, ``target``.
    target_index : `numpy.ndarray`
        Rows of ``sources`` that are targets.
    footprints : `list` [`Footprint`]
        Mask of each target (same order as ``target_index``).
    boxes : `numpy.ndarray`
        (ntargets, 4) float32 boxes x0, y0, x1, y1 (pixel i spans [i, i+1)).
    artefacts : `astropy.table.Table`
        One row per artefact target (a cell of an artefact's pixels):
        ``artefact_id`` (its row's ``id`` in the scene's ``ARTEFACTS``),
        ``type``, ``x``, ``y`` (centroid of its pixels) and ``band_present``
        (nbands bool: the bands it lies in); empty without ``artefact_types``.
    artefact_footprints : `list` [`Footprint`]
        Pixels of each artefact target.
    artefact_boxes : `numpy.ndarray`
        (nartefacts, 4) float32 boxes, as ``boxes``.
    classes : `tuple` [`str`]
        The classes of the labels (`LabelConfig.classes`).
    """

    sources: Table
    target_index: np.ndarray
    footprints: list[Footprint]
    boxes: np.ndarray
    artefacts: Table
    artefact_footprints: list[Footprint]
    artefact_boxes: np.ndarray
    classes: tuple[str, ...] = CLASSES

    @property
    def targets(self) -> Table:
        return self.sources[self.target_index]

    def network_targets(self) -> tuple[np.ndarray, np.ndarray, list[Footprint]]:
        """What the network is trained to find: (N, 4) boxes, (N,) labels and footprints of the
        source targets, then of the artefact targets."""
        source_ids = np.asarray(self.targets["class_id"], dtype=np.int64)
        artefact_ids = np.full(len(self.artefacts), len(self.classes), dtype=np.int64)
        return (
            np.concatenate([self.boxes, self.artefact_boxes]).astype(np.float32).reshape(-1, 4),
            np.concatenate([source_ids, artefact_ids]),
            [*self.footprints, *self.artefact_footprints],
        )


def _reference_band(bands: tuple[str, ...]) -> int:
    return bands.index("i") if "i" in bands else len(bands) // 2


def make_labels(scene: Scene, peaks_xy: np.ndarray | None, config: LabelConfig) -> SceneLabels:
    """Label a simulated scene.

    Parameters
    ----------
    scene : `Scene`
        A scene with truth.
    peaks_xy : `numpy.ndarray`, optional
        (N, 2) first-pass peak positions; required in ``residual`` mode.
    config : `LabelConfig`
        Cuts.

    Raises
    ------
    InputError
        If the scene has no truth, or peaks are missing in residual mode.
    """
    if scene.truth is None:
        raise InputError("Labels need a simulated scene with truth (the scene has no TRUTH).")
    if config.mode == "residual" and peaks_xy is None:
        raise InputError("Residual-mode labels need the first-pass peaks.")
    truth = scene.truth
    shape = scene.shape
    good = scene.good
    inv_var = scene.weights()
    n = len(truth)

    detected = np.zeros(n, dtype=bool)
    if peaks_xy is not None and n:
        matched, _ = match_positions(truth.xy, np.asarray(peaks_xy).reshape(-1, 2), config.match_radius)
        detected[matched] = True

    snr = np.zeros(n)
    band_snr2 = np.zeros((n, scene.nbands))
    significance_maps = []
    for index in range(n):
        stamp, (sy, sx) = truth.isolated_image(index, shape)
        per_pixel = stamp.astype(np.float64) ** 2 * inv_var[:, sy, sx]
        band_snr2[index] = per_pixel.sum(axis=(1, 2))
        q2 = per_pixel.sum(axis=0)
        snr[index] = np.sqrt(q2.sum())
        significance_maps.append((np.sqrt(q2), sy, sx, good[:, sy, sx].any(axis=0)))
    recoverable = snr >= config.snr_cut
    target = recoverable & ~detected if config.mode == "residual" else recoverable.copy()

    footprints, boxes = [], []
    for index in np.flatnonzero(target):
        q, sy, sx, usable = significance_maps[index]
        q = np.where(usable, q, 0.0)
        threshold = config.mask_nsigma
        if np.count_nonzero(q >= threshold) < config.min_mask_pixels:
            flat = np.sort(q.ravel())[::-1]
            threshold = min(threshold, flat[min(config.min_mask_pixels, flat.size) - 1])
        mask = (q >= threshold) & (q > 0)
        rows, cols = np.nonzero(mask)
        if rows.size == 0:  # no usable pixel at all: not a target after all
            target[index] = False
            continue
        y0, x0 = sy.start + rows.min(), sx.start + cols.min()
        y1, x1 = sy.start + rows.max() + 1, sx.start + cols.max() + 1
        footprints.append(
            Footprint(int(y0), int(x0), mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])
        )
        boxes.append((x0, y0, x1, y1))

    artefacts, artefact_footprints = _artefact_targets(scene, footprints, config)
    ref = _reference_band(scene.bands)
    table = Table()
    table["truth_index"] = np.arange(n, dtype=np.int64)
    table["id"] = np.asarray(truth.table["id"], dtype=np.int64)
    table["x"] = truth.xy[:, 0] if n else np.zeros(0)
    table["y"] = truth.xy[:, 1] if n else np.zeros(0)
    table["class"] = np.asarray(truth.table["class"], dtype="U16")
    table["class_id"] = class_ids(table["class"]) if n else np.zeros(0, dtype=np.int64)
    mags = np.asarray(truth.table["mag"], dtype=np.float64).reshape(n, -1)
    table["mag"] = mags[:, ref] if n else np.zeros(0)
    table["snr"] = snr
    table["band_snr2"] = band_snr2
    table["detected"] = detected
    table["recoverable"] = recoverable
    table["target"] = target
    return SceneLabels(
        sources=table,
        target_index=np.flatnonzero(target),
        footprints=footprints,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        artefacts=artefacts,
        artefact_footprints=artefact_footprints,
        artefact_boxes=_boxes_of(artefact_footprints),
        classes=config.classes,
    )


def _boxes_of(footprints: list[Footprint]) -> np.ndarray:
    """(N, 4) float32 boxes x0, y0, x1, y1 of ``footprints``' masks."""
    boxes = [(f.x0, f.y0, f.x0 + f.mask.shape[1], f.y0 + f.mask.shape[0]) for f in footprints]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def _artefact_targets(
    scene: Scene, source_footprints: list[Footprint], config: LabelConfig
) -> tuple[Table, list[Footprint]]:
    """The artefact targets of ``scene`` (see the module docstring): their table and footprints."""
    rows: dict[str, list] = {"artefact_id": [], "type": [], "x": [], "y": [], "band_present": []}
    footprints: list[Footprint] = []
    nbands = scene.nbands
    if config.artefact_types and scene.artefacts is not None:
        usable = scene.good.any(axis=0)
        for footprint in source_footprints:
            usable[footprint.slices] &= ~footprint.mask
        cell = config.artefact_cell
        for row in scene.artefacts:
            if str(row["type"]) not in config.artefact_types:
                continue
            pixels = row["footprint"]
            visible = pixels.mask & usable[pixels.slices]
            band = str(row["band"])
            present = np.array([not band or name == band for name in scene.bands])
            for y in range(0, visible.shape[0], cell):
                for x in range(0, visible.shape[1], cell):
                    piece = Footprint.from_mask(
                        visible[y : y + cell, x : x + cell], (pixels.y0 + y, pixels.x0 + x)
                    )
                    if piece is None:
                        continue
                    ys, xs = np.nonzero(piece.mask)
                    rows["artefact_id"].append(int(row["id"]))
                    rows["type"].append(str(row["type"]))
                    rows["x"].append(piece.x0 + float(xs.mean()))
                    rows["y"].append(piece.y0 + float(ys.mean()))
                    rows["band_present"].append(present)
                    footprints.append(piece)
    table = Table()
    table["artefact_id"] = np.asarray(rows["artefact_id"], dtype=np.int64)
    table["type"] = np.asarray(rows["type"], dtype="U20")
    table["x"] = np.asarray(rows["x"], dtype=np.float64)
    table["y"] = np.asarray(rows["y"], dtype=np.float64)
    table["band_present"] = np.asarray(rows["band_present"], dtype=bool).reshape(-1, nbands)
    return table, footprints
