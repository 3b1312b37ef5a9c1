"""Butler formatters for the project's own storage classes.

Storage classes (declared in ``config/butler_seed.yaml``, which the repo
set-up passes to ``butler create --seed-config``):

``ResidualModelPackage``
    A trained network (`lsst.meas.extensions.residual.network.ModelPackage`),
    stored as the package's own zip file (see
    `lsst.meas.extensions.residual.network.package`). Derived component
    ``metadata`` (`ModelMetadata`) is read without loading the weights.
``ResidualScarletModelData``
    First- or second-pass Scarlet model data
    (`lsst.meas.extensions.residual.deblending.ScarletModelData`), stored in
    LSST's ``.scarlet`` container (a zip of JSON members, schema 1.0.1), the
    same file format as ``LsstScarletModelData``.
"""

from __future__ import annotations

__all__ = ["ModelPackageFormatter", "ScarletModelDataFormatter"]

import os
import tempfile
from typing import Any

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath


class ModelPackageFormatter(FormatterV2):
    """Read and write a model package as its zip file."""

    default_extension = ".zip"
    supported_extensions = frozenset({".zip"})
    can_read_from_local_file = True

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..network.package import load_model_package, read_model_metadata

        if component == "metadata":
            return read_model_metadata(path)
        if component is not None:
            raise ValueError(f"ResidualModelPackage has no component {component!r}.")
        return load_model_package(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        from ..network.package import save_model_package

        # float32 so that a put never loses precision; ingest the original
        # file (`butler.ingest`) to keep its bytes as they are.
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "package.zip")
            save_model_package(
                local, in_memory_dataset.metadata, in_memory_dataset.state_dict, weights_dtype="float32"
            )
            uri.transfer_from(ResourcePath(local), transfer="copy", overwrite=True)


class ScarletModelDataFormatter(FormatterV2):
    """Read and write Scarlet model data in LSST's ``.scarlet`` container."""

    default_extension = ".scarlet"
    supported_extensions = frozenset({".scarlet"})
    can_read_from_local_file = True

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..deblending import read_model_data

        if component is not None:
            raise ValueError(f"ResidualScarletModelData has no component {component!r}.")
        return read_model_data(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        from ..deblending import write_model_data

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "models.scarlet")
            write_model_data(in_memory_dataset, local)
            uri.transfer_from(ResourcePath(local), transfer="copy", overwrite=True)
