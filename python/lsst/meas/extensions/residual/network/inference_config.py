"""How a model package is run on images: one parameter set for every door.

The model package stores the values it was validated with (all fields set);
the command line (``--tile-size``...), the tasks' pex_config fields
(``tileSize``...) and training's validation runs give overrides, where `None`
means "the package's value". `InferenceConfig.over` merges the two.
"""

from __future__ import annotations

__all__ = ["InferenceConfig"]

from typing import Literal

import pydantic

from ..configs import StrictModel, make_config


class InferenceConfig(StrictModel):
    """Tiling, batching and selection of the network's detections."""

    tile_size: int | None = pydantic.Field(default=None, gt=0, multiple_of=32)
    """Side of the square tiles the image is cut into, a multiple of 32 (the
    network's stride); None: the package's."""
    tile_overlap: int | None = pydantic.Field(default=None, ge=0)
    """Pixels shared by neighbouring tiles; None: the package's."""
    fit_tiles: bool | None = None
    """Widen the tiles, by up to ``tile_overlap`` in steps of 32 pixels, where fewer tile pixels
    then cover the image (`fitted_tile_size`): a 2048² image takes 16 tiles of 576² instead of
    25 of 512², whose last row and column would overlap their neighbours by 320 pixels. A
    widened tile gets proposals and detections in proportion to its area. False: tiles of
    ``tile_size`` exactly; None: True. Not a package setting."""
    batch_size: int | None = pydantic.Field(default=None, ge=1)
    """Tiles per network call; None: 1 on CPU, 16 on a GPU. Memory grows with it (on CPU by
    about 0.2 GB per 512² tile, and batching does not make the CPU faster)."""
    proposals_per_tile: int | None = pydantic.Field(default=None, ge=1)
    """Region proposals of a tile that the RPN hands to the box and mask heads (after its NMS;
    torchvision's ``rpn_post_nms_top_n_test``); None: the package's model's
    (`ModelConfig.rpn_post_nms_top_n_test`, 1000 in the shipped packages), for a tile of
    ``tile_size`` (see ``fit_tiles``). On a CPU the heads cost about as much as the trunk at
    1000: fewer make the network faster, and too few lose sources in tiles that hold about as
    many (a 512² tile at 10-year depth holds ~300 sources; ``bench.network_settings`` measures
    both on a patch)."""
    precision: Literal["float32", "float16", "bfloat16"] | None = None
    """Arithmetic of the network: ``"float32"``, IEEE single precision on every device (on a GPU
    too, where PyTorch would otherwise run float32 convolutions as TF32), so that a GPU finds
    what a CPU finds; ``"float16"`` or ``"bfloat16"``, `torch.autocast` at that type, faster on
    GPUs, but it moves scores by ~0.005 and changes which detections pass the threshold
    (``bench.network_settings`` measures how many); None: ``"float32"``. Not a package setting."""
    score_threshold: float | None = pydantic.Field(default=None, ge=0.0, le=1.0)
    """Keep detections scoring at least this; None: the package's."""
    merge_ios: float | None = pydantic.Field(default=None, gt=0.0, le=1.0)
    """Detections from different tiles whose masks share at least this
    fraction of the smaller one are one source; None: the package's."""
    class_nms_iou: float | None = pydantic.Field(default=None, gt=0.0, le=1.0)
    """Box IoU above which detections of different classes are one source
    (the better-scoring one is kept); None: the package's."""
    pixel_scale_tolerance: float | None = pydantic.Field(default=None, ge=0.0)
    """How far (relative) the data's pixel scale may lie outside the range the package was
    trained on (`ModelMetadata.pixel_scales`) before the data are refused; None: the package's
    (0.05). A larger value runs a model on pixels it has not seen, at the user's risk."""

    @pydantic.model_validator(mode="after")
    def _overlap_below_tile(self) -> InferenceConfig:
        tile, overlap = self.tile_size, self.tile_overlap
        if tile is not None and overlap is not None and overlap >= tile:
            raise ValueError(
                f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size ({self.tile_size})"
            )
        return self

    def over(self, defaults: InferenceConfig) -> InferenceConfig:
        """These values where set, ``defaults``' elsewhere (validated again)."""
        merged = defaults.model_dump()
        merged.update({k: v for k, v in self.model_dump().items() if v is not None})
        return make_config(type(self), "inference config", **merged)
