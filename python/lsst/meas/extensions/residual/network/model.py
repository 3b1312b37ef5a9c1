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

import functools
from collections import OrderedDict
from typing import Annotated, Literal

import pydantic

from ..configs import StrictModel

BACKBONES = ("slim", "resnet18", "resnet34", "resnet50")

_Positive = Annotated[int, pydantic.Field(gt=0)]
_Fraction = Annotated[float, pydantic.Field(gt=0.0, le=1.0)]


class ModelConfig(StrictModel):
    """Architecture of the detector; with the weights it fixes the model."""

    in_channels: int = pydantic.Field(default=12, ge=1)
    """Number of input channels (set from the channel recipe)."""
    num_classes: int = pydantic.Field(default=3, ge=2)
    """Classes including background (background, star, galaxy)."""
    backbone: Literal[BACKBONES] = "slim"
    """``"slim"`` (small ResNet built here, CPU-trainable) or a torchvision
    ResNet: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` (for GPUs)."""
    slim_widths: tuple[_Positive, ...] = pydantic.Field(default=(32, 64, 96, 128), min_length=4, max_length=4)
    """Channels of the four stages of the ``"slim"`` trunk."""
    slim_blocks: tuple[_Positive, ...] = pydantic.Field(default=(1, 2, 2, 1), min_length=4, max_length=4)
    """Residual blocks per stage of the ``"slim"`` trunk."""
    group_norm_groups: _Positive = 8
    """Groups of the GroupNorm layers of the ``"slim"`` trunk."""
    fpn_channels: _Positive = 64
    """Channels of every FPN level (and of the heads' inputs)."""
    anchor_sizes: tuple[_Positive, ...] = pydantic.Field(
        default=(4, 8, 16, 32, 64), min_length=5, max_length=5
    )
    """Anchor side (pixels) on each of the 5 FPN levels, finest first. The
    ``"slim"`` levels have strides 2, 4, 8, 16, 32; the torchvision ResNets 4 ... 64."""
    aspect_ratios: tuple[Annotated[float, pydantic.Field(gt=0.0)], ...] = pydantic.Field(
        default=(0.5, 1.0, 2.0), min_length=1
    )
    """Height/width ratios of the anchors (the same on every level)."""
    box_head_size: _Positive = 256
    """Width of the two fully connected layers of the box head."""
    mask_head_layers: tuple[_Positive, ...] = pydantic.Field(default=(64, 64), min_length=1)
    """Widths of the convolutions of the mask head."""
    rpn_pre_nms_top_n_train: _Positive = 600
    """Region proposals per level kept before NMS, in training."""
    rpn_post_nms_top_n_train: _Positive = 300
    """Region proposals kept after NMS, in training."""
    rpn_pre_nms_top_n_test: _Positive = 2000
    """Region proposals per level kept before NMS, in inference."""
    rpn_post_nms_top_n_test: _Positive = 1000
    """Region proposals kept after NMS, in inference."""
    rpn_batch_size_per_image: _Positive = 128
    """Anchors sampled per image for the RPN loss."""
    rpn_fg_iou_thresh: _Fraction = 0.6
    """Anchor–box IoU above which an anchor is a positive in training."""
    rpn_bg_iou_thresh: _Fraction = 0.3
    """Anchor–box IoU below which an anchor is a negative in training."""
    box_batch_size_per_image: _Positive = 128
    """Proposals sampled per image for the box-head loss."""
    box_nms_thresh: _Fraction = 0.4
    """IoU of the per-class NMS of the final detections."""
    box_score_thresh: float = pydantic.Field(default=0.05, ge=0.0, lt=1.0)
    """Detections scoring below this are dropped inside the model."""
    box_detections_per_img: _Positive = 400
    """Most detections per tile (a 512² tile at 10-year depth holds ~300 sources)."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if any(width % self.group_norm_groups for width in self.slim_widths):
            raise ValueError(
                f"slim_widths {self.slim_widths} must be multiples of group_norm_groups "
                f"({self.group_norm_groups})"
            )
        if self.rpn_bg_iou_thresh > self.rpn_fg_iou_thresh:
            raise ValueError(
                f"rpn_bg_iou_thresh ({self.rpn_bg_iou_thresh}) must not exceed rpn_fg_iou_thresh "
                f"({self.rpn_fg_iou_thresh})"
            )
        return self


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
