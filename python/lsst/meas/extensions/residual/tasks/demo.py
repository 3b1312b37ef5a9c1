"""The embedded Butler demo: a SQLite repository, simulated patches, ``pipetask run``.

`build_demo_repo` creates (or reuses) the repository, registers the sky map
and bands, simulates every patch (six-band coadds with PSFs and truth) and
ingests a model package. `run_pipeline` runs ``pipetask run`` on
``pipelines/demo.yaml``. `summarize_patch` and `plot_patch` read the outputs
back for the per-patch summary and figure.

Running again is safe: records, dataset types and inputs already in the
repository are kept as they are; the pipeline resumes the existing output
collection (``--extend-run --skip-existing-in``: finished quanta are skipped,
an interrupted run is completed), or starts a new timestamped output run
with ``fresh=True``. Nothing is ever overwritten.
"""

from __future__ import annotations

__all__ = [
    "DemoConfig",
    "build_demo_repo",
    "run_pipeline",
    "summarize_patch",
    "plot_patch",
    "PatchSummary",
    "quiet_optional_import_warnings",
]

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import LSST_BANDS
from .paths import PACKAGE_DIR_ENV, package_dir, package_file
from .skymap import DemoSkyMap

_log = logging.getLogger(__name__)

INPUT_RUN = "demo/inputs"
MODEL_RUN = "demo/models"
OUTPUT = "demo/output"


@dataclasses.dataclass
class DemoConfig:
    """What the demo builds and runs."""

    patch_size: int = 256
    patches_x: int = 2
    patches_y: int = 2
    seed: int = 1
    depth: str = "10yr"
    bands: tuple[str, ...] = LSST_BANDS
    model: str | None = None
    """Model package zip; default: the shipped residual-mode package."""
    processes: int = 1
    """``pipetask run -j``."""
    fresh: bool = False
    """Start a new output run instead of resuming the existing one."""

    def skymap(self) -> DemoSkyMap:
        return DemoSkyMap(patch_size=self.patch_size, patch_nx=self.patches_x, patch_ny=self.patches_y)


def build_demo_repo(root: Path, config: DemoConfig, progress: bool = True):
    """Create or reuse the demo repository and its inputs.

    Returns
    -------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler on ``root``.

    Raises
    ------
    ValueError
        If ``root`` holds a demo repository made with another sky map.
    FileNotFoundError
        If the model package does not exist.
    """
    from tqdm.auto import tqdm

    from lsst.daf.butler.registry import ConflictingDefinitionError

    from ..network.package import default_model_path
    from ..simulation import SimulationConfig, simulate_scene
    from .repo import create_repo, ingest_model_package, ingest_scene, register_bands, register_skymap

    model_path = Path(config.model) if config.model else default_model_path("residual")
    if not model_path.exists():
        raise FileNotFoundError(f"Model package {model_path} does not exist.")
    butler = create_repo(root)
    skymap = config.skymap()
    try:
        register_skymap(butler, skymap)
    except ConflictingDefinitionError as err:
        raise ValueError(
            f"{root} already holds a demo repository with a different sky map (patch size or grid); "
            f"use another --out or the same parameters ({err})."
        ) from None
    register_bands(butler, tuple(config.bands))
    patches = skymap.patches()
    for geometry in tqdm(patches, desc="simulate + ingest patches", unit="patch", disable=not progress):
        data_id = {"skymap": skymap.name, "tract": skymap.tract, "patch": geometry.id}
        if _has_inputs(butler, data_id, config.bands):
            continue
        seed = config.seed * 1000 + geometry.id
        scene = simulate_scene(
            seed,
            SimulationConfig(
                height=geometry.height, width=geometry.width, bands=config.bands, depth=config.depth
            ),
        )
        ingest_scene(butler, scene, skymap, geometry.id, INPUT_RUN)
    ingest_model_package(butler, model_path, MODEL_RUN)
    return butler


def _has_inputs(butler, data_id: dict[str, Any], bands) -> bool:
    from lsst.daf.butler import MissingDatasetTypeError

    try:
        refs = butler.query_datasets("deep_coadd", collections=[INPUT_RUN], data_id=data_id, explain=False)
        truth = butler.find_dataset("residual_sim_truth", data_id, collections=[INPUT_RUN])
    except MissingDatasetTypeError:
        return False
    return {ref.dataId["band"] for ref in refs} >= set(bands) and truth is not None


def pipetask_command() -> list[str]:
    """The ``pipetask`` of this Python environment."""
    candidate = Path(sys.executable).parent / "pipetask"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("pipetask")
    if found:
        return [found]
    raise FileNotFoundError("No pipetask executable found (install lsst-ctrl-mpexec).")


def run_pipeline(
    root: Path,
    pipeline: str | os.PathLike | None = None,
    inputs: tuple[str, ...] = (INPUT_RUN, MODEL_RUN),
    output: str = OUTPUT,
    processes: int = 1,
    fresh: bool = False,
    extra_args: tuple[str, ...] = (),
    log_file: Path | None = None,
    echo: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``pipetask run`` on the demo pipeline (resuming ``output`` if it exists).

    Raises
    ------
    RuntimeError
        If pipetask fails (its log's tail is in the message).
    """
    from lsst.daf.butler import Butler, MissingCollectionError

    pipeline = Path(pipeline) if pipeline else package_file("pipelines/demo.yaml")
    resume = False
    if not fresh:
        with Butler.from_config(str(root)) as butler:
            try:
                butler.collections.get_info(output)
                resume = True
            except MissingCollectionError:
                resume = False
    command = [
        *pipetask_command(),
        "--log-level",
        "lsst.meas.extensions.residual=INFO",
        "run",
        "-b",
        str(root),
        "-p",
        str(pipeline),
        "-i",
        ",".join(inputs),
        "-o",
        output,
        "--register-dataset-types",
        "-j",
        str(max(1, int(processes))),
    ]
    if resume:
        command += ["--extend-run", "--skip-existing-in", output, "--clobber-outputs"]
    command += list(extra_args)
    env = dict(os.environ)
    env.setdefault(PACKAGE_DIR_ENV, str(package_dir()))
    _log.info("Running: %s", " ".join(command))
    lines: list[str] = []
    log = open(log_file, "w") if log_file is not None else None
    try:
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process:
            for line in process.stdout:
                lines.append(line)
                if log is not None:
                    log.write(line)
                # On resume an empty graph is success (reported below), not pipetask's "Error".
                if echo and _worth_showing(line) and not (resume and _EMPTY_GRAPH in line):
                    print(line.rstrip(), flush=True)
        returncode = process.returncode
    finally:
        if log is not None:
            log.close()
    if returncode != 0 and resume and any(_NOTHING_TO_DO in line for line in lines):
        # pipetask exits 1 on an empty graph; when resuming, an empty graph
        # means every quantum already succeeded.
        if echo:
            print(f"Nothing left to run: every quantum in {output} already succeeded.", flush=True)
        returncode = 0
    if returncode != 0:
        tail = "".join(lines[-25:])
        raise RuntimeError(f"pipetask run failed (exit {returncode}):\n{tail}")
    return subprocess.CompletedProcess(command, returncode, "".join(lines), "")


_NOTHING_TO_DO = "QuantumGraph contains no quanta"
_EMPTY_GRAPH = "QuantumGraph was empty"

# Progress lines from pipetask worth echoing: our tasks' summaries, the
# executor's "Executed N quanta" count, and problems (not the import warnings
# about optional packages that pipetask emits on every start).
_QUIET = ("Unable to import eups", "Unable to import type pandas")


class _OptionalImportFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _QUIET)


def quiet_optional_import_warnings() -> None:
    """Hide daf_butler's warning that pandas (an optional converter) is absent."""
    logging.getLogger("lsst.daf.butler._storage_class").addFilter(_OptionalImportFilter())


def _worth_showing(line: str) -> bool:
    if any(text in line for text in _QUIET):
        return False
    if "quanta successfully" in line or " ERROR" in line or "WARNING" in line:
        return True
    return line.startswith(("lsst.firstPass", "lsst.residual"))


@dataclasses.dataclass
class PatchSummary:
    """What the chain did in one patch."""

    patch: int
    true_sources: int | None
    first_pass_sources: int
    new_detections: int
    final_sources: int
    refitted_blends: int
    new_isolated: int
    true_found_first_pass: int | None
    true_found_final: int | None
    new_detections_on_true_sources: int | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _matched(truth_xy: np.ndarray, xy: np.ndarray, radius: float) -> tuple[int, set[int]]:
    from ..evaluation import match_positions

    truth_index, cand_index = match_positions(truth_xy, xy, radius)
    return len(truth_index), set(int(i) for i in cand_index)


def summarize_patch(butler, data_id: dict[str, Any], match_radius: float = 2.0) -> PatchSummary:
    """Counts for one patch from the pipeline's outputs (and the truth, if ingested)."""
    from lsst.daf.butler import MissingDatasetTypeError

    first = butler.get("object_deblend", data_id)
    new = butler.get("object_residual_detection", data_id)
    final = butler.get("object_residual_deblend", data_id)
    is_new = np.asarray(final["found_by"]) == "residual"
    parents_first = set(np.asarray(first["parent"]).tolist())
    new_parents = set(np.asarray(final["parent"])[is_new].tolist())
    try:
        truth = butler.get("residual_sim_truth", data_id)
    except (LookupError, MissingDatasetTypeError):
        truth = None
    found_first = found_final = on_truth = None
    if truth is not None:
        truth_xy = np.column_stack([truth["x"], truth["y"]]).reshape(-1, 2)
        found_first, _ = _matched(
            truth_xy, np.column_stack([first["x"], first["y"]]).reshape(-1, 2), match_radius
        )
        found_final, _ = _matched(
            truth_xy, np.column_stack([final["x"], final["y"]]).reshape(-1, 2), match_radius
        )
        _, matched_new = _matched(
            truth_xy, np.column_stack([new["x"], new["y"]]).reshape(-1, 2), match_radius
        )
        on_truth = len(matched_new)
    return PatchSummary(
        patch=int(data_id["patch"]),
        true_sources=None if truth is None else len(truth),
        first_pass_sources=len(first),
        new_detections=len(new),
        final_sources=len(final),
        refitted_blends=len(new_parents & parents_first),
        new_isolated=len(new_parents - parents_first),
        true_found_first_pass=found_first,
        true_found_final=found_final,
        new_detections_on_true_sources=on_truth,
    )


def _patch_cube(butler, data_id, bands):
    from .coadds import assemble_patch, read_coadd_plane

    planes = {band: read_coadd_plane(butler.get("deep_coadd", {**data_id, "band": band})) for band in bands}
    return assemble_patch(planes, bands, what=f"patch {data_id['patch']}")


def _model(butler, dataset: str, catalog_dataset: str, patch_images, data_id) -> np.ndarray:
    """Observed-PSF model cube of the patch, rendered from the Butler's model data."""
    from ..deblending import render_model_data
    from .ids import IdMap
    from .model_frames import model_data_to_patch

    catalog = butler.get(catalog_dataset, data_id)
    models = butler.get(dataset, data_id)
    parents = set(np.asarray(catalog["parent"]).tolist()) | set(models.blends) | set(models.isolated)
    id_map = IdMap(data_id["tract"], data_id["patch"], sources=catalog["id"], parents=parents)
    local = model_data_to_patch(models, patch_images.x0, patch_images.y0, id_map)
    scene = patch_images.scene
    return render_model_data(local, scene.shape, bands=scene.bands, image=scene.clean_image())


def plot_patch(
    butler, data_id: dict[str, Any], bands, path: Path, summary: PatchSummary | None = None
) -> None:
    """PNG: RGB image with first-pass peaks and new detections, first-pass model, residual before and after
    the second pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualization import rgb_composite

    patch_images = _patch_cube(butler, data_id, tuple(bands))
    scene = patch_images.scene
    x0, y0 = patch_images.x0, patch_images.y0
    first_model = _model(butler, "object_scarlet_models", "object_deblend", patch_images, data_id)
    final_model = _model(
        butler, "object_residual_scarlet_models", "object_residual_deblend", patch_images, data_id
    )
    before = np.where(scene.good, scene.image - first_model, np.float32(0))
    after = np.where(scene.good, scene.image - final_model, np.float32(0))
    first = butler.get("object_deblend", data_id)
    new = butler.get("object_residual_detection", data_id)
    noise = np.sqrt(np.median(np.where(scene.good, scene.variance, np.nan)))
    stretch = 5.0 * float(noise) if np.isfinite(noise) and noise > 0 else None
    height, width = scene.shape
    fig, axes = plt.subplots(1, 4, figsize=(24, 6.6), sharex=True, sharey=True)
    panels = (
        ("image: first-pass peaks (+), new detections (o)", scene.clean_image()),
        ("first-pass Scarlet model", first_model),
        ("residual before the second pass", before),
        ("residual after the second pass", after),
    )
    for ax, (title, cube) in zip(axes, panels, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            ax.imshow(
                rgb_composite(cube, scene.bands, stretch=stretch), origin="lower", interpolation="nearest"
            )
        ax.set_title(title, fontsize=10)
        ax.scatter(
            np.asarray(first["x"]) - x0, np.asarray(first["y"]) - y0, s=22, marker="+", color="red", lw=0.9
        )
        if len(new):
            ax.scatter(
                np.asarray(new["x"]) - x0,
                np.asarray(new["y"]) - y0,
                s=50,
                facecolors="none",
                edgecolors="cyan",
                lw=0.9,
            )
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(-0.5, height - 0.5)
    try:
        truth = butler.get("residual_sim_truth", data_id)
        axes[0].scatter(
            np.asarray(truth["x"]) - x0, np.asarray(truth["y"]) - y0, s=3, color="white", alpha=0.6, lw=0
        )
    except LookupError:
        pass
    if summary is not None:
        fig.suptitle(
            f"tract {data_id['tract']} patch {data_id['patch']}: "
            f"{summary.first_pass_sources} first-pass sources, "
            f"{summary.new_detections} new detections, {summary.refitted_blends} blends re-fitted, "
            f"{summary.new_isolated} new footprints (white dots: truth)"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
