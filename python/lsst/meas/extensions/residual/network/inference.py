"""Tiled inference: run a model package on images of any size.

The image is cut into square tiles of ``tile_size`` pixels overlapping by
``overlap`` (the last row and column of tiles are shifted back to end at the
image edge; an image smaller than a tile is zero-padded, the padding being
marked bad). With ``fit_tiles`` the side may grow by up to the overlap where
that covers the image with fewer tile pixels (`fitted_tile_size`). Channels
are made per tile from the full image's band noise, so a tile's input is
exactly the corresponding cut-out of the whole image's channels. Tiles go
through the network in batches; each detection's 28×28 mask is resampled
onto its box in image pixels.

The same source can be found in two overlapping tiles, whole in one and cut
by the border of the other. Duplicates are merged greedily: detections whose
box does not touch an inner tile border come first, then by decreasing score;
a detection is dropped if a kept one from another tile, of the same class,
covers at least ``merge_ios`` of the smaller mask (intersection over
smaller). Detections from the same tile are never merged by masks: the
network's own non-maximum suppression (per class, then across classes at box
IoU ``class_nms_iou``) already handled them, and overlapping blended sources
(a star on a galaxy has a small box IoU) must survive.

Memory: besides the caller's arrays, one batch of tiles (channels, network
activations) and the footprints found so far; nothing image-sized is copied.
"""

from __future__ import annotations

__all__ = [
    "Detector",
    "find_sources",
    "find_sources_in_scene",
    "tile_starts",
    "fitted_tile_size",
    "network_precision",
    "select_device",
    "DeviceError",
]

import contextlib
import os
import re
from collections.abc import Sequence

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ..errors import InputError
from ..geometry import Footprint, boxes_overlap, mask_overlap
from .footprints import SourceDetections
from .inference_config import InferenceConfig
from .package import ModelPackage, ModelPackageError, load_model_package
from .recipes import band_noise, make_channels

# Mask probability above which a pixel belongs to a source (torchvision's choice).
_MASK_THRESHOLD = 0.5
# A box within this many pixels of an inner tile border counts as cut by it.
_BORDER_MARGIN = 1.0


class DeviceError(InputError):
    """The requested torch device does not exist here or is not one the network runs on."""


_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def select_device(device: str = "auto") -> str:
    """``"cuda"`` if ``device`` is ``"auto"`` and a GPU is available, else ``"cpu"``; else ``device``.

    Raises
    ------
    DeviceError
        If ``device`` is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or
        names a GPU that is not there.
    """
    import torch

    device = str(device)
    if not _DEVICE_PATTERN.match(device):
        raise DeviceError(f"Unknown device {device!r}: choose auto, cpu, cuda or cuda:N.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"Device {device!r} requested but CUDA is not available here.")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise DeviceError(f"Device {device!r} requested but only {count} GPU(s) exist.")
    return device


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels with at least ``overlap`` shared."""
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"Need tile_size > 0 and 0 <= overlap < tile_size; got {tile_size}, {overlap}.")
    if length <= tile_size:
        return [0]
    step = tile_size - overlap
    starts = list(range(0, length - tile_size, step))
    starts.append(length - tile_size)
    return starts


#: Tile sides are multiples of this (the network's coarsest stride).
TILE_STEP = 32


def fitted_tile_size(shape: tuple[int, int], tile_size: int, overlap: int) -> int:
    """The side, from ``tile_size`` to ``tile_size + overlap`` in steps of `TILE_STEP`, whose tiling
    of an image of ``shape`` (`tile_starts` on each axis) has the fewest pixels; the smallest such.

    Tiles of a fixed side cover a length that is not a whole number of steps with a last tile
    shifted back onto its neighbour: 2048 pixels take 5 tiles of 512 (the fifth sharing 320 pixels
    with the fourth), or 4 of 576 (64 each); 4096 pixels take 9 of 512 either way.
    """

    def pixels(side: int) -> int:
        return len(tile_starts(shape[0], side, overlap)) * len(tile_starts(shape[1], side, overlap)) * side**2

    return min(range(tile_size, tile_size + overlap + 1, TILE_STEP), key=lambda side: (pixels(side), side))


@contextlib.contextmanager
def network_precision(device: str, precision: str):
    """The arithmetic of network calls made inside: IEEE float32, or `torch.autocast` at a lower one.

    Parameters
    ----------
    device : `str`
        The device the network runs on (``"cpu"``, ``"cuda[:n]"``).
    precision : `str`
        ``"float32"``, ``"float16"`` or ``"bfloat16"`` (`InferenceConfig.precision`).
    """
    import torch

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if precision in ("float16", "bfloat16"):
        with torch.autocast(device_type, dtype=getattr(torch, precision)):
            yield
        return
    if precision != "float32":
        raise ValueError(f"precision must be float32, float16 or bfloat16, not {precision!r}.")
    if device_type != "cuda":
        yield
        return
    # PyTorch runs float32 convolutions on Ampere and later GPUs as TF32 (a 10-bit mantissa, as
    # float16's) unless told otherwise: "float32" is IEEE there too, for this call only.
    flags = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [flag.fp32_precision for flag in flags]
    for flag in flags:
        flag.fp32_precision = "ieee"
    try:
        yield
    finally:
        for flag, value in zip(flags, saved, strict=True):
            flag.fp32_precision = value


def _paste_mask(prob: np.ndarray, box: np.ndarray, shape: tuple[int, int]) -> tuple[Footprint, np.ndarray]:
    """Resample an M×M mask probability onto the pixels of its box (tile coordinates).

    torchvision builds mask targets with ``roi_align(aligned=False)``: bin j
    of a box starting at x0 with width w samples coordinate x0 + (j + ½)·w/M,
    where pixel i sits at coordinate i. The inverse maps pixel i to bin
    (i - x0)·M/w - ½; the probability there is interpolated bilinearly.
    """
    size = prob.shape[-1]
    x0, y0, x1, y1 = (float(v) for v in box)
    ia, ib = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), shape[1])
    ja, jb = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), shape[0])
    ib, jb = max(ib, ia + 1), max(jb, ja + 1)
    cols = (np.arange(ia, ib) - x0) * size / max(x1 - x0, 1e-3) - 0.5
    rows = (np.arange(ja, jb) - y0) * size / max(y1 - y0, 1e-3) - 0.5
    grid_r, grid_c = np.meshgrid(rows, cols, indexing="ij")
    values = ndimage.map_coordinates(prob, [grid_r, grid_c], order=1, mode="nearest")
    return Footprint(ja, ia, values >= _MASK_THRESHOLD), values


class Detector:
    """A model package ready to run on images.

    Parameters
    ----------
    package : `ModelPackage` or path-like
        The model package (loaded if a path).
    device : `str`
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda[:n]"``.
    """

    def __init__(self, package: ModelPackage | str | os.PathLike, device: str = "auto", model=None):
        self.package = package if isinstance(package, ModelPackage) else load_model_package(package)
        self.metadata = self.package.metadata
        self.device = select_device(device)
        import torch

        # ``model``: a live torchvision model to use instead of building one
        # from the package's weights (validation during training). Built here, its weights are
        # laid out channels-last, which torch's CPU and CUDA convolutions run faster (on this
        # project's 2-core CPU the network stage of a 2048² patch took 5–10% less time). The
        # convolutions then sum in another order: scores move by ~1e-3, and where a mask pixel
        # sits at its 0.5 cut it can flip (on the 2048² patch all 1217 new sources stayed within
        # 0.001 px; in the demo's patch 2 one mask centroid moved by 0.46 px).
        if model is None:
            model = self.package.build(self.device).to(memory_format=torch.channels_last)
            if self.device == "cpu":
                from .pooling import shard_roi_pooling

                # torchvision's CPU RoI pooling runs on one thread; the others would wait.
                shard_roi_pooling(model, torch.get_num_threads())
        self.model = model

        self._mean = torch.tensor(self.metadata.channel_mean, dtype=torch.float32, device=self.device)[
            :, None, None
        ]
        self._std = torch.tensor(self.metadata.channel_std, dtype=torch.float32, device=self.device)[
            :, None, None
        ]

    def _run_batch(
        self, tiles: list[np.ndarray], settings: InferenceConfig, growth: float = 1.0
    ) -> list[dict[str, np.ndarray]]:
        """Network outputs (tile coordinates) for a batch of equal-size channel tiles.

        ``settings`` are complete (`settings`); ``growth`` is the tiles' area
        over that of ``settings.tile_size``. Only detections scoring at least
        ``settings.score_threshold`` come out, and only
        theirs get masks: torchvision's own score cut (``box_score_thresh``) is
        raised to it for the call. The boxes and scores that pass are those
        of a run with the lower cut, since neither the per-class NMS nor the
        cross-class one below lets a lower-scoring box remove a higher one;
        the mask head, the dearest part on a CPU, then runs on fewer boxes.
        The RPN hands at most ``growth`` times ``settings.proposals_per_tile``
        boxes per tile to the heads, and the heads keep at most ``growth``
        times their own number (``box_detections_per_img``) per tile.
        """
        score_threshold = settings.score_threshold
        calibration = self.metadata.score_calibration
        # The network's own cut is on raw scores: a calibrated threshold is turned back into one.
        raw_threshold = score_threshold if calibration is None else calibration.raw_threshold(score_threshold)
        roi_heads, rpn = self.model.roi_heads, self.model.rpn
        own_cut = getattr(roi_heads, "score_thresh", None)  # None: heads other than torchvision's
        # torchvision's RPN keeps its per-mode proposal counts in this dict and has no setter.
        counts = getattr(rpn, "_post_nms_top_n", None)
        if counts is None or "testing" not in counts:
            raise TypeError(
                f"The model's RPN ({type(rpn).__name__}) is not torchvision's: it has no proposal count."
            )
        own_count = counts["testing"]
        own_detections = getattr(roi_heads, "detections_per_img", None)
        counts["testing"] = max(1, round(settings.proposals_per_tile * growth))
        if own_cut is not None:
            roi_heads.score_thresh = min(max(own_cut, raw_threshold), 1.0)
        if own_detections is not None:
            roi_heads.detections_per_img = max(1, round(own_detections * growth))
        try:
            return self._calibrated(self._forward(tiles, settings.class_nms_iou, settings.precision))
        finally:
            counts["testing"] = own_count
            if own_cut is not None:
                roi_heads.score_thresh = own_cut
            if own_detections is not None:
                roi_heads.detections_per_img = own_detections

    def _calibrated(self, outputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """``outputs`` with the package's score calibration applied (as they are without one)."""
        calibration = self.metadata.score_calibration
        if calibration is not None:
            for out in outputs:
                out["scores"] = calibration.apply(out["scores"])
        return outputs

    def _forward(
        self, tiles: list[np.ndarray], class_nms_iou: float, precision: str
    ) -> list[dict[str, np.ndarray]]:
        import torch
        from torchvision.models.detection.image_list import ImageList
        from torchvision.ops import nms

        with torch.inference_mode():
            batch = torch.from_numpy(np.stack(tiles)).to(self.device)
            batch = (batch - self._mean) / self._std
            size = batch.shape[-1]
            images = ImageList(batch, [(size, size)] * len(tiles))
            with network_precision(self.device, precision):
                features = self.model.backbone(images.tensors)
                proposals, _ = self.model.rpn(images, features)
                # roi_align copies channels-last maps to contiguous on each call; the box and mask
                # poolers then share one copy (on the CPU ~4% of the stage).
                features = {name: level.contiguous() for name, level in features.items()}
                outputs, _ = self.model.roi_heads(features, proposals, images.image_sizes)
            # torchvision suppresses overlapping boxes class by class, so one source can come
            # out as both a star and a galaxy; across classes, keep the better-scoring one.
            kept = [nms(o["boxes"].float(), o["scores"].float(), class_nms_iou) for o in outputs]
            outputs = [{k: v[keep] for k, v in o.items()} for o, keep in zip(outputs, kept, strict=True)]
        return [
            {
                "boxes": out["boxes"].float().cpu().numpy(),
                "labels": out["labels"].cpu().numpy(),
                "scores": out["scores"].float().cpu().numpy(),
                "masks": out["masks"][:, 0].float().cpu().numpy(),
            }
            for out in outputs
        ]

    def find(
        self,
        image: np.ndarray,
        variance: np.ndarray,
        bands: Sequence[str],
        model: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        *,
        pixel_scale: float | None = None,
        inference: InferenceConfig | None = None,
        progress: bool = False,
    ) -> SourceDetections:
        """Find sources in an image.

        Parameters
        ----------
        image, variance : `numpy.ndarray`
            (nbands, H, W) image and variance in ``bands``' order; bands the
            package does not use are ignored, and a package taking band
            subsets (`ModelMetadata.band_subsets`) sees the bands it uses
            that the data lack as bad everywhere.
        bands : sequence of `str`
            Bands of the planes.
        model : `numpy.ndarray`, optional
            (nbands, H, W) first-pass (Scarlet) model; required by packages
            whose recipe has ``residual`` or ``model`` channels.
        mask : `numpy.ndarray`, optional
            (nbands, H, W) mask, nonzero = bad pixel (a scene with mask planes: `Scene.bad_mask`).
        pixel_scale : `float`, optional
            Arcsec per pixel of the image, checked against the package's
            (`ModelMetadata.check_pixel_scale`); None: not checked.
        inference : `InferenceConfig`, optional
            Tiling, batching and score threshold; unset fields take the
            package's values.
        progress : `bool`
            Show a progress bar over batches.

        Returns
        -------
        detections : `SourceDetections`

        Raises
        ------
        ModelPackageError
            If bands, model cube or pixel scale do not fit the package.
        ValueError
            If arrays have inconsistent shapes or no usable pixel.
        """
        meta = self.metadata
        image = np.asarray(image)
        variance = np.asarray(variance)
        if image.ndim != 3:
            raise ValueError(f"image must be (nbands, H, W), not shape {image.shape}.")
        if len(bands) != image.shape[0]:
            raise ModelPackageError(f"image has {image.shape[0]} planes but {len(bands)} bands were named.")
        for name, array in (("variance", variance), ("model", model), ("mask", mask)):
            if array is not None and np.shape(array) != image.shape:
                raise ValueError(f"{name} shape {np.shape(array)} differs from image shape {image.shape}.")
        index = meta.check_data(tuple(bands), model is not None)
        settings = self.settings(inference)
        if pixel_scale is not None:
            meta.check_pixel_scale(float(pixel_scale), settings.pixel_scale_tolerance)

        height, width = image.shape[1:]
        # Band noise over the whole image, one band at a time (no image-sized copies). A band the
        # data lack (a package taking band subsets) has no pixel and no noise: its channels are 0.
        noise = np.ones(len(index))
        for out, band in enumerate(index):
            if band is None:
                continue
            var = np.asarray(variance[band])
            good = np.isfinite(var) & (var > 0) & np.isfinite(np.asarray(image[band]))
            if mask is not None:
                good &= np.asarray(mask[band]) == 0
            if meta.band_subsets and not good.any():
                continue  # a band without data is a band the data lack
            noise[out] = band_noise(var[None], good[None])[0]

        def make_tile(y0, x0, size):
            return self._tile_channels(image, variance, model, mask, index, noise, y0, x0, size)

        return self._find_tiles(make_tile, (height, width), settings, progress)

    def settings(self, inference: InferenceConfig | None = None) -> InferenceConfig:
        """``inference`` completed with the package's values and this device's batch size."""
        settings = (inference or InferenceConfig()).over(self.metadata.inference)
        if settings.batch_size is None:
            # On CPU a batch of 4 512² tiles costs ~0.6 GB more peak memory than one and is no faster.
            settings = settings.replace(batch_size=16 if self.device.startswith("cuda") else 1)
        if settings.proposals_per_tile is None:
            settings = settings.replace(proposals_per_tile=self.metadata.model.rpn_post_nms_top_n_test)
        if settings.fit_tiles is None:
            settings = settings.replace(fit_tiles=True)
        if settings.precision is None:
            settings = settings.replace(precision="float32")
        return settings

    def find_channels(
        self,
        channels: np.ndarray,
        *,
        inference: InferenceConfig | None = None,
    ) -> SourceDetections:
        """Like `find`, on channels already made by the package's recipe ((C, H, W) array)."""
        meta = self.metadata
        if channels.ndim != 3 or channels.shape[0] != len(meta.channels):
            raise ModelPackageError(
                f"Package {meta.name!r} takes {len(meta.channels)} channels; "
                f"got an array of shape {channels.shape}."
            )
        settings = self.settings(inference)
        height, width = channels.shape[1:]

        def make_tile(y0, x0, size):
            tile = np.zeros((channels.shape[0], size, size), dtype=np.float32)
            cut = np.asarray(channels[:, y0 : y0 + size, x0 : x0 + size], dtype=np.float32)
            tile[:, : cut.shape[1], : cut.shape[2]] = cut
            return tile

        return self._find_tiles(make_tile, (height, width), settings, False)

    def _find_tiles(self, make_tile, shape, settings: InferenceConfig, progress):
        overlap, batch_size = settings.tile_overlap, settings.batch_size
        threshold = settings.score_threshold
        height, width = shape
        tile_size = (
            fitted_tile_size(shape, settings.tile_size, overlap) if settings.fit_tiles else settings.tile_size
        )
        # A widened tile holds more sources: the heads' budgets stay the same per pixel.
        growth = (tile_size / settings.tile_size) ** 2
        tiles = [
            (y0, x0)
            for y0 in tile_starts(height, tile_size, overlap)
            for x0 in tile_starts(width, tile_size, overlap)
        ]
        candidates: list[tuple[dict, Footprint]] = []
        batches = range(0, len(tiles), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="tiles", unit="batch", total=len(batches))
        for start in batches:
            chunk = tiles[start : start + batch_size]
            outputs = self._run_batch([make_tile(y0, x0, tile_size) for y0, x0 in chunk], settings, growth)
            for tile_index, ((y0, x0), out) in enumerate(zip(chunk, outputs, strict=False), start=start):
                candidates.extend(
                    self._to_image(out, tile_index, y0, x0, tile_size, (height, width), threshold)
                )
        kept = _merge_duplicates(candidates, settings.merge_ios)
        return _to_detections(kept, self.metadata, (height, width))

    def _tile_channels(self, image, variance, model, mask, index, noise, y0, x0, size) -> np.ndarray:
        height, width = image.shape[1:]
        sy = slice(y0, min(y0 + size, height))
        sx = slice(x0, min(x0 + size, width))

        present = [out for out, band in enumerate(index) if band is not None]
        planes = [band for band in index if band is not None]
        shape = (len(index), sy.stop - sy.start, sx.stop - sx.start)

        def cut(array, fill=0.0):
            # The package's bands in its order; a band the data lack is ``fill`` (bad, below).
            if array is None:
                return None
            if len(present) == len(index):
                return np.asarray(array[index, sy, sx], dtype=np.float32)
            result = np.full(shape, fill, dtype=np.float32)
            result[present] = array[planes, sy, sx]
            return result

        img, var, mod = cut(image), cut(variance), cut(model)
        with np.errstate(invalid="ignore"):
            good = np.isfinite(img) & np.isfinite(var) & (var > 0)
        if mask is not None:
            good &= cut(mask, fill=1.0) == 0
        channels = make_channels(
            self.metadata.recipe, img, var, mod, good, noise, self.metadata.normalisation
        )
        if channels.shape[1:] != (size, size):
            padded = np.zeros((channels.shape[0], size, size), dtype=np.float32)
            padded[:, : channels.shape[1], : channels.shape[2]] = channels
            channels = padded
        return channels

    def _to_image(self, out, tile_index, y0, x0, size, shape, threshold) -> list[tuple[dict, Footprint]]:
        height, width = shape
        tile_shape = (min(size, height - y0), min(size, width - x0))
        found = []
        for box, label, score, prob in zip(
            out["boxes"], out["labels"], out["scores"], out["masks"], strict=False
        ):
            if score < threshold:
                continue
            footprint, values = _paste_mask(prob, box, tile_shape)
            truncated = (
                (box[0] <= _BORDER_MARGIN and x0 > 0)
                or (box[1] <= _BORDER_MARGIN and y0 > 0)
                or (box[2] >= size - _BORDER_MARGIN and x0 + size < width)
                or (box[3] >= size - _BORDER_MARGIN and y0 + size < height)
            )
            weights = np.where(footprint.mask, values, 0.0)
            total = weights.sum()
            if total > 0:
                rows, cols = np.indices(weights.shape)
                y = footprint.y0 + (weights * rows).sum() / total
                x = footprint.x0 + (weights * cols).sum() / total
            else:  # tiny or very faint: box centre, and its pixel as the footprint
                x, y = 0.5 * (box[0] + box[2]) - 0.5, 0.5 * (box[1] + box[3]) - 0.5
                cy = int(np.clip(round(y), 0, tile_shape[0] - 1))
                cx = int(np.clip(round(x), 0, tile_shape[1] - 1))
                footprint = Footprint(cy, cx, np.ones((1, 1), dtype=bool))
            footprint = Footprint(footprint.y0 + y0, footprint.x0 + x0, footprint.mask)
            found.append(
                (
                    {
                        "x": float(x + x0),
                        "y": float(y + y0),
                        "class_id": int(label),
                        "score": float(score),
                        "bbox_x0": float(box[0] + x0 - 0.5),
                        "bbox_y0": float(box[1] + y0 - 0.5),
                        "bbox_x1": float(box[2] + x0 - 0.5),
                        "bbox_y1": float(box[3] + y0 - 0.5),
                        "tile": tile_index,
                        "truncated": bool(truncated),
                    },
                    footprint,
                )
            )
        return found


def _merge_duplicates(
    candidates: list[tuple[dict, Footprint]], merge_ios: float
) -> list[tuple[dict, Footprint]]:
    """Drop detections duplicated in another tile (see module docstring)."""
    order = sorted(
        range(len(candidates)), key=lambda i: (candidates[i][0]["truncated"], -candidates[i][0]["score"])
    )
    kept: list[tuple[dict, Footprint]] = []
    kept_boxes = np.zeros((len(candidates), 4), dtype=np.int64)  # (y0, x0, height, width) of kept[k]
    for i in order:
        row, footprint = candidates[i]
        duplicate = False
        if kept:
            near = np.flatnonzero(boxes_overlap([footprint.box], kept_boxes[: len(kept)])[0])
            for j in near:
                other_row, other = kept[j]
                if other_row["tile"] == row["tile"] or other_row["class_id"] != row["class_id"]:
                    continue
                smaller = max(min(footprint.area, other.area), 1)
                if mask_overlap(footprint, other) / smaller >= merge_ios:
                    duplicate = True
                    break
        if not duplicate:
            box = footprint.box
            kept_boxes[len(kept)] = (box.y0, box.x0, box.height, box.width)
            kept.append((row, footprint))
    return kept


def _to_detections(kept, meta, shape) -> SourceDetections:
    kept = sorted(kept, key=lambda item: -item[0]["score"])
    table = Table()
    n = len(kept)
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    for column, dtype in (("x", np.float64), ("y", np.float64)):
        table[column] = np.array([r[column] for r, _ in kept], dtype=dtype)
    class_ids = np.array([r["class_id"] for r, _ in kept], dtype=np.int32)
    table["class"] = np.array([meta.classes[c - 1] for c in class_ids], dtype="U16")
    table["class_id"] = class_ids
    table["score"] = np.array([r["score"] for r, _ in kept], dtype=np.float32)
    for column in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
        table[column] = np.array([r[column] for r, _ in kept], dtype=np.float32)
    table["area"] = np.array([fp.area for _, fp in kept], dtype=np.int32)
    table["tile"] = np.array([r["tile"] for r, _ in kept], dtype=np.int32)
    table["truncated"] = np.array([r["truncated"] for r, _ in kept], dtype=bool)
    metadata = {"BANDS": ",".join(meta.bands), "MODEL": meta.name, "RECIPE": meta.recipe}
    return SourceDetections(table, [fp for _, fp in kept], shape, metadata)


def find_sources(
    package: ModelPackage | str | os.PathLike,
    image: np.ndarray,
    variance: np.ndarray,
    bands: Sequence[str],
    model: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    device: str = "auto",
    inference: InferenceConfig | None = None,
    progress: bool = False,
) -> SourceDetections:
    """Find sources with a model package (no files needed).

    A one-call wrapper around `Detector`; to run one package on many images,
    make a `Detector` once and call its `~Detector.find`. Parameters as there.
    """
    return Detector(package, device).find(
        image,
        variance,
        bands,
        model,
        mask,
        inference=inference,
        progress=progress,
    )


def find_sources_in_scene(
    detector: Detector, scene, model: np.ndarray | None = None, **kwargs
) -> SourceDetections:
    """`Detector.find` on a `~lsst.meas.extensions.residual.scene.Scene` (its mask and pixel scale
    included)."""
    return detector.find(
        scene.image,
        scene.variance,
        scene.bands,
        model,
        scene.bad_mask(),
        pixel_scale=scene.pixel_scale,
        **kwargs,
    )
