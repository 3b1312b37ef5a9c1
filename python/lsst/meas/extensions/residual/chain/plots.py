"""The chain's figure of one patch: image, first-pass model, residual before and after the second pass.

``residual-detectron run`` (``run.png``) and the Butler demo (``patch_N.png``)
draw the same figure with this function.
"""

from __future__ import annotations

__all__ = ["plot_patch_chain", "flagged_rows"]

import os

import numpy as np

from ..scene import Scene
from ..visualization import rgb_composite


def flagged_rows(catalog, bands: tuple[str, ...]) -> np.ndarray:
    """Bool per row: ``near_bright_star``, or ``mostly_masked`` in a band.

    ``catalog`` is the deblender's (a ``mostly_masked`` column of one value
    per band) or an output catalog (``{band}_mostly_masked`` columns).
    """
    flagged = np.asarray(catalog["near_bright_star"], dtype=bool).copy()
    if "mostly_masked" in catalog.colnames:
        flagged |= np.asarray(catalog["mostly_masked"], dtype=bool).reshape(len(catalog), -1).any(axis=1)
    else:
        for band in bands:
            flagged |= np.asarray(catalog[f"{band}_mostly_masked"], dtype=bool)
    return flagged


def plot_patch_chain(
    scene: Scene,
    first_pass_model: np.ndarray,
    final_model: np.ndarray,
    first_pass_xy: np.ndarray,
    new_xy: np.ndarray,
    path: str | os.PathLike,
    title: str,
    truth_xy: np.ndarray | None = None,
    flagged_xy: np.ndarray | None = None,
) -> None:
    """Write the four-panel PNG of one patch.

    Parameters
    ----------
    scene : `Scene`
        The patch.
    first_pass_model, final_model : `numpy.ndarray`
        (nbands, H, W) observed-PSF models of the first and second pass.
    first_pass_xy, new_xy : `numpy.ndarray`
        (N, 2) patch-pixel positions of the first-pass sources (red +) and of
        the new sources (cyan circles).
    path : path-like
        Output PNG.
    title : `str`
        Figure title (counts).
    truth_xy : `numpy.ndarray`, optional
        True source positions (white dots), for simulated patches.
    flagged_xy : `numpy.ndarray`, optional
        (N, 2) positions of final sources flagged ``near_bright_star`` or
        ``mostly_masked`` in a band (orange squares).

    Notes
    -----
    Every panel outlines the pixels masked in some band (yellow) and the
    saturated (SAT) pixels (magenta), where the scene has them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = scene.good
    noise = np.sqrt(np.median(np.where(good, scene.variance, np.nan)))
    stretch = 5.0 * float(noise) if np.isfinite(noise) and noise > 0 else None
    height, width = scene.shape
    panels = (
        ("image: first-pass sources (+), new sources (o)", scene.clean_image()),
        ("first-pass Scarlet model", first_pass_model),
        ("residual before the second pass", np.where(good, scene.image - first_pass_model, np.float32(0))),
        ("residual after the second pass", np.where(good, scene.image - final_model, np.float32(0))),
    )
    masked = ~good.all(axis=0)
    saturated = scene.plane("SAT")
    saturated = None if saturated is None else saturated.any(axis=0)
    first_pass_xy = np.asarray(first_pass_xy, dtype=float).reshape(-1, 2)
    new_xy = np.asarray(new_xy, dtype=float).reshape(-1, 2)
    fig, axes = plt.subplots(1, 4, figsize=(24, 6.6), sharex=True, sharey=True)
    for ax, (panel_title, cube) in zip(axes, panels, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.imshow(
                rgb_composite(cube, scene.bands, stretch=stretch), origin="lower", interpolation="nearest"
            )
        ax.set_title(panel_title, fontsize=10)
        if masked.any():
            ax.contour(masked, levels=[0.5], colors="yellow", linewidths=0.5, alpha=0.8)
        if saturated is not None and saturated.any():
            ax.contour(saturated, levels=[0.5], colors="magenta", linewidths=0.7)
        ax.scatter(first_pass_xy[:, 0], first_pass_xy[:, 1], s=22, marker="+", color="red", lw=0.9)
        if len(new_xy):
            ax.scatter(new_xy[:, 0], new_xy[:, 1], s=50, facecolors="none", edgecolors="cyan", lw=0.9)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(-0.5, height - 0.5)
    if truth_xy is not None and len(truth_xy):
        truth_xy = np.asarray(truth_xy, dtype=float).reshape(-1, 2)
        axes[0].scatter(truth_xy[:, 0], truth_xy[:, 1], s=3, color="white", alpha=0.6, lw=0)
    if flagged_xy is not None and len(flagged_xy):
        flagged_xy = np.asarray(flagged_xy, dtype=float).reshape(-1, 2)
        axes[3].scatter(
            flagged_xy[:, 0],
            flagged_xy[:, 1],
            s=70,
            marker="s",
            facecolors="none",
            edgecolors="orange",
            lw=0.9,
        )
    if masked.any():
        axes[0].set_title(
            f"{panels[0][0]}\nmasked in a band: yellow outline, SAT: magenta; flagged (panel 4): orange",
            fontsize=9,
        )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
