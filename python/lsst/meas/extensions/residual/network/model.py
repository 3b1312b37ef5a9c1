"""Build the Mask R-CNN for N input channels from torchvision parts.

The model is composed, not subclassed: a ResNet trunk, torchvision's
`~torchvision.models.detection.backbone_utils.BackboneWithFPN`, an
`~torchvision.models.detection.anchor_utils.AnchorGenerator`, two
`~torchvision.ops.MultiScaleRoIAlign` poolers and small box and mask heads
are handed to `~torchvision.models.detection.MaskRCNN`.

Astronomical sources are small: point sources a few pixels across, galaxies
up to ~60 pixels. The default trunk (``"slim"``) therefore has no max-pool
(its first FPN level has stride 2, not 4), reduced widths and GroupNorm
(batch statistics of a few 128² stamps are noisy, and GroupNorm makes a tile's
output independent of what else is in the batch). The larger torchvision
ResNets are available for GPU training.
"""

from __future__ import annotations

__all__ = ["ModelConfig", "build_model", "set_input_size", "count_parameters", "BACKBONES"]

import dataclasses
import functools
from collections import OrderedDict
from typing import Any

BACKBONES = ("slim", "resnet18", "resnet34", "resnet50")


@dataclasses.dataclass
class ModelConfig:
    """Architecture of the detector; with the weights it fixes the model."""

    in_channels: int = 12
    """Number of input channels (set from the channel recipe)."""
    num_classes: int = 3
    """Classes including background (background, star, galaxy)."""
    backbone: str = "slim"
    """``"slim"`` (small ResNet built here, CPU-trainable) or a torchvision
    ResNet: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` (for GPUs)."""
    slim_widths: tuple[int, int, int, int] = (32, 64, 96, 128)
    """Channels of the four stages of the ``"slim"`` trunk."""
    slim_blocks: tuple[int, int, int, int] = (1, 2, 2, 1)
    """Residual blocks per stage of the ``"slim"`` trunk."""
    group_norm_groups: int = 8
    """Groups of the GroupNorm layers of the ``"slim"`` trunk."""
    fpn_channels: int = 64
    """Channels of every FPN level (and of the heads' inputs)."""
    anchor_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)
    """Anchor side (pixels) on each FPN level, finest first. The ``"slim"``
    levels have strides 2, 4, 8, 16, 32; the torchvision ResNets 4 ... 64."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    box_head_size: int = 256
    """Width of the two fully connected layers of the box head."""
    mask_head_layers: tuple[int, ...] = (64, 64)
    """Widths of the convolutions of the mask head."""
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 128
    rpn_fg_iou_thresh: float = 0.6
    rpn_bg_iou_thresh: float = 0.3
    box_batch_size_per_image: int = 128
    box_nms_thresh: float = 0.4
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 400
    """Most detections per tile (a 512² tile at 10-year depth holds ~300 sources)."""

    def __post_init__(self) -> None:
        self.slim_widths = tuple(int(w) for w in self.slim_widths)
        self.slim_blocks = tuple(int(b) for b in self.slim_blocks)
        self.anchor_sizes = tuple(int(a) for a in self.anchor_sizes)
        self.aspect_ratios = tuple(float(a) for a in self.aspect_ratios)
        self.mask_head_layers = tuple(int(w) for w in self.mask_head_layers)
        if self.backbone not in BACKBONES:
            raise ValueError(f"Unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}.")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, not {self.in_channels}.")
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must count background and at least one class, not {self.num_classes}."
            )
        if len(self.slim_widths) != 4 or len(self.slim_blocks) != 4:
            raise ValueError("slim_widths and slim_blocks need one entry per stage (4).")
        if any(w % self.group_norm_groups for w in self.slim_widths):
            raise ValueError(f"slim_widths {self.slim_widths} must be multiples of group_norm_groups.")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per FPN level (5), not {self.anchor_sizes}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown model config key(s): {', '.join(unknown)}.")
        return cls(**data)


def _slim_trunk(config: ModelConfig):
    """A small ResNet (torchvision BasicBlocks) without max-pool, as named stages."""
    from torch import nn
    from torchvision.models.resnet import BasicBlock

    norm = functools.partial(nn.GroupNorm, config.group_norm_groups)
    width0 = config.slim_widths[0]
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = nn.Sequential(
        nn.Conv2d(config.in_channels, width0, kernel_size=3, stride=2, padding=1, bias=False),
        norm(width0),
        nn.ReLU(inplace=True),
    )
    inplanes = width0
    for index, (width, blocks) in enumerate(zip(config.slim_widths, config.slim_blocks, strict=False)):
        stride = 1 if index == 0 else 2
        layers = []
        for block in range(blocks):
            downsample = None
            if block == 0 and (stride != 1 or inplanes != width):
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, width, kernel_size=1, stride=stride, bias=False), norm(width)
                )
            layers.append(
                BasicBlock(
                    inplanes, width, stride if block == 0 else 1, downsample=downsample, norm_layer=norm
                )
            )
            inplanes = width
        stages[f"layer{index + 1}"] = nn.Sequential(*layers)
    return nn.Sequential(stages), list(config.slim_widths)


def _torchvision_trunk(config: ModelConfig):
    """A torchvision ResNet with its first convolution taking ``in_channels``."""
    from torch import nn
    from torchvision.models import resnet

    trunk = getattr(resnet, config.backbone)(weights=None, norm_layer=nn.BatchNorm2d)
    trunk.conv1 = nn.Conv2d(config.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")
    expansion = 4 if config.backbone == "resnet50" else 1
    return trunk, [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]


def build_model(config: ModelConfig, image_mean=None, image_std=None, input_size: int = 128):
    """Build an untrained Mask R-CNN.

    Parameters
    ----------
    config : `ModelConfig`
        Architecture.
    image_mean, image_std : sequence of `float`, optional
        Per-channel normalisation applied by the model (default 0 and 1:
        the channel recipes already produce unit-noise channels).
    input_size : `int`
        Side of the square inputs; the model never rescales them (see
        `set_input_size`).

    Returns
    -------
    model : `torchvision.models.detection.MaskRCNN`
    """
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    if config.backbone == "slim":
        trunk, widths = _slim_trunk(config)
    else:
        trunk, widths = _torchvision_trunk(config)
    backbone = BackboneWithFPN(
        trunk,
        return_layers={f"layer{i + 1}": str(i) for i in range(4)},
        in_channels_list=widths,
        out_channels=config.fpn_channels,
    )
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in config.anchor_sizes),
        aspect_ratios=(config.aspect_ratios,) * len(config.anchor_sizes),
    )
    levels = ["0", "1", "2", "3"]
    box_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(featmap_names=levels, output_size=14, sampling_ratio=2)
    box_head = TwoMLPHead(config.fpn_channels * 7 * 7, config.box_head_size)
    mask_head = MaskRCNNHeads(config.fpn_channels, list(config.mask_head_layers), dilation=1)
    nchan = config.in_channels
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=input_size,
        max_size=input_size,
        image_mean=[0.0] * nchan if image_mean is None else [float(v) for v in image_mean],
        image_std=[1.0] * nchan if image_std is None else [float(v) for v in image_std],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        rpn_fg_iou_thresh=config.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=config.rpn_bg_iou_thresh,
        box_roi_pool=box_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(config.box_head_size, config.num_classes),
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_nms_thresh=config.box_nms_thresh,
        box_score_thresh=config.box_score_thresh,
        box_detections_per_img=config.box_detections_per_img,
        mask_roi_pool=mask_pool,
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(
            config.mask_head_layers[-1], config.mask_head_layers[-1], config.num_classes
        ),
    )
    if len(model.transform.image_mean) != nchan or len(model.transform.image_std) != nchan:
        raise ValueError(f"image_mean and image_std need {nchan} values (one per channel).")
    return model


def set_input_size(model, size: int) -> None:
    """Make ``model`` take square ``size``² inputs without rescaling them.

    torchvision's transform rescales every image so that its short side is
    ``min_size`` (capped by ``max_size``); with both equal to the (square)
    input side the scale factor is exactly 1. Inputs must be square.
    """
    model.transform.min_size = (int(size),)
    model.transform.max_size = int(size)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
