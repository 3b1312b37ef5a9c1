"""RoI pooling spread over the CPU's threads at inference.

torchvision's CPU ``roi_align`` kernel runs on one thread, whatever
``torch.get_num_threads()`` says, and with 1000 proposals per 512² tile it took
26% of the network stage on this project's 2-core CPU (`torch.profiler`, the
shipped residual package on a simulated 1024² patch).
Each box is pooled on its own, so the boxes can be split into shards pooled
at once by a thread pool (the kernel releases the GIL) and the results put
back in order: the output is the same tensor, bit for bit.

`ShardedRoIAlign` wraps a `~torchvision.ops.MultiScaleRoIAlign` (it has no
weights, so a model's state dict is unchanged) and shards only where that
helps: CPU tensors, no autograd (training keeps torchvision's path), no
autocast, and enough boxes to share.
"""

from __future__ import annotations

__all__ = ["ShardedRoIAlign", "shard_roi_pooling"]

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

#: Fewer boxes than this per shard are pooled in one call: a thread hand-off costs more.
MIN_BOXES_PER_SHARD = 64


def _one_thread() -> None:
    # A shard's own tensor ops (the output's allocation, the level scatter) would otherwise start
    # an OpenMP team per worker, whose spinning threads then slow the trunk of the next tile.
    torch.set_num_threads(1)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    main_threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roi-align", initializer=_one_thread)
    # Start every worker now (each waits for the others, so none takes two of these tasks), then
    # give torch's global thread count, which `_one_thread` lowered, back to the other threads.
    started = threading.Barrier(workers)
    list(pool.map(lambda _: started.wait(), range(workers)))
    torch.set_num_threads(main_threads)
    return pool


# A forked child has none of its parent's worker threads: it starts its own pool.
os.register_at_fork(after_in_child=_pool.cache_clear)


class ShardedRoIAlign(nn.Module):
    """``pooler`` with each image's boxes split among up to ``shards`` threads (CPU inference).

    Parameters
    ----------
    pooler : `torchvision.ops.MultiScaleRoIAlign`
        The pooler that does the work.
    shards : `int`
        Most threads one call uses.
    """

    def __init__(self, pooler: nn.Module, shards: int):
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be at least 1, not {shards}.")
        self.pooler = pooler
        self.shards = int(shards)

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes) -> torch.Tensor:
        n_boxes = sum(len(b) for b in boxes)
        shards = min(self.shards, n_boxes // MIN_BOXES_PER_SHARD)
        if (
            shards < 2
            or torch.is_grad_enabled()
            # Autocast is per thread: the workers would pool the reduced-precision maps as they are.
            or torch.is_autocast_enabled("cpu")
            or next(iter(x.values())).device.type != "cpu"
            # The pooler works out its levels' scales on its first call; that call stays whole.
            or getattr(self.pooler, "scales", None) is None
        ):
            return self.pooler(x, boxes, image_shapes)
        # The kernel copies a channels-last map to contiguous on every call: once here, not per shard.
        x = {name: level.contiguous() for name, level in x.items()}
        parts = [[b[k * len(b) // shards : (k + 1) * len(b) // shards] for b in boxes] for k in range(shards)]
        pooled = list(_pool(self.shards).map(lambda part: self.pooler(x, part, image_shapes), parts))
        # Each shard's output runs image by image; the whole call's runs image by image, then shard.
        pieces, offsets = [], [0] * shards
        for image in range(len(boxes)):
            for k in range(shards):
                count = len(parts[k][image])
                pieces.append(pooled[k][offsets[k] : offsets[k] + count])
                offsets[k] += count
        return torch.cat(pieces)


def shard_roi_pooling(model, shards: int) -> None:
    """Replace the box and mask poolers of a torchvision Mask R-CNN by `ShardedRoIAlign` (in place)."""
    heads = model.roi_heads
    for name in ("box_roi_pool", "mask_roi_pool"):
        pooler = getattr(heads, name, None)
        if pooler is not None and not isinstance(pooler, ShardedRoIAlign):
            setattr(heads, name, ShardedRoIAlign(pooler, shards))
