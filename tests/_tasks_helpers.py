"""Helpers for the tasks/Butler/run tests: a tiny model package and tiny repositories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lsst.daf.butler import FormatterV2

# A network small enough for a CPU test (~0.1 s per 64-pixel tile), built with
# the network package's own API; untrained, with score threshold 0 so that it
# returns detections (random ones) and every stage downstream has work.
TINY_MODEL = {
    "slim_widths": [8, 8, 16, 16],
    "slim_blocks": [1, 1, 1, 1],
    "fpn_channels": 16,
    "box_head_size": 32,
    "mask_head_layers": [16],
    "box_detections_per_img": 8,
}


def make_tiny_package(
    path: Path, bands=("u", "g", "r", "i", "z", "y"), recipe="residual+model", band_subsets=False
) -> Path:
    import torch
    from lsst.meas.extensions.residual.network import (
        InferenceConfig,
        ModelConfig,
        ModelMetadata,
        build_model,
        channel_names,
        save_model_package,
    )

    meta = ModelMetadata(
        name="tiny-test",
        mode="residual",
        recipe=recipe,
        bands=tuple(bands),
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=len(channel_names(recipe, tuple(bands))), **TINY_MODEL),
        inference=InferenceConfig(tile_size=64, tile_overlap=16, score_threshold=0.0),
        band_subsets=band_subsets,
    )
    torch.manual_seed(0)
    model = build_model(meta.model, input_size=64)
    return save_model_package(path, meta, model.state_dict())


def tiny_scene(seed: int, size: int = 64, bands=("u", "g", "r", "i", "z", "y")):
    """A small scene with a few blends (galaxy density twice the 10-year default)."""
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    return simulate_scene(seed, SimulationConfig(height=size, width=size, bands=bands, galaxy_density=120.0))


def put_empty_patch(butler, skymap, patch: int, run: str, size: int = 64) -> None:
    """Coadds of ``patch`` with every pixel flagged NO_DATA (a patch with no data)."""
    from lsst.daf.butler import CollectionType
    from lsst.meas.extensions.residual.tasks.coadds import scene_to_cell_coadds
    from lsst.meas.extensions.residual.tasks.repo import register_dataset_type

    butler.registry.registerCollection(run, CollectionType.RUN)
    register_dataset_type(butler, "deep_coadd")
    coadds = scene_to_cell_coadds(tiny_scene(5, size), skymap, patch)
    for band, coadd in coadds.items():
        coadd.mask.set("NO_DATA", np.ones((size, size), dtype=bool))
        data_id = {"skymap": skymap.name, "tract": skymap.tract, "patch": patch, "band": band}
        butler.put(coadd, "deep_coadd", data_id, run=run)


def make_repo(
    root: Path,
    package: Path,
    patch_size: int = 64,
    patches=2,
    empty_patches=(),
    seed: int = 7,
    bands=("u", "g", "r", "i", "z", "y"),
):
    """A repository with ``patches`` patches (1 row) of tiny scenes in ``bands`` and the package ingested."""
    from lsst.meas.extensions.residual.tasks.repo import (
        create_repo,
        ingest_model_package,
        ingest_scene,
        register_bands,
        register_skymap,
    )
    from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

    butler = create_repo(root)
    skymap = DemoSkyMap(patch_size=patch_size, patch_nx=patches, patch_ny=1)
    register_skymap(butler, skymap)
    register_bands(butler)
    for patch in range(patches):
        if patch in empty_patches:
            put_empty_patch(butler, skymap, patch, "demo/inputs", patch_size)
        else:
            ingest_scene(butler, tiny_scene(seed + patch, patch_size, bands), skymap, patch, "demo/inputs")
    ingest_model_package(butler, package, "demo/models")
    return butler, skymap


def write_afw_masked_image(path, image, variance, mask, planes, x0, y0, wcs):
    """A FITS file laid out as afw's MaskedImage.writeFits writes it (image, mask, variance HDUs)."""
    header = wcs.to_header()
    header["CRPIX1"] -= x0  # afw writes the WCS of the array pixels and records the origin as LTV
    header["CRPIX2"] -= y0
    header["LTV1"] = -x0
    header["LTV2"] = -y0
    header["CRVAL1A"], header["CRVAL2A"] = x0, y0
    header["CRPIX1A"], header["CRPIX2A"] = 1, 1
    header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
    header["CUNIT1A"], header["CUNIT2A"] = "PIXEL", "PIXEL"
    header["WCSNAMEA"] = "A"
    from astropy.io import fits

    hdus = [fits.PrimaryHDU()]
    for name, data in (("IMAGE", image), ("MASK", mask), ("VARIANCE", variance)):
        hdu = fits.ImageHDU(data, header=header.copy())
        hdu.header["EXTTYPE"] = name
        hdu.header["EXTNAME"] = name
        if name == "MASK":
            for plane, bit in planes.items():
                hdu.header[f"HIERARCH MP_{plane}"] = bit  # as afw writes long keys
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)


class OpaqueFileFormatter(FormatterV2):
    """Formatter for ingesting DRP-typed files (ExposureF, SourceCatalog,
    LsstScarletModelData) without their Python packages. It never reads:
    the ``drp`` flavour loads those datasets lazily and reads their files by
    URI, which is what the tests check."""

    supported_extensions = frozenset({".fits", ".scarlet"})
    can_read_from_local_file = True

    def read_from_local_file(self, path, component=None, expected_size=-1):
        raise RuntimeError(f"{path} must be read by URI (deferLoad), not through this formatter.")
