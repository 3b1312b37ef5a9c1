"""Dataset types of the embedded chain, taken from the tasks' connections.

The connections (``tasks/detection.py``, ``tasks/deblend.py``,
``tasks/residual_detection.py``) are the one definition of every dataset
type the pipelines read or write: `pipeline_dataset_types` reads them from a
pipeline's `~lsst.pipe.base.pipeline_graph.PipelineGraph` (inputs such as
``deep_coadd`` and the ``residual_model_package`` prerequisite included), and
`lsst.meas.extensions.residual.tasks.repo.register_pipeline_dataset_types`
registers them. Only the demo's ``residual_sim_truth``, which no task reads
or writes, is declared by hand (`lsst.meas.extensions.residual.tasks.repo`).

How they relate to DRP v2 (documentation, not a definition). Names follow
LSST DRP v2 (lsst/drp_pipe ``pipelines/_ingredients/base-v2.yaml``) wherever
our dataset holds the same thing; what differs is the storage class (DRP's
afw types need lsst.afw, which is not on PyPI):

=================================== ============================ ======================================
dataset type                        embedded storage class       DRP v2
=================================== ============================ ======================================
``deep_coadd`` (+ band)             ``CellCoadd``                same name, ``ExposureF``
``object_detection_merged``         ``ArrowAstropy`` (peaks)     same name, ``SourceCatalog``
                                                                 (footprints with peaks inside)
``object_detection_footprints``     ``ImageV2`` (int32 labels)   none: afw footprints live inside
                                                                 ``object_detection_merged``
``object_deblend``                  ``ArrowAstropy``             same name, ``SourceCatalog``
``object_scarlet_models``           ``ResidualScarletModelData`` same name, ``LsstScarletModelData``
                                                                 (same ``.scarlet`` file format)
``residual_model_package``          ``ResidualModelPackage``     new (prerequisite, dimensions ``()``)
``object_residual_detection``       ``ArrowAstropy``             new: sources found in the residuals
``object_residual_footprints``      ``ResidualSourceFootprints`` new: their footprints
``object_residual_deblend``         ``ArrowAstropy``             new: second-pass catalog
``object_residual_scarlet_models``  ``ResidualScarletModelData`` new: second-pass model data
``residual_sim_truth``              ``ArrowAstropy``             new (demo only, declared by hand)
=================================== ============================ ======================================
"""

from __future__ import annotations

__all__ = [
    "PATCH_DIMENSIONS",
    "BAND_PATCH_DIMENSIONS",
    "DEMO_PIPELINE",
    "pipeline_graph",
    "pipeline_dataset_types",
]

import functools
import os
from pathlib import Path

from .paths import PACKAGE_DIR_ENV, package_dir, package_file

PATCH_DIMENSIONS = ("tract", "patch", "skymap")
BAND_PATCH_DIMENSIONS = ("tract", "patch", "band", "skymap")

#: The whole embedded chain (first pass, residual detection, second pass).
DEMO_PIPELINE = "pipelines/demo.yaml"


def _pipeline_path(pipeline: str | os.PathLike | None) -> str:
    return str(package_file(DEMO_PIPELINE) if pipeline is None else Path(pipeline).resolve())


def pipeline_graph(pipeline: str | os.PathLike | None = None, universe=None):
    """The resolved pipeline graph of ``pipeline``.

    Parameters
    ----------
    pipeline : path-like, optional
        Pipeline YAML file; default ``pipelines/demo.yaml``. Its imports may
        use ``$MEAS_EXTENSIONS_RESIDUAL_DIR``, which is set to the package
        root here if it is not set.
    universe : `lsst.daf.butler.DimensionUniverse`, optional
        Dimensions to resolve against (a repository's ``butler.dimensions``);
        default daf_butler's.

    Returns
    -------
    graph : `lsst.pipe.base.pipeline_graph.PipelineGraph`
    """
    from lsst.pipe.base import Pipeline

    os.environ.setdefault(PACKAGE_DIR_ENV, str(package_dir()))
    graph = Pipeline.from_uri(_pipeline_path(pipeline)).to_graph()
    graph.resolve(dimensions=universe)
    return graph


@functools.cache
def _dataset_types(path: str, universe) -> tuple[dict, frozenset]:
    graph = pipeline_graph(path, universe)
    # The tasks' connections, not pipetask's own config, log and metadata datasets.
    inputs, outputs = set(), set()
    for task in graph.tasks.values():
        for edges, names in (
            (task.prerequisite_inputs, inputs),
            (task.inputs, inputs),
            (task.outputs, outputs),
        ):
            names.update(edge.parent_dataset_type_name for edge in edges.values())
    names = sorted(inputs | outputs)
    return {name: graph.dataset_types[name].dataset_type for name in names}, frozenset(outputs)


def pipeline_dataset_types(
    universe, pipeline: str | os.PathLike | None = None, outputs_only: bool = False
) -> dict:
    """Every dataset type the pipeline's connections declare, by name.

    Inputs (``deep_coadd``), prerequisites (``residual_model_package``) and
    outputs, as the connections declare them; not pipetask's own config, log
    and metadata datasets.

    Parameters
    ----------
    universe : `lsst.daf.butler.DimensionUniverse`
        The repository's dimensions (``butler.dimensions``).
    pipeline : path-like, optional
        Pipeline YAML file; default ``pipelines/demo.yaml``.
    outputs_only : `bool`
        Only the datasets a task of the pipeline writes.

    Returns
    -------
    dataset_types : `dict` [`str`, `lsst.daf.butler.DatasetType`]
    """
    dataset_types, outputs = _dataset_types(_pipeline_path(pipeline), universe)
    return {name: value for name, value in dataset_types.items() if not outputs_only or name in outputs}
