"""Figures of network detections and evaluation results (matplotlib, Agg)."""

from __future__ import annotations

__all__ = ["plot_overlay", "plot_pr_curves", "plot_recall_vs_magnitude", "CLASS_COLOURS"]

import numpy as np

from ..visualization import rgb_composite

#: Outline colour of each class in overlays.
CLASS_COLOURS = {"star": "#ffd000", "galaxy": "#00e5ff"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_detections(ax, detections, alpha: float = 0.35) -> None:
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    if len(detections) == 0:
        return
    labels = detections.label_image()
    class_of_id = np.zeros(int(detections.table["id"].max()) + 1, dtype=object)
    class_of_id[:] = None
    for row in detections.table:
        class_of_id[int(row["id"])] = str(row["class"])
    colour = np.zeros((*labels.shape, 4))
    for name, hex_colour in CLASS_COLOURS.items():
        ids = [i for i, c in enumerate(class_of_id) if c == name]
        if ids:
            colour[np.isin(labels, ids)] = to_rgba(hex_colour, alpha)
    ax.imshow(colour, origin="lower", interpolation="nearest")
    patches, colours = [], []
    for row in detections.table:
        x0, y0, x1, y1 = (float(row[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
        patches.append(Rectangle((x0, y0), x1 - x0, y1 - y0))
        colours.append(CLASS_COLOURS.get(str(row["class"]), "red"))
    ax.add_collection(PatchCollection(patches, facecolor="none", edgecolor=colours, linewidth=0.6))


def plot_overlay(
    image: np.ndarray,
    bands: tuple[str, ...],
    detections,
    path,
    targets_xy: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """PNG of the image (RGB) with the detections' masks and boxes (star yellow, galaxy cyan).

    Parameters
    ----------
    image : `numpy.ndarray`
        (nbands, H, W) image (bad pixels set to 0).
    detections : `~lsst.meas.extensions.residual.network.SourceDetections`
        What to draw.
    targets_xy : `numpy.ndarray`, optional
        (N, 2) true positions of the sources to find (red circles).
    residual : `numpy.ndarray`, optional
        (nbands, H, W) residual: drawn in a second panel with the same marks.
    """
    plt = _pyplot()
    panels = [("image", image)] + ([("residual", residual)] if residual is not None else [])
    side = 8 if max(image.shape[1:]) <= 1024 else 12
    # constrained layout leaves room for the suptitle (tight_layout does not).
    fig, axes = plt.subplots(
        1, len(panels), figsize=(side * len(panels), side), squeeze=False, layout="constrained"
    )
    for ax, (name, cube) in zip(axes[0], panels, strict=False):
        ax.imshow(rgb_composite(cube, bands), origin="lower", interpolation="nearest")
        _draw_detections(ax, detections)
        if targets_xy is not None and len(targets_xy):
            ax.scatter(
                targets_xy[:, 0],
                targets_xy[:, 1],
                s=70,
                facecolors="none",
                edgecolors="red",
                lw=0.8,
                label="target (truth)",
            )
            ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
        ax.set_xlim(-0.5, cube.shape[2] - 0.5)
        ax.set_ylim(-0.5, cube.shape[1] - 0.5)
        ax.set_title(f"{name}: {len(detections)} detections (star yellow, galaxy cyan)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pr_curves(curves: dict[str, dict], baselines: dict[str, dict], path, title: str = "") -> None:
    """Precision-recall curves (one per class set) with baseline operating points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for name, curve in curves.items():
        recall = np.asarray(curve["recall"], dtype=float)
        precision = np.asarray(curve["precision"], dtype=float)
        ax.plot(recall, precision, marker=".", ms=3, label=f"network: {name}")
    markers = iter("s^vDPX*")
    for name, point in baselines.items():
        if point.get("recall") is None:
            continue
        ax.scatter(
            [point["recall"]], [point["precision"]], marker=next(markers, "o"), s=50, label=name, zorder=3
        )
    ax.axhline(0.9, color="grey", lw=0.6, ls="--")
    ax.axvline(0.8, color="grey", lw=0.6, ls=":")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (purity)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_recall_vs_magnitude(
    binned: dict[str, dict], path, title: str = "", xlabel: str = "i magnitude"
) -> None:
    """Recall of the targets per magnitude bin, one line per detector."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, data in binned.items():
        edges = np.asarray(data["edges"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        recall = np.array([np.nan if r is None else r for r in data["recall"]], dtype=float)
        ax.plot(centres, recall, marker="o", ms=3, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall of targets")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
