"""Adapters between per-band coadd objects and the core's `Scene`.

The tasks receive one coadd per band. Three kinds are understood:

``lsst.images.cells.CellCoadd`` (the embedded default's ``deep_coadd``)
    Image, variance, mask, PSF (per cell) and sky projection, read through
    lsst-images only.
``lsst.afw.image.Exposure`` (DRP's ``deep_coadd``, where afw is importable)
    Read through afw's own accessors (``image``/``variance``/``mask``
    arrays, ``getPsf().computeKernelImage``, ``getWcs().pixelToSkyArray``).
A legacy (afw-written) coadd FITS file, without afw
    Read with `lsst.images.MaskedImage.read_legacy`; the file's PSF is an afw
    persistence archive that cannot be read without afw, so the PSF must come
    from elsewhere (the Scarlet model data carries the observed PSF per band).

Everything is converted into a `PatchImages`: a `Scene` in patch pixels plus
the patch origin in tract pixels and a pixel-to-sky function.
"""

from __future__ import annotations

__all__ = [
    "PatchImages",
    "label_image",
    "label_array",
    "CoaddPlane",
    "read_coadd_plane",
    "read_legacy_coadd_file",
    "assemble_patch",
    "local_pixel_scale",
    "read_patch",
    "scene_to_cell_coadds",
    "DEFAULT_BAD_MASK_PLANES",
    "EmptyPatchError",
]

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..bands import LSST_BANDS, check_band_order
from ..chain.placement import PatchPlacement, PixelToSky
from ..masks import DEFAULT_BAD_PLANES, DEFAULT_MASK_PLANES
from ..scene import Scene, SceneFormatError

#: Mask planes that make a pixel unusable: the core's (`masks.DEFAULT_BAD_PLANES`, LSST's Scarlet
#: ``badMask`` and STREAK). Names match a coadd's planes in afw's spelling (``SAT``) or in
#: lsst-images' (``SATURATED``), whichever the coadd uses.
DEFAULT_BAD_MASK_PLANES: tuple[str, ...] = DEFAULT_BAD_PLANES

#: The bit the core's scene mask gives the pixels a task's ``badMaskPlanes`` make unusable.
_BAD_PLANE = "BAD"


class EmptyPatchError(SceneFormatError):
    """A patch has no usable pixel in any band (tasks turn this into NoWorkFound)."""


@dataclasses.dataclass
class CoaddPlane:
    """One band of a patch, read from whatever coadd object held it.

    Attributes
    ----------
    image, variance : `numpy.ndarray`
        (H, W) float32 pixels.
    bad : `numpy.ndarray`
        (H, W) bool, True where a bad mask plane is set.
    psf : `numpy.ndarray` or `None`
        (K, K) PSF kernel image at the patch centre, or `None` if the
        source carries no readable PSF.
    x0, y0 : `int`
        Tract pixel of the first column and row.
    pixel_to_sky : callable or `None`
        ``(x, y) -> (ra, dec)`` in degrees for tract pixels.
    planes : `numpy.ndarray` or `None`
        (H, W) int32 of the coadd's mask planes that the core knows, in its
        bits (`~lsst.meas.extensions.residual.masks.DEFAULT_MASK_PLANES`,
        afw's names) and restricted to ``bad`` for the planes the core
        counts as bad, so that the scene's verdict is the task's
        (`assemble_patch`) and SAT still marks bright stars; None: no named
        planes.
    """

    image: np.ndarray
    variance: np.ndarray
    bad: np.ndarray
    psf: np.ndarray | None
    x0: int
    y0: int
    pixel_to_sky: PixelToSky | None
    planes: np.ndarray | None = None


@dataclasses.dataclass
class PatchImages:
    """A patch as the core sees it.

    Attributes
    ----------
    scene : `Scene`
        The bands of the patch in LSST order, in patch pixels.
    x0, y0 : `int`
        Tract pixel of the patch's first column and row: patch pixel (x, y)
        is tract pixel (x + x0, y + y0).
    pixel_to_sky : callable or `None`
        ``(x, y) -> (ra, dec)`` in degrees for tract pixels.
    """

    scene: Scene
    x0: int
    y0: int
    pixel_to_sky: PixelToSky | None

    def placement(self, tract: int, patch: int) -> PatchPlacement:
        """The `PatchPlacement` of this patch (what the core's output tables need)."""
        return PatchPlacement(
            tract=int(tract), patch=int(patch), x0=self.x0, y0=self.y0, pixel_to_sky=self.pixel_to_sky
        )


def label_image(labels: np.ndarray, patch: PatchImages):
    """An int32 `lsst.images.Image` of a (H, W) label array over the patch's tract bbox."""
    from lsst.images import Box, Image

    height, width = labels.shape
    box = Box.factory[patch.y0 : patch.y0 + height, patch.x0 : patch.x0 + width]
    return Image(np.ascontiguousarray(labels, dtype=np.int32), bbox=box)


def label_array(image) -> tuple[np.ndarray, int, int]:
    """(labels, x0, y0) of a label `lsst.images.Image`."""
    return np.asarray(image.array, dtype=np.int32), int(image.bbox.x.start), int(image.bbox.y.start)


@functools.cache
def _afw_plane_names() -> dict[str, str]:
    """lsst-images' name of a deep-coadd mask plane → afw's (``SATURATED`` → ``SAT``)."""
    from lsst.images import get_legacy_deep_coadd_mask_planes

    return {plane.name: legacy for legacy, plane in get_legacy_deep_coadd_mask_planes().items()}


def _read_planes(
    is_set: Callable[[str], np.ndarray], names: Sequence[str], bad_mask_planes: Sequence[str], shape
) -> tuple[np.ndarray, np.ndarray]:
    """(bad, planes) of a `CoaddPlane` from a mask with planes ``names`` (either spelling)."""
    afw_name = _afw_plane_names()
    wanted = set(bad_mask_planes)
    bad = np.zeros(shape, dtype=bool)
    planes = np.zeros(shape, dtype=np.int32)
    # A plane the core counts as bad but the task does not is kept only where the task's are set.
    restricted = []
    for name in names:  # each plane decoded once
        core_name = afw_name.get(name, name)
        is_bad = name in wanted or core_name in wanted
        kept = core_name in DEFAULT_MASK_PLANES and core_name != _BAD_PLANE
        if not (is_bad or kept):
            continue
        pixels = is_set(name)
        if is_bad:
            bad |= pixels
        if kept and core_name in DEFAULT_BAD_PLANES and not is_bad:
            restricted.append((core_name, pixels))
        elif kept:
            planes[pixels] |= np.int32(1 << DEFAULT_MASK_PLANES[core_name])
    for core_name, pixels in restricted:
        planes[pixels & bad] |= np.int32(1 << DEFAULT_MASK_PLANES[core_name])
    return bad, planes


def _normalised_psf(kernel: np.ndarray, what: str) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise SceneFormatError(f"{what}: PSF kernel image must be square with odd side, not {kernel.shape}.")
    if not np.all(np.isfinite(kernel)):
        raise SceneFormatError(f"{what}: PSF kernel image has non-finite values (a missing cell?).")
    total = kernel.sum()
    if not total > 0:
        raise SceneFormatError(f"{what}: PSF kernel image sums to {total}, not a positive number.")
    # Kernel images of LSST PSF models are normalised to 1 up to round-off;
    # the scene format checks the sum to 1e-3, so remove the round-off here.
    return (kernel / total).astype(np.float32)


def _read_lsst_images(coadd: Any, bad_mask_planes: Sequence[str], what: str) -> CoaddPlane:
    bbox = coadd.bbox
    shape = (bbox.y.size, bbox.x.size)
    mask = coadd.mask

    def is_set(name: str) -> np.ndarray:
        return np.asarray(mask.get(name), dtype=bool)

    bad, planes = _read_planes(is_set, list(mask.schema.names), bad_mask_planes, shape)
    psf = None
    psf_model = getattr(coadd, "psf", None)
    if psf_model is not None:
        # One PSF per band for the whole patch (the scene format): the kernel
        # at the patch centre. Cell coadds vary per cell; see the docs.
        cx = bbox.x.start + (bbox.x.size - 1) / 2
        cy = bbox.y.start + (bbox.y.size - 1) / 2
        psf = _normalised_psf(psf_model.compute_kernel_image(x=cx, y=cy).array, what)
    projection = coadd.sky_projection

    pixel_to_sky = None
    if projection is not None:

        def pixel_to_sky(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            from lsst.images import XY

            sky = projection.pixel_to_sky(XY(x=np.asarray(x, dtype=float), y=np.asarray(y, dtype=float)))
            return np.asarray(sky.ra.deg), np.asarray(sky.dec.deg)

    return CoaddPlane(
        image=np.asarray(coadd.image.array, dtype=np.float32),
        variance=np.asarray(coadd.variance.array, dtype=np.float32),
        bad=bad,
        planes=planes,
        psf=psf,
        x0=int(bbox.x.start),
        y0=int(bbox.y.start),
        pixel_to_sky=pixel_to_sky,
    )


def _read_afw_exposure(exposure: Any, bad_mask_planes: Sequence[str], what: str) -> CoaddPlane:
    mask = exposure.mask
    array = np.asarray(mask.array)

    def is_set(name: str) -> np.ndarray:
        return (array & mask.getPlaneBitMask([name])) != 0

    bbox = exposure.getBBox()
    bad, planes = _read_planes(is_set, list(mask.getMaskPlaneDict()), bad_mask_planes, array.shape)
    psf_model = exposure.getPsf()
    psf = None
    if psf_model is not None:
        psf = _normalised_psf(psf_model.computeKernelImage(bbox.getCenter()).array, what)
    wcs = exposure.getWcs()
    pixel_to_sky = None
    if wcs is not None:

        def pixel_to_sky(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ra, dec = wcs.pixelToSkyArray(
                np.asarray(x, dtype=float), np.asarray(y, dtype=float), degrees=True
            )
            return np.asarray(ra), np.asarray(dec)

    return CoaddPlane(
        image=np.asarray(exposure.image.array, dtype=np.float32),
        variance=np.asarray(exposure.variance.array, dtype=np.float32),
        bad=bad,
        planes=planes,
        psf=psf,
        x0=int(bbox.getMinX()),
        y0=int(bbox.getMinY()),
        pixel_to_sky=pixel_to_sky,
    )


def read_coadd_plane(
    coadd: Any, bad_mask_planes: Sequence[str] = DEFAULT_BAD_MASK_PLANES, what: str = "coadd"
):
    """Read one band's coadd object into a `CoaddPlane`.

    Parameters
    ----------
    coadd
        An lsst-images ``CellCoadd``/``VisitImage``/``MaskedImage``, an afw
        ``Exposure``, or a `CoaddPlane` (returned as it is).
    bad_mask_planes : sequence of `str`
        Mask planes marking unusable pixels, in afw's or lsst-images'
        spelling (names absent from the mask are ignored).
    what : `str`
        Name used in error messages (e.g. ``"deep_coadd r"``).

    Raises
    ------
    TypeError
        If ``coadd`` is of an unknown kind.
    SceneFormatError
        If its PSF kernel image is unusable.
    """
    if isinstance(coadd, CoaddPlane):
        return coadd
    if hasattr(coadd, "getMaskedImage") and hasattr(coadd, "getPsf"):
        return _read_afw_exposure(coadd, bad_mask_planes, what)
    if hasattr(coadd, "image") and hasattr(coadd, "variance") and hasattr(coadd, "bbox"):
        return _read_lsst_images(coadd, bad_mask_planes, what)
    raise TypeError(f"{what}: cannot read a coadd of type {type(coadd).__name__}.")


def read_legacy_coadd_file(uri: Any, bad_mask_planes: Sequence[str] = DEFAULT_BAD_MASK_PLANES) -> CoaddPlane:
    """Read an afw-written coadd FITS file without afw (PSF not included).

    The pixel-to-sky function comes from the image HDU's FITS WCS (afw
    writes the tract WCS there, shifted to the image's own pixel origin, so
    the ``LTV1``/``LTV2`` offsets are applied).
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    from lsst.images import MaskedImage
    from lsst.resources import ResourcePath

    # read_legacy maps afw plane names to lsst-images ones when it can; both spellings are matched.
    masked = MaskedImage.read_legacy(uri)
    plane = _read_lsst_images(masked, bad_mask_planes, str(uri))
    with ResourcePath(uri).open("rb") as stream, fits.open(stream) as hdul:
        header = hdul[1].header
        wcs = WCS(header) if "CTYPE1" in header else None
    if wcs is not None:
        x0, y0 = plane.x0, plane.y0

        def pixel_to_sky(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # The header's WCS is for array pixels (0 at the first column).
            ra, dec = wcs.wcs_pix2world(np.asarray(x, dtype=float) - x0, np.asarray(y, dtype=float) - y0, 0)
            return np.asarray(ra), np.asarray(dec)

        plane.pixel_to_sky = pixel_to_sky
    return plane


def local_pixel_scale(pixel_to_sky: PixelToSky, x: float, y: float) -> float:
    """Arcsec per pixel at pixel (x, y) of a pixel → (RA, Dec) degrees mapping: the square root of
    the sky area of the pixel, from its neighbours on the plane tangent at (x, y) (gnomonic, so
    exact anywhere on the sphere to second order in the pixel's size)."""
    ra, dec = pixel_to_sky(np.array([x, x + 1.0, x]), np.array([y, y, y + 1.0]))
    ra, dec = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec, dtype=float))
    d_ra = ra[1:] - ra[0]
    cos_c = np.sin(dec[0]) * np.sin(dec[1:]) + np.cos(dec[0]) * np.cos(dec[1:]) * np.cos(d_ra)
    xi = np.cos(dec[1:]) * np.sin(d_ra) / cos_c
    eta = (np.cos(dec[0]) * np.sin(dec[1:]) - np.sin(dec[0]) * np.cos(dec[1:]) * np.cos(d_ra)) / cos_c
    area = abs(xi[0] * eta[1] - xi[1] * eta[0])
    return round(float(np.degrees(np.sqrt(area)) * 3600.0), 6)


def assemble_patch(
    planes: Mapping[str, CoaddPlane],
    bands: Sequence[str] | None = None,
    psf_fallback: Mapping[str, np.ndarray] | None = None,
    what: str = "patch",
) -> PatchImages:
    """Stack per-band planes into a `PatchImages` (bands in LSST order).

    Parameters
    ----------
    planes : mapping [`str`, `CoaddPlane`]
        One plane per band, in any order.
    bands : sequence of `str`, optional
        Bands required, in LSST order; others are dropped. Default: all given.
    psf_fallback : mapping [`str`, `numpy.ndarray`], optional
        PSF per band for planes that carry none.
    what : `str`
        Name used in error messages (e.g. ``"tract 0 patch 3"``).

    Raises
    ------
    SceneFormatError
        If a required band is missing, bands are unknown, the planes disagree
        in size or origin, or a band has no PSF.
    """
    unknown = sorted(set(planes) - set(LSST_BANDS))
    if unknown:
        raise SceneFormatError(f"{what}: unknown band(s) {unknown}.")
    if bands is None:
        bands = tuple(b for b in LSST_BANDS if b in planes)
    else:
        bands = check_band_order(tuple(bands), f"{what}: required bands")
    missing = [b for b in bands if b not in planes]
    if missing:
        raise SceneFormatError(
            f"{what}: no coadd in band(s) {','.join(missing)}; "
            f"have {','.join(sorted(planes, key=LSST_BANDS.index))}, "
            f"need {','.join(bands)}."
        )
    if not bands:
        raise SceneFormatError(f"{what}: no coadds.")
    first = planes[bands[0]]
    for band in bands[1:]:
        plane = planes[band]
        if plane.image.shape != first.image.shape or (plane.x0, plane.y0) != (first.x0, first.y0):
            raise SceneFormatError(
                f"{what}: band {band} covers {plane.image.shape} at ({plane.x0}, {plane.y0}) but band "
                f"{bands[0]} covers {first.image.shape} at ({first.x0}, {first.y0})."
            )
    psfs = []
    for band in bands:
        psf = planes[band].psf
        if psf is None and psf_fallback is not None and band in psf_fallback:
            psf = _normalised_psf(psf_fallback[band], f"{what} band {band} (PSF from the model data)")
        if psf is None:
            raise SceneFormatError(f"{what}: band {band} has no PSF (and no fallback PSF was given).")
        psfs.append(psf)
    size = max(p.shape[0] for p in psfs)
    psfs = [np.pad(p, (size - p.shape[0]) // 2) for p in psfs]
    # The task's bad pixels are BAD (a plane of the core's bad list); the other planes keep their
    # names, so the scene's verdict is the task's and SAT still marks bright stars.
    bad_bit = np.int32(1 << DEFAULT_MASK_PLANES[_BAD_PLANE])
    mask = np.stack(
        [
            np.where(planes[b].bad, bad_bit, np.int32(0))
            | (np.int32(0) if planes[b].planes is None else planes[b].planes)
            for b in bands
        ]
    )
    image = np.stack([planes[b].image for b in bands])
    variance = np.stack([planes[b].variance for b in bands])
    usable = (mask == 0) & np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    if not np.any(usable):
        raise EmptyPatchError(
            f"{what}: no usable pixel in any band (all masked, non-finite or zero variance)."
        )
    scene = Scene(
        image=image,
        variance=variance,
        psf=np.stack(psfs),
        bands=tuple(bands),
        mask=mask,
        mask_planes=dict(DEFAULT_MASK_PLANES),
        # Without a WCS the scene says nothing, and is taken to have LSST's 0.2" (`Scene.pixel_scale`).
        metadata={}
        if first.pixel_to_sky is None
        else {
            "PIXSCALE": local_pixel_scale(
                first.pixel_to_sky, first.x0 + image.shape[2] / 2, first.y0 + image.shape[1] / 2
            )
        },
    )
    return PatchImages(scene=scene, x0=first.x0, y0=first.y0, pixel_to_sky=first.pixel_to_sky)


def read_patch(
    coadds: Mapping[str, Any],
    bands: Sequence[str] | None,
    bad_mask_planes: Sequence[str],
    what: str,
    psf_fallback: Mapping[str, np.ndarray] | None = None,
) -> PatchImages:
    """Read a task's per-band coadd inputs into one `PatchImages` (what every task does first).

    Raises
    ------
    lsst.pipe.base.NoWorkFound
        If the patch has no usable pixel (so pipetask skips the quantum).
    SceneFormatError
        If bands are missing or the coadds do not belong together.
    """
    import lsst.pipe.base as pipeBase

    planes = {
        band: read_coadd_plane(coadd, bad_mask_planes, f"{what} deep_coadd {band}")
        for band, coadd in coadds.items()
    }
    try:
        return assemble_patch(planes, bands or None, psf_fallback=psf_fallback, what=what)
    except EmptyPatchError as err:
        raise pipeBase.NoWorkFound(str(err)) from err


def scene_to_cell_coadds(scene: Scene, skymap: Any, patch_id: int) -> dict[str, Any]:
    """Wrap a patch-sized scene as one ``lsst.images.cells.CellCoadd`` per band.

    The whole patch is one cell (our simulated PSF is constant over a patch);
    the image unit is nJy. A scene mask with declared planes keeps them, in
    lsst-images' spelling for the deep-coadd planes it knows (``SAT`` →
    ``SATURATED``) and under their own names for the others (``STREAK``,
    ``BAD``); a plain mask (nonzero = bad) becomes ``NO_DATA``.

    Parameters
    ----------
    scene : `Scene`
        Scene with the patch's shape.
    skymap : `DemoSkyMap`
        Sky map holding the patch.
    patch_id : `int`
        Patch id.

    Returns
    -------
    coadds : `dict` [`str`, `lsst.images.cells.CellCoadd`]
        By band.
    """
    import astropy.units as u

    from lsst.images import Box, Image, Mask, MaskPlane, MaskSchema, SkyProjection, TractFrame
    from lsst.images import get_legacy_deep_coadd_mask_planes as deep_coadd_planes
    from lsst.images.cells import CellCoadd, CellGrid, CellGridBounds, CellPointSpreadFunction

    geometry = skymap.patch(patch_id)
    if scene.shape != geometry.shape:
        raise SceneFormatError(f"Scene shape {scene.shape} differs from patch {patch_id}'s {geometry.shape}.")
    height, width = skymap.tract_shape
    tract_box = Box.factory[0:height, 0:width]
    box = Box.factory[geometry.y0 : geometry.y0 + geometry.height, geometry.x0 : geometry.x0 + geometry.width]
    frame = TractFrame(skymap=skymap.name, tract=skymap.tract, bbox=tract_box)
    projection = SkyProjection.from_fits_wcs(skymap.wcs(), frame, pixel_bounds=tract_box)
    grid = CellGrid(bbox=box, cell_shape={"y": geometry.height, "x": geometry.width})
    known = deep_coadd_planes()
    scene_planes = scene.mask_planes or {}
    extra = [MaskPlane(name, f"mask plane {name} of the scene") for name in scene_planes if name not in known]
    schema = MaskSchema([*known.values(), *extra])
    coadds = {}
    for index, band in enumerate(scene.bands):
        image = Image(scene.image[index].copy(), bbox=box, unit=u.nJy, sky_projection=projection)
        variance = Image(scene.variance[index].copy(), bbox=box, unit=u.nJy**2)
        mask = Mask(0, schema=schema, bbox=box)
        if scene.mask is not None and scene.mask_planes is None:
            mask.set("NO_DATA", scene.mask[index] != 0)
        for name, bit in scene_planes.items():
            pixels = np.bitwise_and(scene.mask[index], 1 << bit) != 0
            if pixels.any():
                mask.set(known[name].name if name in known else name, pixels)
        psf = CellPointSpreadFunction(
            scene.psf[index].astype(np.float64)[None, None], CellGridBounds(grid=grid, bbox=box)
        )
        coadds[band] = CellCoadd(image, mask=mask, variance=variance, band=band, psf=psf)
    return coadds
