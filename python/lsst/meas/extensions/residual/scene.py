"""The multi-band scene: the project's public in-memory and on-disk format.

A scene is a stack of background-subtracted, aligned images of one sky
region, one per band, with their variance, an optional bad-pixel mask and one
PSF image per band. Simulated scenes also carry their truth (`Truth`).

On disk a scene is a multi-extension FITS file (format version 1):

``PRIMARY``
    No data. Header: ``BANDS`` (e.g. ``'u,g,r,i,z,y'``, wavelength order),
    ``FMTVER`` (``1``), and optional scalar metadata (``PIXSCALE`` in
    arcsec/pixel, ``BUNIT``, ``ZEROPT`` AB magnitude of one image unit,
    ``SEED``, ``DEPTH``...).
``IMAGE``
    float32 (nbands, H, W).
``VARIANCE``
    float32 (nbands, H, W), per-pixel variance of ``IMAGE``.
``MASK`` (optional)
    integer (nbands, H, W). Its header may declare LSST mask planes as afw
    does (``MP_SAT = 1``...; `lsst.meas.extensions.residual.masks`): a pixel
    is then bad if it has a bit of a bad plane (BAD, CR, NO_DATA, SAT,
    SUSPECT, EDGE, STREAK). Without such cards, nonzero marks a bad pixel.
``PSF``
    float32 (nbands, K, K), K odd, each PSF normalised to sum 1, centred on
    the central pixel (flux-weighted centroid within `PSF_CENTROID_TOLERANCE`
    pixels of it) and non-negative up to the small negative wings of real
    PSF models (`PSF_NEGATIVE_PIXEL_TOLERANCE`, `PSF_NEGATIVE_FLUX_TOLERANCE`).
``TRUTH`` and ``TRUTH_STAMPS`` (simulated scenes only)
    See `lsst.meas.extensions.residual.truth`. A ``TRUTH`` table of another
    schema is ignored with a warning: nothing but evaluation and training
    needs the truth.
``ARTEFACTS`` and ``ARTEFACT_PIXELS`` (simulated scenes with artefacts only)
    Binary table, one row per artefact (see
    `lsst.meas.extensions.residual.artefact_truth`), with the footprint geometry columns of
    `~lsst.meas.extensions.residual.packing.FOOTPRINT_COLUMNS`; uint8, 1-D:
    each row's footprint mask, packed (`pack_footprints`). In memory
    `Scene.artefacts` is the table with a ``footprint`` column of
    `~lsst.meas.extensions.residual.geometry.Footprint` instead.

See ``doc/lsst.meas.extensions.residual/scene-format.rst``.
"""

from __future__ import annotations

__all__ = [
    "Scene",
    "SceneFormatError",
    "read_scene",
    "write_scene",
    "FORMAT_VERSION",
    "PSF_CENTROID_TOLERANCE",
    "PSF_NEGATIVE_PIXEL_TOLERANCE",
    "PSF_NEGATIVE_FLUX_TOLERANCE",
]

import dataclasses
import logging
import os
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .artefact_truth import (
    ArtefactTableError,
    artefact_table_band_subset,
    artefact_table_from_hdus,
    artefact_table_to_hdus,
    check_artefact_table,
)
from .bands import check_band_order
from .errors import InputError, MissingInputError
from .masks import (
    MaskPlaneError,
    bad_pixels,
    check_planes,
    plane_bits,
    planes_from_header,
    planes_to_header,
)
from .truth import Truth, TruthSchemaError

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1

# Relative tolerance on the PSF normalisation: PSFs are stored as float32.
_PSF_SUM_TOLERANCE = 1e-3

#: Largest distance (pixels) between a PSF's flux-weighted centroid and its
#: central pixel. Real PSF models are off by up to 0.3 px (the HSC PSFs of
#: the shared fixtures); a PSF stored a pixel or more off centre would shift
#: every model by as much.
PSF_CENTROID_TOLERANCE = 1.0

#: Most negative pixel value a PSF may have, as a fraction of its peak. PSF
#: models ring slightly below zero in their wings (HSC: down to 8e-4 of the
#: peak); a deeper negative pixel is a sign or background error.
PSF_NEGATIVE_PIXEL_TOLERANCE = 0.01

#: Largest fraction of a PSF's flux that may sit in negative pixels
#: (HSC: up to 5e-4).
PSF_NEGATIVE_FLUX_TOLERANCE = 0.01


class SceneFormatError(InputError):
    """A scene (in memory or on disk) does not follow the scene format."""


@dataclasses.dataclass
class Scene:
    """A multi-band scene.

    Parameters
    ----------
    image : `numpy.ndarray`
        (nbands, H, W) background-subtracted image.
    variance : `numpy.ndarray`
        (nbands, H, W) variance of ``image``.
    psf : `numpy.ndarray`
        (nbands, K, K) PSF image per band, K odd, each summing to 1.
    bands : `tuple` [`str`]
        Band names, in LSST wavelength order, one per image plane.
    mask : `numpy.ndarray`, optional
        (nbands, H, W) integer mask: LSST mask-plane bits if ``mask_planes``
        declares them, else nonzero marks a bad pixel.
    mask_planes : `dict` [`str`, `int`], optional
        Mask plane name → bit number (the MASK header's ``MP_*`` cards).
    truth : `Truth`, optional
        Truth of a simulated scene.
    metadata : `dict`, optional
        Scalar metadata (``PIXSCALE``, ``BUNIT``, ``SEED``, ...).
    artefacts : `astropy.table.Table`, optional
        Truth of a simulated scene's artefacts: one row per artefact with
        the columns `~lsst.meas.extensions.residual.artefact_truth.ARTEFACT_COLUMNS` (``footprint``: a
        `~lsst.meas.extensions.residual.geometry.Footprint` per row).

    Raises
    ------
    SceneFormatError
        If shapes, bands or PSFs are inconsistent.
    """

    image: np.ndarray
    variance: np.ndarray
    psf: np.ndarray
    bands: tuple[str, ...]
    mask: np.ndarray | None = None
    truth: Truth | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    mask_planes: dict[str, int] | None = None
    artefacts: Table | None = None

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.variance = np.asarray(self.variance, dtype=np.float32)
        self.psf = np.asarray(self.psf, dtype=np.float32)
        if self.mask is not None:
            self.mask = np.asarray(self.mask)
            if not np.issubdtype(self.mask.dtype, np.integer) and self.mask.dtype != bool:
                raise SceneFormatError(f"MASK must be an integer array, not {self.mask.dtype}.")
        if self.mask_planes is not None:
            if self.mask is None:
                raise SceneFormatError("Mask planes are declared but the scene has no MASK.")
            try:
                self.mask_planes = check_planes(self.mask_planes)
            except MaskPlaneError as err:
                raise SceneFormatError(str(err)) from None
        try:
            self.bands = check_band_order(tuple(self.bands), "Scene bands")
        except ValueError as err:
            raise SceneFormatError(str(err)) from None
        self._validate()

    def _validate(self) -> None:
        nbands = len(self.bands)
        if self.image.ndim != 3:
            raise SceneFormatError(f"IMAGE must be (nbands, H, W); got shape {self.image.shape}.")
        if self.image.shape[0] != nbands:
            raise SceneFormatError(
                f"IMAGE has {self.image.shape[0]} planes but {nbands} bands ({','.join(self.bands)})."
            )
        if self.image.shape[1] == 0 or self.image.shape[2] == 0:
            raise SceneFormatError(f"IMAGE is empty (shape {self.image.shape}).")
        if self.variance.shape != self.image.shape:
            raise SceneFormatError(
                f"VARIANCE shape {self.variance.shape} differs from IMAGE shape {self.image.shape}."
            )
        if self.mask is not None and self.mask.shape != self.image.shape:
            raise SceneFormatError(
                f"MASK shape {self.mask.shape} differs from IMAGE shape {self.image.shape}."
            )
        if self.psf.ndim != 3 or self.psf.shape[1] != self.psf.shape[2] or self.psf.shape[1] % 2 == 0:
            raise SceneFormatError(f"PSF must be (nbands, K, K) with K odd; got shape {self.psf.shape}.")
        if self.psf.shape[0] != nbands:
            raise SceneFormatError(f"PSF has {self.psf.shape[0]} planes but the scene has {nbands} bands.")
        if not np.all(np.isfinite(self.psf)):
            raise SceneFormatError("PSF has non-finite values.")
        sums = self.psf.sum(axis=(1, 2), dtype=np.float64)
        bad = np.abs(sums - 1) > _PSF_SUM_TOLERANCE
        if np.any(bad):
            detail = ", ".join(
                f"{b}: {s:.4g}" for b, s, is_bad in zip(self.bands, sums, bad, strict=True) if is_bad
            )
            raise SceneFormatError(f"Each PSF must be normalised to sum 1; sums are {detail}.")
        for band, psf in zip(self.bands, self.psf.astype(np.float64), strict=True):
            _check_psf_shape(psf, band)
        if self.truth is not None and self.truth.nbands != nbands:
            raise SceneFormatError(
                f"The truth has {self.truth.nbands} band(s) of fluxes but the scene has {nbands}."
            )
        if not np.any(self.good):
            raise SceneFormatError("Every pixel of the scene is masked or non-finite.")
        if self.artefacts is not None:
            try:
                check_artefact_table(self.artefacts, self.bands)
            except ArtefactTableError as err:
                raise SceneFormatError(str(err)) from None

    @property
    def nbands(self) -> int:
        return len(self.bands)

    @property
    def shape(self) -> tuple[int, int]:
        """Image (H, W)."""
        return self.image.shape[1], self.image.shape[2]

    @property
    def pixel_scale(self) -> float:
        """Pixel scale in arcsec (0.2, LSST's, unless the metadata says)."""
        return float(self.metadata.get("PIXSCALE", 0.2))

    @property
    def good(self) -> np.ndarray:
        """(nbands, H, W) boolean: pixels usable in a fit.

        A pixel is bad if it is masked (in a bad plane, `masks.bad_pixels`),
        its image or variance is not finite, or its variance is not positive.
        """
        return self.good_at(slice(None))

    def bad_mask(self, index=slice(None)) -> np.ndarray | None:
        """Bool array of ``mask[index]``: pixels masked in a bad plane (None without a MASK).

        The mask's own verdict only; `good` adds non-finite and non-positive-variance pixels.
        """
        if self.mask is None:
            return None
        return bad_pixels(self.mask[index], self.mask_planes)

    def good_at(self, index) -> np.ndarray:
        """`good` of ``[index]`` (a band, or a band and box slices) without the whole cube."""
        image, variance = self.image[index], self.variance[index]
        good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
        if self.mask is not None:
            good &= ~self.bad_mask(index)
        return good

    def has_data(self) -> np.ndarray:
        """(H, W) bool: pixels usable in at least one band (`good` of any band, made band by band)."""
        usable = np.zeros(self.shape, dtype=bool)
        for band in range(self.nbands):
            usable |= self.good_at(band)
        return usable

    def plane(self, *names: str) -> np.ndarray | None:
        """(nbands, H, W) bool: pixels with any of the named mask planes, or None without planes."""
        if self.mask is None or self.mask_planes is None:
            return None
        return np.bitwise_and(self.mask, plane_bits(self.mask_planes, names)) != 0

    def weights(self) -> np.ndarray:
        """(nbands, H, W) inverse variance, zero at bad pixels."""
        weights = np.zeros_like(self.variance)
        # In place: no copies of the good pixels' variances (a full patch's largest temporaries).
        np.divide(1.0, self.variance, out=weights, where=self.good)
        return weights

    def clean_image(self) -> np.ndarray:
        """The image with bad pixels set to zero (so NaNs never propagate)."""
        return np.where(self.good, self.image, np.float32(0))

    def band_subset(self, bands: tuple[str, ...] | list[str]) -> Scene:
        """Return the scene restricted to ``bands`` (which must be present)."""
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise SceneFormatError(f"Scene has bands {','.join(self.bands)}; missing {','.join(missing)}.")
        index = [self.bands.index(b) for b in bands]
        return Scene(
            image=self.image[index],
            variance=self.variance[index],
            psf=self.psf[index],
            bands=tuple(bands),
            mask=None if self.mask is None else self.mask[index],
            truth=None if self.truth is None else self.truth.band_subset(index),
            metadata=dict(self.metadata),
            mask_planes=self.mask_planes,
            artefacts=None
            if self.artefacts is None
            else artefact_table_band_subset(self.artefacts, index, bands),
        )


def _check_psf_shape(psf: np.ndarray, band: str) -> None:
    """Refuse a PSF (normalised to sum 1) that is off centre or has deep negative pixels."""
    peak = float(psf.max())
    negative = psf < 0
    if negative.any():
        deepest = float(-psf.min()) / peak
        negative_flux = float(-psf[negative].sum())
        if deepest > PSF_NEGATIVE_PIXEL_TOLERANCE or negative_flux > PSF_NEGATIVE_FLUX_TOLERANCE:
            raise SceneFormatError(
                f"PSF of band {band} has negative pixels down to {-deepest:.3g} of its peak, with "
                f"{negative_flux:.3g} of its flux below zero; at most {PSF_NEGATIVE_PIXEL_TOLERANCE:g} "
                f"of the peak and {PSF_NEGATIVE_FLUX_TOLERANCE:g} of the flux are accepted "
                "(the ringing of PSF models)."
            )
    size = psf.shape[0]
    centre = size // 2
    grid = np.arange(size) - centre
    dy = float(psf.sum(axis=1) @ grid)  # the PSF sums to 1: these are the centroid offsets
    dx = float(psf.sum(axis=0) @ grid)
    offset = float(np.hypot(dy, dx))
    if offset > PSF_CENTROID_TOLERANCE:
        raise SceneFormatError(
            f"PSF of band {band} is off centre: its centroid is at (y, x) = ({centre + dy:.2f}, "
            f"{centre + dx:.2f}), {offset:.2f} px from the central pixel ({centre}, {centre}); PSFs must "
            f"be centred to within {PSF_CENTROID_TOLERANCE:g} px."
        )


def write_scene(scene: Scene, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``scene`` to a multi-extension FITS file in the scene format."""
    primary = fits.PrimaryHDU()
    header = primary.header
    header["FMTVER"] = (FORMAT_VERSION, "ResidualDetectron scene format version")
    header["BANDS"] = (",".join(scene.bands), "bands of the IMAGE planes, in order")
    for key, value in scene.metadata.items():
        if key in ("FMTVER", "BANDS"):
            continue
        card_key = key if len(key) <= 8 else f"HIERARCH {key}"
        header[card_key] = value
    hdus = [
        primary,
        fits.ImageHDU(scene.image, name="IMAGE"),
        fits.ImageHDU(scene.variance, name="VARIANCE"),
    ]
    if scene.mask is not None:
        mask_hdu = fits.ImageHDU(scene.mask.astype(np.int32), name="MASK")
        for key, bit, comment in planes_to_header(scene.mask_planes or {}):
            mask_hdu.header[key if len(key) <= 8 else f"HIERARCH {key}"] = (bit, comment)
        hdus.append(mask_hdu)
    hdus.append(fits.ImageHDU(scene.psf, name="PSF"))
    if scene.truth is not None:
        hdus.extend(scene.truth.to_hdus())
    if scene.artefacts is not None:
        hdus.extend(artefact_table_to_hdus(scene.artefacts))
    fits.HDUList(hdus).writeto(os.fspath(path), overwrite=overwrite)


def read_scene(path: str | os.PathLike, *, truth: bool = True) -> Scene:
    """Read a scene FITS file.

    A ``TRUTH`` table this package cannot read as its truth (another
    schema, or a band count other than the scene's) is ignored with a
    logged warning; the scene is read without truth. With ``truth=False``
    it is not read at all: its per-source stamps take as much memory as
    the image on a simulated patch, and processing a scene needs no truth.
    The ``ARTEFACTS`` table is truth too: it is read with the truth.

    Raises
    ------
    MissingInputError
        If ``path`` does not exist (also a `FileNotFoundError`).
    SceneFormatError
        If the file is not a readable scene (not FITS, missing extensions,
        inconsistent shapes or bands, a PSF not normalised, off centre or
        negative).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingInputError(f"Scene file {path!r} does not exist.")
    try:
        hdul = fits.open(path, memmap=False)
    except Exception as err:  # astropy raises OSError, TypeError, ValueError...
        raise SceneFormatError(f"{path!r} is not a readable FITS file: {err}") from err
    with hdul:
        names = {hdu.name for hdu in hdul}
        missing = [n for n in ("IMAGE", "VARIANCE", "PSF") if n not in names]
        if missing:
            raise SceneFormatError(
                f"{path!r} is not a scene file: missing extension(s) {', '.join(missing)}."
            )
        header = hdul[0].header
        version = header.get("FMTVER", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise SceneFormatError(
                f"{path!r} has scene format version {version}; this reader knows {FORMAT_VERSION}."
            )
        if "BANDS" not in header:
            raise SceneFormatError(f"{path!r} has no BANDS keyword in its primary header.")
        bands = tuple(b.strip() for b in str(header["BANDS"]).split(","))
        metadata = {
            key: header[key]
            for key in header
            if key not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "FMTVER", "BANDS", "COMMENT", "HISTORY", "")
        }
        try:
            image = _read_data(hdul, "IMAGE", path)
            variance = _read_data(hdul, "VARIANCE", path)
            psf = _read_data(hdul, "PSF", path)
            mask = np.array(hdul["MASK"].data) if "MASK" in names else None
            mask_planes = None
            if mask is not None:
                try:
                    mask_planes = planes_from_header(hdul["MASK"].header)
                except MaskPlaneError as err:
                    raise SceneFormatError(f"{path!r}: the MASK header's plane cards: {err}") from None
                del hdul["MASK"].data
            scene_truth = _read_truth(hdul, path, len(bands)) if truth and "TRUTH" in names else None
            artefacts = None
            if truth and "ARTEFACTS" in names:
                try:
                    artefacts = artefact_table_from_hdus(hdul)
                except ArtefactTableError as err:
                    raise SceneFormatError(f"{path!r}: {err}") from None
        except (TypeError, ValueError, OSError) as err:
            if isinstance(err, SceneFormatError):
                raise
            raise SceneFormatError(f"{path!r} could not be read (corrupt or truncated?): {err}") from err
    try:
        return Scene(
            image=image,
            variance=variance,
            psf=psf,
            bands=bands,
            mask=mask,
            truth=scene_truth,
            metadata=metadata,
            mask_planes=mask_planes,
            artefacts=artefacts,
        )
    except SceneFormatError as err:
        raise SceneFormatError(f"{path!r}: {err}") from None


def _read_truth(hdul: fits.HDUList, path: str, nbands: int) -> Truth | None:
    """The scene file's truth, or None (with a warning) if its table is of another schema."""
    try:
        truth = Truth.from_hdus(hdul)
    except TruthSchemaError as err:
        _log.warning("%s: TRUTH ignored (the scene is read without truth): %s", path, err)
        return None
    if truth.nbands != nbands:
        _log.warning(
            "%s: TRUTH ignored (the scene is read without truth): its fluxes have %d band(s), the scene %d.",
            path,
            truth.nbands,
            nbands,
        )
        return None
    return truth


def _read_data(hdul: fits.HDUList, name: str, path: str) -> np.ndarray:
    data = hdul[name].data
    if data is None:
        raise SceneFormatError(f"{path!r}: extension {name} has no data.")
    array = np.array(data, dtype=np.float32)
    # Drop the HDU's own (big-endian) copy now: a full patch would otherwise hold each plane twice.
    del data, hdul[name].data
    return array
