"""The embedded Butler demo: a SQLite repository, simulated patches, ``pipetask run``.

`build_demo_repo` creates (or reuses) the repository, registers the sky map,
the bands and the pipeline's dataset types, simulates every patch (six-band
coadds with PSFs and truth) and ingests a model package. `run_pipeline` runs
``pipetask run`` on ``pipelines/demo.yaml``. `summarize_patch` and
`plot_patch` read the outputs back for the per-patch summary and figure.

Collections: ``demo/inputs`` (coadds, truth, and the parameter record
``residual_demo_parameters``), ``demo/models`` (the model package) and the
output chain ``demo/output``, whose first member is the newest output RUN.

Running again is safe and never mixes results:

* the repository records what its inputs were made from (`demo_parameters`:
  seed, patch geometry, depth, bands, the simulation's parameters and the
  model package's checksum); a run asking for other parameters is refused
  (`DemoParametersError`) before anything is written, as is a repository
  whose inputs have no record;
* the pipeline resumes the newest output RUN (``--extend-run``): a quantum
  is skipped only if its outputs are in that RUN, so an interrupted run is
  completed even where an older RUN of the chain has the outputs; or, with
  ``fresh=True``, a new timestamped output RUN is started;
* summaries and figures read the newest RUN and the inputs only
  (`latest_output_collections`), never an older RUN's outputs, and
  `missing_outputs` says which patch lacks what.

Nothing is ever overwritten.
"""

from __future__ import annotations

__all__ = [
    "DemoConfig",
    "DemoInputs",
    "DemoParametersError",
    "INPUT_RUN",
    "MODEL_RUN",
    "OUTPUT",
    "PARAMETERS",
    "build_demo_repo",
    "check_demo_parameters",
    "demo_parameters",
    "run_pipeline",
    "latest_output_run",
    "latest_output_collections",
    "missing_outputs",
    "summarize_patch",
    "plot_patch",
    "PatchSummary",
    "quiet_optional_import_warnings",
]

import dataclasses
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic

from ..bands import LSST_BANDS
from ..configs import StrictModel
from ..errors import MissingInputError, OutputError
from ..simulation import ArtefactConfig, Depth, SimulationConfig
from .paths import PACKAGE_DIR_ENV, package_dir, package_file
from .skymap import DemoSkyMap

_log = logging.getLogger(__name__)

INPUT_RUN = "demo/inputs"
MODEL_RUN = "demo/models"
OUTPUT = "demo/output"

#: Dataset (``StructuredDataDict``, no dimensions) in `INPUT_RUN` recording `demo_parameters`.
PARAMETERS = "residual_demo_parameters"


class DemoConfig(StrictModel):
    """What the demo builds and runs."""

    patch_size: int = pydantic.Field(default=256, ge=32)
    """Side of each square patch (pixels)."""
    patches_x: int = pydantic.Field(default=2, ge=1)
    """Patch columns of the tract."""
    patches_y: int = pydantic.Field(default=2, ge=1)
    """Patch rows of the tract."""
    seed: int = 1
    """Random seed of the simulated patches (patch ``p`` is simulated with ``seed * 1000 + p``)."""
    depth: Depth = "10yr"
    """Coadd depth: ``"10yr"`` or ``"1yr"``."""
    bands: tuple[str, ...] = LSST_BANDS
    """Bands of the simulated coadds."""
    model: str | None = None
    """Model package zip; None: the shipped residual-mode package."""
    processes: int = pydantic.Field(default=1, ge=1)
    """``pipetask run -j``."""
    fresh: bool = False
    """Start a new output RUN instead of resuming the newest one."""
    artefacts: Literal["none", "last", "all"] = "last"
    """Patches simulated with coadd artefacts (`ArtefactConfig`, with at least one saturated bright
    star): none, the last patch, or all."""

    def skymap(self) -> DemoSkyMap:
        """The demo's one-tract sky map."""
        return DemoSkyMap(patch_size=self.patch_size, patch_nx=self.patches_x, patch_ny=self.patches_y)

    def artefact_patches(self) -> tuple[int, ...]:
        """Ids of the patches simulated with artefacts."""
        last = self.patches_x * self.patches_y - 1
        return {"none": (), "last": (last,), "all": tuple(range(last + 1))}[self.artefacts]

    def simulation(self, patch: int | None = None) -> SimulationConfig:
        """How ``patch`` is simulated (with seed ``seed * 1000 + patch``); None: a patch without
        artefacts."""
        artefacts = ArtefactConfig(min_bright_stars=1) if patch in self.artefact_patches() else None
        return SimulationConfig(
            height=self.patch_size,
            width=self.patch_size,
            bands=self.bands,
            depth=self.depth,
            artefacts=artefacts,
        )

    def model_path(self) -> Path:
        """The model package file (the shipped one unless `model` is given)."""
        from ..network.package import default_model_path

        return Path(self.model) if self.model else default_model_path("residual")


class DemoParametersError(OutputError):
    """The repository holds demo inputs made from other parameters (or from unknown ones)."""


@dataclasses.dataclass(frozen=True)
class DemoInputs:
    """What `build_demo_repo` found and did.

    Attributes
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler on the repository.
    parameters : `dict`
        The recorded `demo_parameters`.
    simulated : `tuple` [`int`]
        Patches simulated and ingested by this call.
    reused : `tuple` [`int`]
        Patches whose inputs were already in the repository.
    """

    butler: Any
    parameters: dict[str, Any]
    simulated: tuple[int, ...]
    reused: tuple[int, ...]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def demo_parameters(config: DemoConfig) -> dict[str, Any]:
    """What the demo's inputs are made from, as recorded in the repository.

    ``seed``, ``patch_size``, ``patches_x``, ``patches_y``, ``depth``,
    ``bands``, ``artefacts``, ``simulation`` (every `SimulationConfig`
    field, so that a change of the simulator's defaults is noticed too;
    with artefacts, those of the patches that have them as
    ``artefact_simulation``), ``model_sha256``
    (the package's content) and ``model`` (its path, for information only).

    Raises
    ------
    lsst.meas.extensions.residual.errors.MissingInputError
        If the model package does not exist.
    """
    model_path = config.model_path()
    if not model_path.is_file():
        raise MissingInputError(f"Model package {model_path} does not exist.")
    return {
        "seed": config.seed,
        "patch_size": config.patch_size,
        "patches_x": config.patches_x,
        "patches_y": config.patches_y,
        "depth": config.depth,
        "bands": list(config.bands),
        "artefacts": config.artefacts,
        "simulation": config.simulation().model_dump(mode="json"),
        "artefact_simulation": (
            config.simulation(config.artefact_patches()[0]).model_dump(mode="json")
            if config.artefact_patches()
            else None
        ),
        "model_sha256": _sha256(model_path),
        "model": str(model_path.resolve()),
    }


#: How a difference in each recorded parameter is shown (command-line option or meaning).
_SHOWN_AS = {
    "seed": "--seed",
    "patch_size": "--patch-size",
    "patches_x": "--patches-x",
    "patches_y": "--patches-y",
    "depth": "--depth",
    "bands": "bands",
    "artefacts": "--artefacts",
    "artefact_simulation": "artefact simulation parameters (another code version?)",
    "model_sha256": "--model (package checksum)",
    "simulation": "simulation parameters (another code version?)",
}


def _differences(recorded: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    lines = []
    for key, shown in _SHOWN_AS.items():
        if recorded.get(key) != asked.get(key):
            if key == "model_sha256":
                lines.append(f"{shown}: {recorded.get('model')} was used, now {asked['model']}")
            elif key in ("simulation", "artefact_simulation"):
                lines.append(shown)
            else:
                lines.append(f"{shown} {recorded.get(key)!r} was used, now {asked[key]!r}")
    return lines


def _recorded_parameters(butler) -> dict[str, Any] | None:
    from lsst.daf.butler import MissingCollectionError, MissingDatasetTypeError

    try:
        ref = butler.find_dataset(PARAMETERS, collections=[INPUT_RUN])
    except (MissingDatasetTypeError, MissingCollectionError):
        return None
    return None if ref is None else dict(butler.get(ref))


def _holds_inputs(butler) -> bool:
    """Whether the demo's input collections hold coadds or a model package."""
    from lsst.daf.butler import MissingCollectionError, MissingDatasetTypeError

    from .repo import MODEL_PACKAGE

    for dataset_type, run in (("deep_coadd", INPUT_RUN), (MODEL_PACKAGE, MODEL_RUN)):
        try:
            if butler.query_datasets(dataset_type, collections=[run], explain=False, limit=1):
                return True
        except (MissingCollectionError, MissingDatasetTypeError):
            continue
    return False


def check_demo_parameters(butler, root: Path, parameters: dict[str, Any]) -> bool:
    """Whether ``root``'s demo inputs were made from ``parameters`` (False: there are none yet).

    Raises
    ------
    DemoParametersError
        If they were made from other parameters, or if the repository holds
        demo inputs without a record of their parameters (an older version's).
    """
    recorded = _recorded_parameters(butler)
    if recorded is None:
        if _holds_inputs(butler):
            raise DemoParametersError(
                f"{root} holds demo inputs without a record of their parameters (made by an older "
                f"version); use another --out, or delete {root} to start again."
            )
        return False
    differences = _differences(recorded, parameters)
    if differences:
        raise DemoParametersError(
            f"{root} holds the demo made with other parameters ({'; '.join(differences)}), whose "
            f"results are not those asked for; use another --out for the new parameters, or delete "
            f"{root} to start again."
        )
    return True


def build_demo_repo(root: Path, config: DemoConfig, progress: bool = True) -> DemoInputs:
    """Create or reuse the demo repository and its inputs.

    Parameters
    ----------
    root : `pathlib.Path`
        Repository directory.
    config : `DemoConfig`
        What to build.
    progress : `bool`
        Show a progress bar while simulating.

    Returns
    -------
    inputs : `DemoInputs`
        The Butler, the recorded parameters and which patches were simulated now.

    Raises
    ------
    DemoParametersError
        If ``root`` holds demo inputs made from other parameters (or with a
        different sky map, or without a record of their parameters).
    lsst.meas.extensions.residual.errors.MissingInputError
        If the model package does not exist.
    """
    from tqdm.auto import tqdm

    from lsst.daf.butler import CollectionType
    from lsst.daf.butler.registry import ConflictingDefinitionError

    from ..simulation import simulate_scene
    from .repo import (
        create_repo,
        ingest_model_package,
        ingest_scene,
        register_bands,
        register_dataset_type,
        register_pipeline_dataset_types,
        register_skymap,
    )

    root = Path(root)
    parameters = demo_parameters(config)
    butler = create_repo(root)
    recorded = check_demo_parameters(butler, root, parameters)
    skymap = config.skymap()
    try:
        register_skymap(butler, skymap)
    except ConflictingDefinitionError as err:
        raise DemoParametersError(
            f"{root} already holds a demo repository with a different sky map (patch size or grid); "
            f"use another --out or the same parameters ({err})."
        ) from None
    register_bands(butler, tuple(config.bands))
    register_pipeline_dataset_types(butler)
    if not recorded:
        # Recorded before any input is written, so an interrupted set-up is
        # completed only with the same parameters.
        butler.collections.register(INPUT_RUN, CollectionType.RUN)
        register_dataset_type(butler, PARAMETERS, "StructuredDataDict", ())
        butler.put(parameters, PARAMETERS, run=INPUT_RUN)
    simulated, reused = [], []
    for geometry in tqdm(
        skymap.patches(), desc="simulate + ingest patches", unit="patch", disable=not progress
    ):
        data_id = {"skymap": skymap.name, "tract": skymap.tract, "patch": geometry.id}
        if _has_inputs(butler, data_id, config.bands):
            reused.append(geometry.id)
            continue
        scene = simulate_scene(config.seed * 1000 + geometry.id, config.simulation(geometry.id))
        ingest_scene(butler, scene, skymap, geometry.id, INPUT_RUN)
        simulated.append(geometry.id)
    ingest_model_package(butler, config.model_path(), MODEL_RUN)
    return DemoInputs(butler, parameters, tuple(simulated), tuple(reused))


def _has_inputs(butler, data_id: dict[str, Any], bands) -> bool:
    from lsst.daf.butler import MissingDatasetTypeError

    from .repo import SIM_TRUTH

    try:
        refs = butler.query_datasets("deep_coadd", collections=[INPUT_RUN], data_id=data_id, explain=False)
        truth = butler.find_dataset(SIM_TRUTH, data_id, collections=[INPUT_RUN])
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


def latest_output_run(butler, output: str = OUTPUT) -> str | None:
    """The newest RUN of output chain ``output`` (the one a resume extends), or `None` if there is none."""
    from lsst.daf.butler import MissingCollectionError

    try:
        chain = butler.collections.get_info(output).children
    except MissingCollectionError:
        return None
    return chain[0] if chain else None


def latest_output_collections(butler, output: str = OUTPUT) -> list[str]:
    """The output chain without its older output RUNs: the newest RUN, then the inputs.

    Reading through these, a dataset the newest RUN lacks is missing rather
    than served from an older RUN.

    Raises
    ------
    lsst.meas.extensions.residual.errors.OutputError
        If there is no such output chain (the pipeline never ran).
    """
    from lsst.daf.butler import MissingCollectionError

    try:
        chain = butler.collections.get_info(output).children
    except MissingCollectionError:
        chain = ()
    if not chain:
        raise OutputError(f"No output collection {output!r}: the pipeline has not run in this repository.")
    # pipetask names the output RUNs "<output>/<timestamp>" (as its --rebase assumes).
    return [chain[0], *(name for name in chain[1:] if not name.startswith(f"{output}/"))]


def missing_outputs(
    butler, run: str, data_ids, pipeline: str | os.PathLike | None = None
) -> dict[int, list[str]]:
    """Which outputs of the pipeline each patch lacks in RUN ``run``.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Butler on the repository.
    run : `str`
        The output RUN (usually `latest_output_run`).
    data_ids : iterable of `dict`
        Patch data IDs.
    pipeline : path-like, optional
        Pipeline YAML; default ``pipelines/demo.yaml``.

    Returns
    -------
    missing : `dict` [`int`, `list` [`str`]]
        Dataset type names by patch, for the patches that lack any.
    """
    from lsst.daf.butler import MissingDatasetTypeError

    from .datasets import pipeline_dataset_types

    outputs = sorted(pipeline_dataset_types(butler.dimensions, pipeline, outputs_only=True))
    missing: dict[int, list[str]] = {}
    for data_id in data_ids:
        for name in outputs:
            try:
                found = butler.find_dataset(name, data_id, collections=[run])
            except MissingDatasetTypeError:
                found = None
            if found is None:
                missing.setdefault(int(data_id["patch"]), []).append(name)
    return missing


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
    """Run ``pipetask run`` on the demo pipeline, resuming the newest RUN of ``output`` if there is one.

    A resumed run extends that RUN (``--extend-run``) and skips a quantum
    only if its outputs are in it (``--skip-existing-in`` that RUN, not the
    whole chain: outputs an older RUN holds do not count). Outputs of
    quanta that failed are replaced (``--clobber-outputs``).

    Parameters
    ----------
    root : `pathlib.Path`
        Repository.
    pipeline : path-like, optional
        Pipeline YAML (a ``#subset`` suffix allowed); default ``pipelines/demo.yaml``.
    inputs : `tuple` [`str`]
        Input collections.
    output : `str`
        Output chain.
    processes : `int`
        ``pipetask run -j``.
    fresh : `bool`
        Start a new output RUN instead of resuming.
    extra_args : `tuple` [`str`]
        More ``pipetask run`` arguments (e.g. ``("-d", "patch = 0")``).
    log_file : `pathlib.Path`, optional
        Where pipetask's whole output goes.
    echo : `bool`
        Print pipetask's progress lines.

    Returns
    -------
    process : `subprocess.CompletedProcess`
        The command (``args``) and its output.

    Raises
    ------
    RuntimeError
        If pipetask fails (its log's tail is in the message).
    """
    from lsst.daf.butler import Butler

    pipeline = Path(pipeline) if pipeline else package_file("pipelines/demo.yaml")
    resumed = None
    if not fresh:
        with Butler.from_config(str(root)) as butler:
            resumed = latest_output_run(butler, output)
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
    if resumed is not None:
        command += ["--extend-run", "--skip-existing-in", resumed, "--clobber-outputs"]
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
                if echo and _worth_showing(line) and not (resumed and _EMPTY_GRAPH in line):
                    print(line.rstrip(), flush=True)
        returncode = process.returncode
    finally:
        if log is not None:
            log.close()
    if returncode != 0 and resumed and any(_NOTHING_TO_DO in line for line in lines):
        # pipetask exits 1 on an empty graph; when resuming, an empty graph
        # means every quantum already has its outputs in the resumed RUN.
        if echo:
            print(f"Nothing left to run: every quantum in {resumed} already succeeded.", flush=True)
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
    flagged_sources: int
    """Final sources flagged ``near_bright_star`` or ``mostly_masked`` in a band."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _matched(truth_xy: np.ndarray, xy: np.ndarray, radius: float) -> tuple[int, set[int]]:
    from ..groundtruth.matching import match_positions

    truth_index, cand_index = match_positions(truth_xy, xy, radius)
    return len(truth_index), set(int(i) for i in cand_index)


def summarize_patch(butler, data_id: dict[str, Any], bands, match_radius: float = 2.0) -> PatchSummary:
    """Counts for one patch from the pipeline's outputs (and the truth, if ingested)."""
    from lsst.daf.butler import MissingDatasetTypeError

    from ..chain.plots import flagged_rows

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
        flagged_sources=int(np.sum(flagged_rows(final, tuple(bands)))),
    )


def _patch_cube(butler, data_id, bands):
    from .coadds import assemble_patch, read_coadd_plane

    planes = {band: read_coadd_plane(butler.get("deep_coadd", {**data_id, "band": band})) for band in bands}
    return assemble_patch(planes, bands, what=f"patch {data_id['patch']}")


def _model(butler, dataset: str, patch_images, data_id) -> np.ndarray:
    """Observed-PSF model cube of the patch, rendered from the Butler's model data (tract pixels)."""
    from ..deblending import render_model_data, transform_model_data

    # Rendering needs positions only: shift to patch pixels, keep the ids.
    models = transform_model_data(
        butler.get(dataset, data_id), source_id=int, parent_id=int, dy=-patch_images.y0, dx=-patch_images.x0
    )
    scene = patch_images.scene
    return render_model_data(models, scene.shape, bands=scene.bands, image=scene.clean_image())


def plot_patch(
    butler, data_id: dict[str, Any], bands, path: Path, summary: PatchSummary | None = None
) -> None:
    """PNG of one patch: image with first-pass and new sources, first-pass model, residual before and
    after the second pass (`lsst.meas.extensions.residual.chain.plots.plot_patch_chain`)."""
    from ..chain.plots import flagged_rows, plot_patch_chain

    patch_images = _patch_cube(butler, data_id, tuple(bands))
    x0, y0 = patch_images.x0, patch_images.y0
    first = butler.get("object_deblend", data_id)
    new = butler.get("object_residual_detection", data_id)
    final = butler.get("object_residual_deblend", data_id)
    flagged = flagged_rows(final, tuple(bands))
    try:
        truth = butler.get("residual_sim_truth", data_id)
        truth_xy = np.column_stack([np.asarray(truth["x"]) - x0, np.asarray(truth["y"]) - y0])
    except LookupError:
        truth_xy = None
    title = f"tract {data_id['tract']} patch {data_id['patch']}"
    if summary is not None:
        title += (
            f": {summary.first_pass_sources} first-pass sources, {summary.new_detections} new detections, "
            f"{summary.refitted_blends} blends re-fitted, {summary.new_isolated} new footprints "
            "(white dots: truth)"
        )
    plot_patch_chain(
        patch_images.scene,
        _model(butler, "object_scarlet_models", patch_images, data_id),
        _model(butler, "object_residual_scarlet_models", patch_images, data_id),
        np.column_stack([np.asarray(first["x"]) - x0, np.asarray(first["y"]) - y0]),
        np.column_stack([np.asarray(new["x"]) - x0, np.asarray(new["y"]) - y0]),
        path,
        title,
        truth_xy=truth_xy,
        flagged_xy=np.column_stack(
            [np.asarray(final["x"])[flagged] - x0, np.asarray(final["y"])[flagged] - y0]
        ),
    )
