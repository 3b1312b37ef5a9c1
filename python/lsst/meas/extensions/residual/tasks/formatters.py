"""Butler formatters (and a delegate) for the project's own storage classes.

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
    lost as it would be in a label image). The tasks add the patch placement
    (``TRACT``, ``PATCH``, ``X0``, ``Y0``) to the metadata; it is read back.
``ResidualScarletModelData``
    First- or second-pass Scarlet model data
    (`lsst.meas.extensions.residual.deblending.ScarletModelData`), stored in
    LSST's ``.scarlet`` container (a zip of JSON members, schema 1.0.1), the
    same file format as ``LsstScarletModelData``. Read parameter
    ``blend_id`` (one id or a list of ids, as meas_extensions_scarlet's
    formatter has) reads only those parent blends or isolated sources; the
    other members of the zip are not decompressed.

Every formatter writes through `~lsst.daf.butler.FormatterV2.to_bytes` and
reads from the datastore's stream (`~lsst.daf.butler.FormatterV2.read_from_stream`):
no temporary local files.
"""

from __future__ import annotations

__all__ = [
    "ModelPackageFormatter",
    "ScarletModelDataFormatter",
    "ScarletModelDataDelegate",
    "SourceFootprintsFormatter",
    "blend_id_parameter",
]

import dataclasses
import io
import operator
from collections.abc import Mapping
from typing import Any, BinaryIO

from lsst.daf.butler import FormatterV2, StorageClassDelegate
from lsst.utils.iteration import ensure_iterable

from ..errors import InputError

#: Header keys the tasks add to ``sources.fits`` files (placement of the patch).
_PLACEMENT_KEYS = ("TRACT", "PATCH", "X0", "Y0")


def _refuse_component(component: str | None, storage_class: str) -> None:
    if component is not None:
        raise InputError(f"{storage_class} has no component {component!r}.")


class ModelPackageFormatter(FormatterV2):
    """Read and write a model package as its zip file.

    A put stores the weights as float32 so that it never loses precision;
    ingest the original file (`lsst.daf.butler.Butler.ingest`, as
    `~lsst.meas.extensions.residual.tasks.repo.ingest_model_package` does)
    to keep its bytes as they are.
    """

    default_extension = ".zip"
    supported_extensions = frozenset({".zip"})
    can_read_from_stream = True

    def read_from_stream(
        self, stream: BinaryIO, component: str | None = None, expected_size: int = -1
    ) -> Any:
        from ..network.package import load_model_package, read_model_metadata

        if component == "metadata":
            return read_model_metadata(stream)
        _refuse_component(component, "ResidualModelPackage")
        return load_model_package(stream)

    def to_bytes(self, in_memory_dataset: Any) -> bytes:
        from ..network.package import model_package_bytes

        return model_package_bytes(
            in_memory_dataset.metadata, in_memory_dataset.state_dict, weights_dtype="float32"
        )


def blend_id_parameter(value: Any) -> list[int]:
    """The ids a ``blend_id`` read parameter asks for (one integer id or several).

    Raises
    ------
    lsst.meas.extensions.residual.errors.InputError
        If a value is not an integer id, or none is given.
    """
    ids = []
    for item in ensure_iterable(value):
        try:
            ids.append(operator.index(item))
        except TypeError:
            raise InputError(
                f"blend_id must be an integer id or a list of them, not {item!r} ({type(item).__name__})."
            ) from None
    if not ids:
        raise InputError("blend_id is empty; give at least one parent blend or isolated source id.")
    return ids


class ScarletModelDataFormatter(FormatterV2):
    """Read and write Scarlet model data in LSST's ``.scarlet`` container.

    The ``blend_id`` read parameter is handled here, while reading the zip.
    """

    default_extension = ".scarlet"
    supported_extensions = frozenset({".scarlet"})
    unsupported_parameters = frozenset()
    can_read_from_stream = True

    def read_from_stream(
        self, stream: BinaryIO, component: str | None = None, expected_size: int = -1
    ) -> Any:
        from ..deblending import read_scarlet_model

        _refuse_component(component, "ResidualScarletModelData")
        parameters = self.file_descriptor.parameters or {}
        blend_ids = blend_id_parameter(parameters["blend_id"]) if "blend_id" in parameters else None
        return read_scarlet_model(stream, blend_ids=blend_ids)

    def to_bytes(self, in_memory_dataset: Any) -> bytes:
        from ..deblending import scarlet_model_to_bytes

        return scarlet_model_to_bytes(in_memory_dataset)


class ScarletModelDataDelegate(StorageClassDelegate):
    """Apply the ``blend_id`` parameter to model data already in memory.

    File datastores never call it (the formatter reads only the asked
    members); an in-memory datastore does.
    """

    def handleParameters(self, inMemoryDataset: Any, parameters: Mapping[str, Any] | None = None) -> Any:
        from ..deblending import ScarletModelDataError

        parameters = dict(parameters or {})
        if not parameters:
            return inMemoryDataset
        unknown = set(parameters) - {"blend_id"}
        if unknown:
            raise InputError(f"ResidualScarletModelData has no read parameter(s) {sorted(unknown)}.")
        ids = blend_id_parameter(parameters["blend_id"])
        missing = sorted(set(ids) - set(inMemoryDataset.blends) - set(inMemoryDataset.isolated))
        if missing:
            raise ScarletModelDataError(f"No blend or isolated source with id(s) {missing}.")
        return dataclasses.replace(
            inMemoryDataset,
            blends={i: inMemoryDataset.blends[i] for i in ids if i in inMemoryDataset.blends},
            isolated={i: inMemoryDataset.isolated[i] for i in ids if i in inMemoryDataset.isolated},
        )


class SourceFootprintsFormatter(FormatterV2):
    """Read and write network detections with their footprints (``sources.fits``)."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits"})
    can_read_from_stream = True

    def read_from_stream(
        self, stream: BinaryIO, component: str | None = None, expected_size: int = -1
    ) -> Any:
        from astropy.io import fits

        from ..network.footprints import read_source_detections

        _refuse_component(component, "ResidualSourceFootprints")
        content = stream.read()
        detections = read_source_detections(io.BytesIO(content))
        # The reader keeps the network's keys; the placement keys are the tasks'.
        header = fits.getheader(io.BytesIO(content), 0)
        for key in _PLACEMENT_KEYS:
            if key in header:
                detections.metadata[key] = int(header[key])
        return detections

    def to_bytes(self, in_memory_dataset: Any) -> bytes:
        buffer = io.BytesIO()
        in_memory_dataset.write(buffer)
        return buffer.getvalue()
