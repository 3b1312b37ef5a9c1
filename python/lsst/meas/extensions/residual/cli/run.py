"""``residual-detectron run``: the whole chain on a scene file, without a Butler.

First-pass detection, first-pass deblending, the network on the residuals,
and a second deblending pass with the new sources.

Outputs in ``--out``:

``catalog.fits``
    Final catalog (one row per source): the deblender's columns, ``found_by``
    (``first_pass`` or ``residual``), and the network's ``class`` and
    ``score`` for the sources it found.
``new_sources.fits``
    The new sources with their footprints (the network's ``sources.fits``
    format; ids as in ``catalog.fits``).
``residual_before.fits``, ``residual_after.fits``
    (nbands, H, W) residual cubes (image − model) of the first and second
    pass; header ``BANDS``.
``first_pass.scarlet``, ``second_pass.scarlet``
    Scarlet model data (LSST's ``.scarlet`` container).
``run.png``, ``summary.json``
    Figure (image, residual before, residual after) and counts/timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from .options import add_inference_options

_log = logging.getLogger(__name__)

_OUTPUTS = (
    "catalog.fits",
    "new_sources.fits",
    "residual_before.fits",
    "residual_after.fits",
    "first_pass.scarlet",
    "second_pass.scarlet",
    "run.png",
    "summary.json",
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the whole chain (detect, deblend, find missed sources, deblend again) on a scene file",
        description=__doc__.split("\n\n")[1]
        + " Writes catalog.fits, new_sources.fits, residual cubes, model data, run.png and summary.json "
        "into --out.",
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--model", default=None, help="model package (.zip); default: the shipped residual-mode one"
    )
    parser.add_argument(
        "--threshold", type=float, default=5.0, help="first-pass detection threshold, sigma (default 5)"
    )
    parser.add_argument(
        "--match-radius",
        type=float,
        default=2.0,
        help="network detections closer than this to a first-pass peak are not new (pixels, default 2)",
    )
    add_inference_options(parser, figure="run.png")
    parser.set_defaults(handler=main)


def _write_cube(path: Path, cube, bands, name: str) -> None:
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["BANDS"] = ",".join(bands)
    fits.HDUList([primary, fits.ImageHDU(cube, name=name)]).writeto(path, overwrite=True)


def _plot(scene, result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..visualization import rgb_composite

    noise = np.sqrt(np.median(np.where(scene.good, scene.variance, np.nan)))
    stretch = 5.0 * float(noise) if np.isfinite(noise) and noise > 0 else None
    first = result.first_pass.catalog
    new = result.new_sources.table
    height, width = scene.shape
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.6), sharex=True, sharey=True)
    panels = (
        ("image: first-pass peaks (+), new sources (o)", scene.clean_image()),
        ("residual, first pass", result.first_pass.residual),
        ("residual, second pass", result.second_pass.residual),
    )
    for ax, (title, cube) in zip(axes, panels, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.imshow(
                rgb_composite(cube, scene.bands, stretch=stretch), origin="lower", interpolation="nearest"
            )
        ax.set_title(title, fontsize=10)
        ax.scatter(first["x"], first["y"], s=22, marker="+", color="red", lw=0.9)
        if len(new):
            ax.scatter(new["x"], new["y"], s=50, facecolors="none", edgecolors="cyan", lw=0.9)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(-0.5, height - 0.5)
    if scene.truth is not None and len(scene.truth):
        xy = scene.truth.xy
        axes[0].scatter(xy[:, 0], xy[:, 1], s=3, color="white", alpha=0.6, lw=0)
    fig.suptitle(
        f"{len(first)} first-pass sources, {len(new)} new, "
        f"{len(result.second_pass.catalog)} after the second pass"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> None:
    from ..deblending import write_scarlet_model
    from ..detection import DetectionConfig
    from ..network import Detector, default_model_path, read_model_metadata
    from ..scene import read_scene
    from ..tasks.chain import ChainConfig, final_catalog, run_chain
    from .main import CommandError

    out = Path(args.out)
    existing = [name for name in _OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        raise CommandError(f"{out} already has {', '.join(existing)}; pass --overwrite to replace them.")
    package_path = args.model or default_model_path("residual")
    metadata = read_model_metadata(package_path)
    scene = read_scene(args.scene)
    metadata.check_data(scene.bands, has_model=True)  # before any work: a band mismatch is cheap to find
    config = ChainConfig(
        detection=DetectionConfig(threshold=args.threshold),
        match_radius=args.match_radius,
        score_threshold=args.score_threshold,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
    )
    start = time.perf_counter()
    detector = Detector(package_path, args.device)
    result = run_chain(scene, detector, config, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    final_catalog(result).write(out / "catalog.fits", overwrite=True)
    result.new_sources.write(out / "new_sources.fits", overwrite=True)
    _write_cube(out / "residual_before.fits", result.first_pass.residual, scene.bands, "RESIDUAL")
    _write_cube(out / "residual_after.fits", result.second_pass.residual, scene.bands, "RESIDUAL")
    write_scarlet_model(out / "first_pass.scarlet", result.first_pass.model_data)
    write_scarlet_model(out / "second_pass.scarlet", result.second_pass.model_data)
    if not args.no_plot:
        _plot(scene, result, out / "run.png")
    changed = sorted(
        {
            int(p)
            for p in result.second_pass.catalog["parent_id"][
                result.second_pass.catalog["found_by"] == "residual"
            ]
        }
    )
    summary = {
        "scene": str(args.scene),
        "model": str(package_path),
        "device": detector.device,
        "first_pass_peaks": len(result.detections.peaks),
        "first_pass_footprints": int(result.detections.footprints.max(initial=0)),
        "new_sources": len(result.new_sources),
        "dropped_on_existing_peaks": result.n_matched,
        "blends_with_new_sources": len(changed),
        "final_sources": len(result.second_pass.catalog),
        "seconds": {k: round(v, 2) for k, v in result.timing.items()},
        "wall_seconds": round(time.perf_counter() - start, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"Wrote {', '.join(n for n in _OUTPUTS if (out / n).exists())} in {out}.")
