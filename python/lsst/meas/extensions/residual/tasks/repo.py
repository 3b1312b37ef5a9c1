"""Set up a Butler repository for the embedded default (no afw, no skymap).

The steps, each usable on its own:

1. `create_repo`: a SQLite repository seeded with the project's storage
   classes and formatters (``config/butler_seed.yaml``).
2. `register_skymap` and `register_bands`: dimension records for a
   `DemoSkyMap` (``skymap``, ``tract``, ``patch``) and for the bands (a
   ``band`` record exists only as a view of ``physical_filter``, which needs
   an ``instrument``: a nominal ``ResidualSim`` instrument provides them).
3. `register_pipeline_dataset_types`: every dataset type of a pipeline, as
   its tasks' connections declare it (`datasets.pipeline_dataset_types`).
4. `ingest_scene`: a patch-sized `Scene` as one ``deep_coadd`` (CellCoadd) per
   band, plus its truth table (``residual_sim_truth``) if it has one.
5. `ingest_model_package`: a model package zip as the ``residual_model_package``
   prerequisite (dimensions ``()``), copied into the repository byte for byte.

Every step is idempotent: records are synced, dataset types registered only if
absent, and datasets already in the target run are left alone.

Dataset types come from the connections; the one exception is
``residual_sim_truth`` (`SIM_TRUTH`), which no task reads or writes and
which is declared here.
"""

from __future__ import annotations

__all__ = [
    "SIM_INSTRUMENT",
    "SIM_TRUTH",
    "MODEL_PACKAGE",
    "create_repo",
    "register_skymap",
    "register_bands",
    "register_pipeline_dataset_types",
    "register_dataset_type",
    "sim_truth_dataset_type",
    "ingest_scene",
    "ingest_model_package",
    "truth_table",
]

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..bands import LSST_BANDS
from ..errors import InputError
from ..scene import Scene
from .coadds import scene_to_cell_coadds
from .datasets import PATCH_DIMENSIONS, pipeline_dataset_types
from .paths import package_file
from .skymap import DemoSkyMap

_log = logging.getLogger(__name__)

#: Nominal instrument whose physical filters define the ``band`` records.
SIM_INSTRUMENT = "ResidualSim"

#: The simulation truth of a demo patch (tract pixels, one flux column per band).
SIM_TRUTH = "residual_sim_truth"

#: The prerequisite input that holds the network.
MODEL_PACKAGE = "residual_model_package"


def create_repo(root: str | os.PathLike, seed_config: str | os.PathLike | None = None):
    """Create (or open) a Butler repository seeded for ResidualDetectron.

    Parameters
    ----------
    root : path-like
        Repository directory; if it already holds a repository, it is opened.
    seed_config : path-like, optional
        Seed configuration; default ``config/butler_seed.yaml``.

    Returns
    -------
    butler : `lsst.daf.butler.Butler`
        A writeable Butler.
    """
    from lsst.daf.butler import Butler, Config

    root = Path(root)
    if not (root / "butler.yaml").exists():
        seed = Config(str(seed_config or package_file("config/butler_seed.yaml")))
        Butler.makeRepo(str(root), config=seed)
        _log.info("Created Butler repository %s", root)
    return Butler.from_config(str(root), writeable=True)


def register_skymap(butler, skymap: DemoSkyMap) -> None:
    """Insert (or check) the ``skymap``, ``tract`` and ``patch`` records of ``skymap``.

    Raises
    ------
    lsst.daf.butler.registry.ConflictingDefinitionError
        If a sky map of that name with other parameters is already registered.
    """
    records = skymap.dimension_records()
    with butler.transaction():
        for element in ("skymap", "tract", "patch"):
            for record in records[element]:
                butler.registry.syncDimensionData(element, record)


def register_bands(butler, bands: tuple[str, ...] = LSST_BANDS, instrument: str = SIM_INSTRUMENT) -> None:
    """Insert ``band`` records (through a nominal instrument's physical filters)."""
    with butler.transaction():
        butler.registry.syncDimensionData(
            "instrument",
            {
                "name": instrument,
                "visit_max": 1,
                "exposure_max": 1,
                "detector_max": 1,
                # Only pipelines that declare an instrument import this class;
                # ours do not. It names the module that registers the records.
                "class_name": __name__,
            },
        )
        for band in bands:
            butler.registry.syncDimensionData(
                "physical_filter", {"instrument": instrument, "name": f"sim_{band}", "band": band}
            )


def sim_truth_dataset_type(universe):
    """The `SIM_TRUTH` dataset type (``ArrowAstropy``, patch dimensions)."""
    from lsst.daf.butler import DatasetType

    return DatasetType(SIM_TRUTH, PATCH_DIMENSIONS, "ArrowAstropy", universe=universe)


def register_pipeline_dataset_types(butler, pipeline: str | os.PathLike | None = None) -> list[str]:
    """Register every dataset type of ``pipeline`` as its connections declare it.

    Parameters
    ----------
    butler : `lsst.daf.butler.Butler`
        Writeable Butler.
    pipeline : path-like, optional
        Pipeline YAML file; default ``pipelines/demo.yaml``.

    Returns
    -------
    names : `list` [`str`]
        The dataset types of the pipeline (registered now or before).

    Raises
    ------
    lsst.daf.butler.registry.ConflictingDefinitionError
        If the repository already defines one of them otherwise.
    """
    dataset_types = pipeline_dataset_types(butler.dimensions, pipeline)
    # Not in one transaction: registering a dataset type may create tables.
    for dataset_type in dataset_types.values():
        butler.registry.registerDatasetType(dataset_type)
    return list(dataset_types)


def register_dataset_type(butler, name: str, storage_class: str | None = None, dimensions=None):
    """Register dataset type ``name``.

    Without ``storage_class`` and ``dimensions``, as the demo pipeline's
    connections declare it (or, for `SIM_TRUTH`, as declared here); with
    both, any dataset type.

    Raises
    ------
    lsst.meas.extensions.residual.errors.InputError
        If ``name`` is not a dataset type of the demo pipeline and no
        definition is given, or only half of one.
    """
    from lsst.daf.butler import DatasetType

    if storage_class is not None and dimensions is not None:
        dataset_type = DatasetType(name, dimensions, storage_class, universe=butler.dimensions)
    elif storage_class is None and dimensions is None:
        known = {
            SIM_TRUTH: sim_truth_dataset_type(butler.dimensions),
            **pipeline_dataset_types(butler.dimensions),
        }
        if name not in known:
            raise InputError(
                f"{name!r} is not a dataset type of the demo pipeline ({', '.join(sorted(known))}); "
                "give its storage_class and dimensions."
            )
        dataset_type = known[name]
    else:
        raise InputError(f"Give both storage_class and dimensions for {name!r}, or neither.")
    butler.registry.registerDatasetType(dataset_type)
    return dataset_type


def truth_table(scene: Scene, x0: int, y0: int) -> Table:
    """The scene's truth as a flat table in tract pixels (one flux column per band)."""
    truth = scene.truth.table
    table = Table()
    table["id"] = np.asarray(truth["id"], dtype=np.int64)
    table["x"] = np.asarray(truth["x"], dtype=np.float64) + x0
    table["y"] = np.asarray(truth["y"], dtype=np.float64) + y0
    table["class"] = np.asarray(truth["class"]).astype(str)
    flux = np.asarray(truth["flux"], dtype=np.float64).reshape(len(truth), scene.nbands)
    mag = np.asarray(truth["mag"], dtype=np.float64).reshape(len(truth), scene.nbands)
    for index, band in enumerate(scene.bands):
        table[f"{band}_flux"] = flux[:, index]
        table[f"{band}_flux"].unit = "nJy"
        table[f"{band}_mag"] = mag[:, index]
    for column in ("hlr", "e1", "e2", "redshift"):
        if column in truth.colnames:
            table[column] = np.asarray(truth[column], dtype=np.float64)
    return table


def _exists(butler, name: str, data_id: dict[str, Any], run: str) -> bool:
    from lsst.daf.butler import MissingDatasetTypeError

    try:
        return butler.find_dataset(name, data_id, collections=[run]) is not None
    except MissingDatasetTypeError:
        return False


def ingest_scene(butler, scene: Scene, skymap: DemoSkyMap, patch_id: int, run: str) -> list[str]:
    """Put a patch-sized scene into ``run`` as ``deep_coadd`` per band (+ truth).

    Datasets already in ``run`` are left as they are (safe to repeat).

    Returns
    -------
    written : `list` [`str`]
        Names (``deep_coadd/r``...) of the datasets written this time.
    """
    from lsst.daf.butler import CollectionType

    butler.registry.registerCollection(run, CollectionType.RUN)
    register_dataset_type(butler, "deep_coadd")
    base = {"skymap": skymap.name, "tract": skymap.tract, "patch": int(patch_id)}
    written = []
    coadds = scene_to_cell_coadds(scene, skymap, patch_id)
    for band, coadd in coadds.items():
        data_id = {**base, "band": band}
        if not _exists(butler, "deep_coadd", data_id, run):
            butler.put(coadd, "deep_coadd", data_id, run=run)
            written.append(f"deep_coadd/{band}")
    if scene.truth is not None:
        register_dataset_type(butler, SIM_TRUTH)
        if not _exists(butler, SIM_TRUTH, base, run):
            geometry = skymap.patch(patch_id)
            butler.put(truth_table(scene, geometry.x0, geometry.y0), SIM_TRUTH, base, run=run)
            written.append(SIM_TRUTH)
    return written


def ingest_model_package(
    butler, path: str | os.PathLike, run: str, dataset_type: str = MODEL_PACKAGE
) -> bool:
    """Copy a model package zip into ``run`` as a dimensionless dataset.

    The file is checked (metadata readable) before ingestion and copied
    unchanged. Returns `False` if ``run`` already holds one.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    lsst.meas.extensions.residual.network.ModelPackageError
        If it is not a model package.
    """
    from lsst.daf.butler import CollectionType, DataCoordinate, DatasetRef, FileDataset

    from ..network.package import read_model_metadata

    read_model_metadata(path)  # refuse a non-package early, with its own message
    butler.registry.registerCollection(run, CollectionType.RUN)
    # As the connection declares the prerequisite, under ``dataset_type``'s name.
    declared = pipeline_dataset_types(butler.dimensions)[MODEL_PACKAGE]
    dtype = register_dataset_type(butler, dataset_type, declared.storageClass_name, declared.dimensions)
    if _exists(butler, dataset_type, {}, run):
        return False
    ref = DatasetRef(dtype, DataCoordinate.make_empty(butler.dimensions), run=run)
    butler.ingest(FileDataset(path=os.fspath(Path(path).resolve()), refs=[ref]), transfer="copy")
    return True
