"""Figures: multi-band RGB composites and source overlays (matplotlib, Agg)."""

from __future__ import annotations

__all__ = ["rgb_composite", "plot_detections"]

import numpy as np

# Bands mapped to (R, G, B), reddest first, when all are present.
_RGB_PREFERENCE = (("i", "r", "g"), ("z", "i", "r"), ("y", "z", "i"), ("r", "g", "u"))


def _rgb_indices(bands: tuple[str, ...]) -> list[int]:
    for choice in _RGB_PREFERENCE:
        if all(b in bands for b in choice):
            return [bands.index(b) for b in choice]
    # Fewer than three usable bands: reddest, middle, bluest (repeats allowed).
    n = len(bands)
    return [n - 1, n // 2, 0]


def rgb_composite(cube: np.ndarray, bands: tuple[str, ...], stretch: float | None = None, q: float = 8.0):
    """asinh (Lupton et al. 2004) RGB composite of a (nbands, H, W) cube.

    Parameters
    ----------
    stretch : `float`, optional
        Linear range of the stretch; default: 5× the robust noise of the cube,
        so faint sources show.
    """
    from astropy.visualization import make_lupton_rgb

    cube = np.nan_to_num(np.asarray(cube, dtype=np.float64))
    r, g, b = (cube[i] for i in _rgb_indices(tuple(bands)))
    if stretch is None:
        mad = np.median(np.abs(cube - np.median(cube)))
        stretch = max(5.0 * 1.4826 * mad, 1e-12)
    return make_lupton_rgb(r, g, b, stretch=stretch, Q=q, minimum=0.0)


def plot_detections(scene, detections, path, title: str | None = None) -> None:
    """PNG of the scene (RGB) with truth (if any) and detected peaks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 9))
    ax.imshow(rgb_composite(scene.clean_image(), scene.bands), origin="lower", interpolation="nearest")
    if scene.truth is not None and len(scene.truth):
        star = scene.truth.is_star
        xy = scene.truth.xy
        ax.scatter(
            xy[~star, 0],
            xy[~star, 1],
            s=60,
            facecolors="none",
            edgecolors="cyan",
            lw=0.8,
            label="true galaxy",
        )
        ax.scatter(
            xy[star, 0],
            xy[star, 1],
            s=60,
            marker="s",
            facecolors="none",
            edgecolors="yellow",
            lw=0.8,
            label="true star",
        )
    peaks = detections.xy
    ax.scatter(peaks[:, 0], peaks[:, 1], s=14, marker="+", color="red", lw=1.0, label="detected peak")
    ax.contour(detections.footprints > 0, levels=[0.5], colors="white", linewidths=0.4, alpha=0.6)
    ax.set_xlim(-0.5, scene.shape[1] - 0.5)
    ax.set_ylim(-0.5, scene.shape[0] - 0.5)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.6)
    ax.set_title(title or f"{len(peaks)} peaks in {int(detections.footprints.max())} footprints")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
