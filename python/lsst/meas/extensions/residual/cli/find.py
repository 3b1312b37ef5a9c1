"""``residual-detectron find``: run a model package on a scene file."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

from .options import MODEL_HELP, add_inference_options

_log = logging.getLogger(__name__)

# Everything `find` writes into --out.
_OUTPUTS = ("sources.fits", "sources.ecsv", "overlay.png", "summary.json")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "find",
        help="find (missed) sources in a scene with a trained model package",
        description=(
            "Run the Mask R-CNN of a model package on a scene FITS file (tiled, any size). Residual-mode "
            "packages need the first-pass model: give it with --first-pass-model, or it is computed here "
            "with detect-peaks and the deblender. Writes OUT/sources.fits (catalogue + footprints), "
            "OUT/sources.ecsv, OUT/overlay.png and OUT/summary.json (with the SHA-256 of each file)."
        ),
    )
    parser.add_argument("scene", help="scene FITS file")
    parser.add_argument(
        "--model",
        default=None,
        help=MODEL_HELP,
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--first-pass-model",
        default=None,
        help="FITS file with the first-pass model cube (extension MODEL, or the first image HDU)",
    )
    add_inference_options(parser, figure="overlay.png")
    parser.set_defaults(handler=main)


def _read_model_cube(path: str, shape: tuple[int, ...]):
    import numpy as np
    from astropy.io import fits

    from ..errors import MissingInputError
    from ..scene import SceneFormatError

    if not os.path.exists(path):
        raise MissingInputError(f"First-pass model file {path!r} does not exist.")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [hdu.name for hdu in hdul]
            hdu = hdul["MODEL"] if "MODEL" in names else next((h for h in hdul if h.data is not None), None)
            if hdu is None:
                raise SceneFormatError(f"{path!r} has no image data.")
            cube = np.array(hdu.data, dtype=np.float32)
    except OSError as err:
        raise SceneFormatError(f"{path!r} is not a readable FITS file: {err}") from err
    if cube.shape != shape:
        raise SceneFormatError(
            f"First-pass model in {path!r} has shape {cube.shape}; the scene's image is {shape}."
        )
    return cube


def main(args: argparse.Namespace) -> None:
    import numpy as np

    from ..network import (
        Detector,
        find_sources_in_scene,
        model_path,
        read_model_metadata,
        select_device,
    )
    from ..scene import read_scene
    from .main import input_files
    from .options import inference_config_from_args
    from .outputs import OutputFolder

    inference = inference_config_from_args(args)
    device = select_device(args.device)  # an unknown device is refused before any work
    folder = OutputFolder(args.out, overwrite=args.overwrite, output_names=_OUTPUTS)
    with input_files():
        package_path = model_path(args.model)
        metadata = read_model_metadata(package_path)
    scene = read_scene(args.scene)
    # Bands and pixel scale first: cheaper than deblending to find out.
    metadata.check_data(scene.bands, has_model=True)
    metadata.check_pixel_scale(scene.pixel_scale, inference.over(metadata.inference).pixel_scale_tolerance)
    model_cube = None
    if metadata.needs_model:
        if args.first_pass_model:
            model_cube = _read_model_cube(args.first_pass_model, scene.image.shape)
        else:
            from ..chain.first_pass import first_pass_model
            from ..detection import detect_peaks

            _log.info("No --first-pass-model: running first-pass detection and deblending.")
            model_cube = first_pass_model(scene, detect_peaks(scene))
    detector = Detector(package_path, device=device)
    start = time.perf_counter()
    detections = find_sources_in_scene(detector, scene, model_cube, inference=inference, progress=True)
    seconds = time.perf_counter() - start
    with folder.staging() as staged:
        detections.write(staged / "sources.fits")
        detections.table.write(staged / "sources.ecsv")
        if not args.no_plot:
            from ..evaluation.plots import plot_overlay

            residual = None if model_cube is None else np.where(scene.good, scene.image - model_cube, 0.0)
            plot_overlay(
                scene.clean_image(),
                scene.bands,
                detections,
                staged / "overlay.png",
                residual=residual,
                title=f"{metadata.name} on {os.path.basename(args.scene)}",
            )
        classes = list(detections.table["class"])
        staged.summary.update(
            {
                "scene": os.path.abspath(args.scene),
                "model": os.path.abspath(package_path),
                "mode": metadata.mode,
                "detections": len(detections),
                "per_class": {name: classes.count(name) for name in metadata.classes},
                "score_threshold": metadata.score_threshold
                if inference.score_threshold is None
                else inference.score_threshold,
                "device": detector.device,
                "network_seconds": round(seconds, 2),
            }
        )
    print(json.dumps(staged.summary, indent=2))
