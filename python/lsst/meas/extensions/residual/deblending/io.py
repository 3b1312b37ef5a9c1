"""Write and read a `DeblendResult` as a directory of files.

Layout of ``DIR/``:

``catalog.fits``
    The per-source catalog (binary table; header ``BANDS``).
``model.fits``, ``residual.fits``
    (nbands, H, W) float32 cubes in extension ``MODEL`` / ``RESIDUAL``
    (header ``BANDS``).
``peaks.fits``
    The footprints and peaks that were deblended (`write_detections`).
``models.scarlet``
    The scarlet model data (LSST's zip container, `write_scarlet_model`).
``summary.json``
    Counts, timing and the configuration.
"""

from __future__ import annotations

__all__ = ["write_deblend_result", "read_deblend_result", "RESULT_FILES"]

import json
import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..detection import read_detections, write_detections
from ..scene import SceneFormatError
from .config import DeblendConfig
from .scarlet_io import read_scarlet_model, write_scarlet_model

RESULT_FILES = {
    "catalog": "catalog.fits",
    "model": "model.fits",
    "residual": "residual.fits",
    "peaks": "peaks.fits",
    "model_data": "models.scarlet",
    "summary": "summary.json",
}


def _write_cube(path: Path, cube: np.ndarray, name: str, bands, overwrite: bool) -> None:
    primary = fits.PrimaryHDU()
    primary.header["BANDS"] = ",".join(bands)
    hdu = fits.ImageHDU(np.asarray(cube, dtype=np.float32), name=name)
    hdu.header["BANDS"] = ",".join(bands)
    fits.HDUList([primary, hdu]).writeto(path, overwrite=overwrite)


def _read_cube(path: Path, name: str) -> np.ndarray:
    try:
        with fits.open(path, memmap=False) as hdul:
            if name not in hdul:
                raise SceneFormatError(f"{path} has no {name} extension.")
            return np.array(hdul[name].data, dtype=np.float32)
    except OSError as err:
        raise SceneFormatError(f"{path} could not be read: {err}") from err


def write_deblend_result(result, directory: str | os.PathLike, overwrite: bool = False) -> dict[str, Path]:
    """Write ``result`` into ``directory`` (created if needed).

    Returns
    -------
    paths : `dict` [`str`, `pathlib.Path`]
        The written files by role (keys of `RESULT_FILES`).

    Raises
    ------
    FileExistsError
        If a file exists and ``overwrite`` is False.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {key: directory / name for key, name in RESULT_FILES.items()}
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} exist(s); pass overwrite=True to replace.")
    catalog = result.catalog.copy()
    catalog.meta["BANDS"] = ",".join(result.bands)
    catalog.write(paths["catalog"], overwrite=overwrite)
    _write_cube(paths["model"], result.model, "MODEL", result.bands, overwrite)
    _write_cube(paths["residual"], result.residual, "RESIDUAL", result.bands, overwrite)
    write_detections(result.detections, paths["peaks"], overwrite=overwrite)
    write_scarlet_model(paths["model_data"], result.model_data)
    names, counts = np.unique(np.asarray(result.catalog["found_by"]), return_counts=True)
    summary = {
        "bands": list(result.bands),
        "n_sources": len(result.catalog),
        "n_blends": len(result.model_data.blends),
        "n_isolated": len(result.model_data.isolated),
        "found_by": {str(k): int(v) for k, v in zip(names, counts, strict=True)},
        "timing_seconds": {k: round(float(v), 3) for k, v in result.timing.items()},
        "config": result.config.model_dump(),
    }
    paths["summary"].write_text(json.dumps(summary, indent=2))
    return paths


def read_deblend_result(directory: str | os.PathLike):
    """Read a directory written by `write_deblend_result`.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    SceneFormatError
        If a file cannot be read.
    """
    from .deblend import DeblendResult

    directory = Path(directory)
    paths = {key: directory / name for key, name in RESULT_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"Not a deblend result directory: missing {', '.join(missing)}.")
    catalog = Table.read(paths["catalog"])
    bands = tuple(str(catalog.meta.pop("BANDS", "")).split(","))
    if catalog["found_by"].dtype.kind == "S":
        catalog["found_by"] = catalog["found_by"].astype(str)
    summary = json.loads(paths["summary"].read_text())
    known = DeblendConfig.model_fields
    config = DeblendConfig(**{k: v for k, v in summary.get("config", {}).items() if k in known})
    return DeblendResult(
        catalog=catalog,
        model=_read_cube(paths["model"], "MODEL"),
        residual=_read_cube(paths["residual"], "RESIDUAL"),
        model_data=read_scarlet_model(paths["model_data"]),
        detections=read_detections(paths["peaks"]),
        bands=bands,
        config=config,
        timing=summary.get("timing_seconds", {}),
    )
