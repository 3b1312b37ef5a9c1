"""Figure of a deblending result: image, model and residual as RGB composites."""

from __future__ import annotations

__all__ = ["plot_deblend"]

import os

import numpy as np

from ..scene import Scene
from ..visualization import rgb_composite


def plot_deblend(scene: Scene, result, path: str | os.PathLike, title: str | None = None) -> None:
    """Save a PNG with image, model and residual (RGB, asinh stretch) side by side, peaks marked.

    The three panels share one stretch (set by the image's noise) so the
    residual's amplitude compares directly with the image. Peaks found by the
    first pass are red crosses, those added from the residual cyan circles;
    true sources (simulated scenes) are small white dots on the residual.

    Parameters
    ----------
    scene : `Scene`
        The deblended scene.
    result : `DeblendResult`
        The deblending result.
    path : `str` or `os.PathLike`
        Output PNG.
    title : `str`, optional
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = scene.clean_image()
    noise = np.sqrt(np.median(np.where(scene.good, scene.variance, np.nan)))
    stretch = 5.0 * float(noise) if np.isfinite(noise) and noise > 0 else None
    panels = (("image", image), ("model", result.model), ("residual (image − model)", result.residual))
    height, width = scene.shape
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.6), sharex=True, sharey=True)
    catalog = result.catalog
    first = np.asarray(catalog["found_by"]) != "residual"
    for ax, (name, cube) in zip(axes, panels, strict=True):
        with np.errstate(
            invalid="ignore", divide="ignore"
        ):  # astropy's Lupton RGB divides 0 by 0 on blank pixels
            rgb = rgb_composite(cube, scene.bands, stretch=stretch)
        ax.imshow(rgb, origin="lower", interpolation="nearest")
        ax.set_title(name)
        ax.scatter(catalog["x"][first], catalog["y"][first], s=18, marker="+", color="red", lw=0.8)
        if np.any(~first):
            ax.scatter(
                catalog["x"][~first], catalog["y"][~first], s=40, facecolors="none", edgecolors="cyan", lw=0.9
            )
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(-0.5, height - 0.5)
    if scene.truth is not None and len(scene.truth):
        xy = scene.truth.xy
        axes[2].scatter(xy[:, 0], xy[:, 1], s=2, color="white", alpha=0.5, lw=0)
    n_blends = len(np.unique(np.asarray(catalog["parent_id"]))) if len(catalog) else 0
    fig.suptitle(title or f"{len(catalog)} sources in {n_blends} blends; red +: first pass, cyan o: residual")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
