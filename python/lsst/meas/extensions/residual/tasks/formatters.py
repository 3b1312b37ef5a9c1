"""Butler formatters for the project's own storage classes.

Storage classes (declared in ``config/butler_seed.yaml``, which the repo
set-up passes to ``butler create --seed-config``):

``ResidualModelPackage``
    A trained network (`lsst.meas.extensions.residual.network.ModelPackage`),
    stored as the package's own zip file (see
    `lsst.meas.extensions.residual.network.package`). Derived component
    ``metadata`` (`ModelMetadata`) is read without loading the weights.
``ResidualSourceFootprints``
    Sources found by the network with one footprint (boolean mask) each
    (`lsst.meas.extensions.residual.network.SourceDetections`), in the
    network's ``sources.fits`` format (footprints may overlap; nothing is
    lost as it would be in a label image).
``ResidualScarletModelData``
    First- or second-pass Scarlet model data
    (`lsst.meas.extensions.residual.deblending.ScarletModelData`), stored in
    LSST's ``.scarlet`` container (a zip of JSON members, schema 1.0.1), the
    same file format as ``LsstScarletModelData``.
"""

from __future__ import annotations

__all__ = ["ModelPackageFormatter", "ScarletModelDataFormatter", "SourceFootprintsFormatter"]

import os
import tempfile
from typing import Any

from lsst.daf.butler import FormatterV2
from lsst.resources import ResourcePath

#: Header keys the tasks add to ``sources.fits`` files.
_PLACEMENT_KEYS = ("TRACT", "PATCH", "X0", "Y0")


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
        from ..deblending import read_scarlet_model

        if component is not None:
            raise ValueError(f"ResidualScarletModelData has no component {component!r}.")
        return read_scarlet_model(path)

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        from ..deblending import write_scarlet_model

        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "models.scarlet")
            write_scarlet_model(local, in_memory_dataset)
            uri.transfer_from(ResourcePath(local), transfer="copy", overwrite=True)


class SourceFootprintsFormatter(FormatterV2):
    """Read and write network detections with their footprints (``sources.fits``)."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits"})
    can_read_from_local_file = True

    def read_from_local_file(self, path: str, component: str | None = None, expected_size: int = -1) -> Any:
        from ..network.footprints import read_source_detections

        if component is not None:
            raise ValueError(f"ResidualSourceFootprints has no component {component!r}.")
        detections = read_source_detections(path)
        # The reader keeps the network's keys; the tasks also record where
        # the patch lies (TRACT, PATCH, X0, Y0: footprints are in patch pixels).
        from astropy.io import fits

        header = fits.getheader(path, 0)
        for key in _PLACEMENT_KEYS:
            if key in header:
                detections.metadata[key] = int(header[key])
        return detections

    def write_local_file(self, in_memory_dataset: Any, uri: ResourcePath) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "sources.fits")
            in_memory_dataset.write(local)
            uri.transfer_from(ResourcePath(local), transfer="copy", overwrite=True)
