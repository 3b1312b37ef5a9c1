"""Per-band survey images into a `~lsst.meas.extensions.residual.scene.Scene`.

`scene_from_arrays` takes one image per band (with, where the survey gives
them, a variance or inverse variance, a mask and a PSF) and makes a scene in
nJy: it converts the units (`njy_per_unit`), estimates what is missing
(the variance from the sky, `estimate_variance`; the PSF from the stars,
`estimate_psfs`) and records in the header what each band's planes are:

``BUNIT``, ``ZEROPT``
    ``nJy`` and its AB zero point, 31.4; ``UNITFAC``: nJy per input unit.
``PIXSCALE``
    Arcsec per pixel (from the WCS, or given).
``VARSRC_<B>``
    ``given``, ``inverse variance`` or how it was estimated.
``PSFSRC_<B>``, ``PSFFW_<B>``, ``PSFNS_<B>``
    ``given`` or ``estimated``; the PSF's FWHM (arcsec, a Gaussian fit);
    the number of stars it was built from (0 when given).
the WCS
    The first band's celestial WCS cards (``CTYPE1``, ``CRVAL1``, ``CD1_1``...).

`import_fits` reads the planes from FITS files (``PATH`` or ``PATH[HDU]``),
checks that every band lies on one pixel grid (same shape, and the same sky
position at the corners and centre to 0.01 px; images are not resampled),
maps survey band names to LSST's (``band_map``) and calls
`scene_from_arrays`. `ImportReport` lists what was done, the stars of each
estimated PSF included.
"""

from __future__ import annotations

__all__ = [
    "ImportReport",
    "scene_from_arrays",
    "scene_from_scarlet_npz",
    "import_fits",
    "read_fits_plane",
    "GRID_TOLERANCE",
]

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import LSST_BANDS
from ..errors import InputError, MissingInputError
from ..masks import DEFAULT_MASK_PLANES
from ..scene import Scene
from ..simulation.survey import NJY_ZEROPOINT
from .noise import estimate_variance
from .psf_estimation import estimate_psfs, psf_fwhm
from .units import njy_per_unit

#: Largest sky offset (pixels) between two bands' grids at the image corners and centre.
GRID_TOLERANCE = 0.01
_BAD_BIT = np.int32(1 << DEFAULT_MASK_PLANES["BAD"])
_NO_DATA_BIT = np.int32(1 << DEFAULT_MASK_PLANES["NO_DATA"])


@dataclasses.dataclass
class ImportReport:
    """What `scene_from_arrays` did to each band."""

    bands: tuple[str, ...]
    unit: str
    njy_per_unit: float
    pixel_scale: float
    variance: dict[str, str]
    """Per band: ``given``, ``inverse variance`` or the estimate's method."""
    sky_sigma_njy: dict[str, float]
    """Per band: median sky σ (nJy), measured where estimated, from the variance where given."""
    psf: dict[str, dict[str, Any]]
    """Per band: ``source`` (given/estimated), ``fwhm_arcsec``, ``n_stars``, ``stars`` ((x, y) list)."""
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per band: the file (and HDU) it came from (`import_fits`)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _lsst_order(bands) -> tuple[str, ...]:
    unknown = sorted(set(bands) - set(LSST_BANDS))
    if unknown:
        raise InputError(
            f"Unknown band(s) {', '.join(unknown)}: bands are LSST's {','.join(LSST_BANDS)} "
            "(map survey names with a band map, e.g. HSC-I=i)."
        )
    return tuple(b for b in LSST_BANDS if b in bands)


def _centred_psf(psf: np.ndarray, band: str) -> np.ndarray:
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise InputError(f"The PSF of band {band} must be a square image of odd side, not shape {psf.shape}.")
    total = psf.sum()
    if not np.isfinite(total) or total <= 0:
        raise InputError(f"The PSF of band {band} does not sum to a positive number.")
    return psf / total


def scene_from_arrays(
    images: Mapping[str, np.ndarray],
    *,
    pixel_scale: float,
    variance: Mapping[str, np.ndarray] | None = None,
    inverse_variance: Mapping[str, np.ndarray] | None = None,
    psf: Mapping[str, np.ndarray] | None = None,
    mask: Mapping[str, np.ndarray] | None = None,
    unit: str = "nJy",
    zeropoint: float | None = None,
    gain: float | None = None,
    wcs_cards: Mapping[str, Any] | None = None,
    psf_size: int = 25,
    min_psf_stars: int = 5,
    psf_min_snr: float = 20.0,
) -> tuple[Scene, ImportReport]:
    """A scene from one image per band (module docstring).

    Parameters
    ----------
    images : mapping [`str`, `numpy.ndarray`]
        LSST band name → (H, W) background-subtracted image, in ``unit``.
    pixel_scale : `float`
        Arcsec per pixel.
    variance, inverse_variance : mapping, optional
        Per band (any subset of the bands; give one of the two for a band):
        the variance of the image, or its inverse (0 or non-finite: no data),
        in ``unit`` (squared, or inverse squared). The other bands' variance
        is estimated from the sky.
    psf : mapping, optional
        Per band: a square PSF image of odd side (normalised here). The
        other bands' PSFs are estimated from the stars.
    mask : mapping, optional
        Per band: nonzero marks a bad pixel.
    unit : `str`
        Pixel unit (`UNITS`).
    zeropoint : `float`, optional
        AB magnitude of one count (``unit="counts"``).
    gain : `float`, optional
        Electrons per image unit: an estimated variance then includes the
        sources' Poisson noise.
    wcs_cards : mapping, optional
        WCS header cards to keep in the scene's header.
    psf_size : `int`
        Side of estimated PSFs (odd).
    min_psf_stars : `int`
        Fewest stars an estimated PSF is built from.
    psf_min_snr : `float`
        Least S/N of those stars (`estimate_psfs`).

    Raises
    ------
    InputError
        If bands are unknown, planes disagree in shape, a band has both a
        variance and an inverse variance, units are inconsistent, or a PSF
        cannot be estimated (`PsfEstimationError`).
    """
    if not images:
        raise InputError("No image: give at least one band.")
    bands = _lsst_order(images)
    variance, inverse_variance = dict(variance or {}), dict(inverse_variance or {})
    psf, mask = dict(psf or {}), dict(mask or {})
    for name, planes in (
        ("variance", variance),
        ("inverse variance", inverse_variance),
        ("PSF", psf),
        ("mask", mask),
    ):
        extra = sorted(set(planes) - set(bands))
        if extra:
            raise InputError(f"A {name} is given for band(s) {', '.join(extra)}, which have no image.")
    both = sorted(set(variance) & set(inverse_variance))
    if both:
        raise InputError(f"Band(s) {', '.join(both)} have both a variance and an inverse variance; give one.")
    if not pixel_scale > 0:
        raise InputError(f"The pixel scale must be positive (arcsec per pixel), not {pixel_scale}.")
    factor = njy_per_unit(unit, zeropoint)
    shape = np.shape(images[bands[0]])
    if len(shape) != 2:
        raise InputError(f"Band {bands[0]}'s image must be 2-D, not shape {shape}.")
    for band in bands:
        for name, planes in (
            ("image", images),
            ("variance", variance),
            ("inverse variance", inverse_variance),
            ("mask", mask),
        ):
            if band in planes and np.shape(planes[band]) != shape:
                raise InputError(
                    f"Band {band}'s {name} has shape {np.shape(planes[band])}, "
                    f"but band {bands[0]}'s image {shape}."
                )

    image_planes, variance_planes, mask_planes = [], [], []
    variance_source, sky_sigma = {}, {}
    for band in bands:
        image = np.asarray(images[band], dtype=np.float64)
        bad = ~np.isfinite(image)
        if band in mask:
            bad |= np.asarray(mask[band]) != 0
        if band in variance:
            var = np.asarray(variance[band], dtype=np.float64)
            variance_source[band] = "given"
        elif band in inverse_variance:
            inverse = np.asarray(inverse_variance[band], dtype=np.float64)
            with np.errstate(divide="ignore"):
                var = np.where(np.isfinite(inverse) & (inverse > 0), 1.0 / inverse, np.inf)
            variance_source[band] = "inverse variance"
        else:
            estimate = estimate_variance(image, ~bad, gain=gain)
            var = estimate.variance.astype(np.float64)
            variance_source[band] = f"estimated: {estimate.method}"
        no_data = bad | ~np.isfinite(var) | ~(var > 0)
        sky_sigma[band] = (
            float(np.sqrt(np.median(var[~no_data])) * factor) if np.any(~no_data) else float("nan")
        )
        image_planes.append(np.where(no_data, 0.0, image) * factor)
        variance_planes.append(np.where(no_data, np.inf, var) * factor**2)
        mask_planes.append(np.where(bad, _BAD_BIT, 0) | np.where(no_data & ~bad, _NO_DATA_BIT, 0))
    image_cube = np.stack(image_planes)
    variance_cube = np.stack(variance_planes)
    mask_cube = np.stack(mask_planes).astype(np.int32)

    psf_report: dict[str, dict[str, Any]] = {}
    psfs: dict[str, np.ndarray] = {band: _centred_psf(psf[band], band) for band in bands if band in psf}
    missing = [band for band in bands if band not in psf]
    if missing:
        index = [bands.index(b) for b in missing]
        estimates = estimate_psfs(
            image_cube[index],
            variance_cube[index],
            mask_cube[index] == 0,
            tuple(missing),
            size=psf_size,
            min_stars=min_psf_stars,
            min_snr=psf_min_snr,
        )
        for band, estimate in zip(missing, estimates, strict=True):
            psfs[band] = estimate.psf
            psf_report[band] = {
                "source": "estimated",
                "fwhm_arcsec": round(estimate.fwhm * pixel_scale, 4),
                "n_stars": estimate.n_stars,
                "stars": [[float(x), float(y)] for x, y in estimate.stars],
            }
    for band in bands:
        if band not in psf_report:
            psf_report[band] = {
                "source": "given",
                "fwhm_arcsec": round(psf_fwhm(psfs[band]) * pixel_scale, 4),
                "n_stars": 0,
                "stars": [],
            }
    size = max(p.shape[0] for p in psfs.values())
    psf_cube = np.stack([np.pad(psfs[b], (size - psfs[b].shape[0]) // 2) for b in bands])

    metadata: dict[str, Any] = {
        "BUNIT": "nJy",
        "ZEROPT": NJY_ZEROPOINT,
        "UNITFAC": factor,
        "PIXSCALE": round(float(pixel_scale), 6),
    }
    for band in bands:
        key = band.upper()
        metadata[f"VARSRC_{key}"] = variance_source[band]
        metadata[f"PSFSRC_{key}"] = psf_report[band]["source"]
        metadata[f"PSFFW_{key}"] = psf_report[band]["fwhm_arcsec"]
        metadata[f"PSFNS_{key}"] = psf_report[band]["n_stars"]
    metadata.update(dict(wcs_cards or {}))
    scene = Scene(
        image=image_cube.astype(np.float32),
        variance=variance_cube.astype(np.float32),
        psf=psf_cube.astype(np.float32),
        bands=bands,
        mask=mask_cube,
        mask_planes=dict(DEFAULT_MASK_PLANES),
        metadata=metadata,
    )
    report = ImportReport(
        bands=bands,
        unit=unit,
        njy_per_unit=factor,
        pixel_scale=float(pixel_scale),
        variance=variance_source,
        sky_sigma_njy=sky_sigma,
        psf=psf_report,
    )
    return scene, report


_SPEC = re.compile(r"^(?P<path>.+?)(?:\[(?P<hdu>[^\[\]]+)\])?$")


def read_fits_plane(spec: str | os.PathLike) -> tuple[np.ndarray, Any, str]:
    """(data, header, description) of the 2-D image in ``PATH`` or ``PATH[HDU]`` (number or name).

    Without an HDU, the first HDU with 2-D data.

    Raises
    ------
    MissingInputError
        If the file does not exist.
    InputError
        If it is not FITS, or the HDU is missing or not a 2-D image.
    """
    from astropy.io import fits

    match = _SPEC.match(os.fspath(spec))
    path, hdu = Path(match["path"]), match["hdu"]
    if not path.exists():
        raise MissingInputError(f"{path} does not exist.")
    try:
        with fits.open(path, memmap=False) as hdul:
            if hdu is None:
                found = next((h for h in hdul if h.data is not None and np.ndim(h.data) == 2), None)
                if found is None:
                    raise InputError(f"{path} has no 2-D image HDU.")
            else:
                key: int | str = int(hdu) if hdu.lstrip("-").isdigit() else hdu
                try:
                    found = hdul[key]
                except (KeyError, IndexError):
                    raise InputError(f"{path} has no HDU {hdu!r}.") from None
            if found.data is None or np.ndim(found.data) != 2:
                raise InputError(f"{path}[{hdu}] is not a 2-D image (shape {np.shape(found.data)}).")
            return np.array(found.data, dtype=np.float64), found.header.copy(), f"{path}[{found.name}]"
    except OSError as err:
        raise InputError(f"{path} is not a readable FITS file: {err}") from None


def _celestial_wcs(header, what: str):
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception as err:  # astropy raises several types for a broken WCS
            raise InputError(f"{what}: its WCS cannot be read: {err}") from None
    return wcs.celestial if wcs.has_celestial else None


def _check_grids(wcs_of: Mapping[str, Any], shape: tuple[int, int]) -> None:
    """Refuse bands whose WCS puts the image's corners and centre elsewhere on the sky."""
    height, width = shape
    x = np.array([0.0, width - 1.0, 0.0, width - 1.0, (width - 1) / 2])
    y = np.array([0.0, 0.0, height - 1.0, height - 1.0, (height - 1) / 2])
    with_wcs = {band: wcs for band, wcs in wcs_of.items() if wcs is not None}
    if with_wcs and len(with_wcs) != len(wcs_of):
        lacking = sorted(set(wcs_of) - set(with_wcs))
        raise InputError(
            f"Band(s) {', '.join(lacking)} have no WCS but {', '.join(with_wcs)} do: their grids cannot be "
            "checked against each other."
        )
    if not with_wcs:
        return
    reference_band, reference = next(iter(with_wcs.items()))
    sky = reference.pixel_to_world(x, y)
    for band, wcs in with_wcs.items():
        px, py = wcs.world_to_pixel(sky)
        offset = float(np.max(np.hypot(np.asarray(px) - x, np.asarray(py) - y)))
        if offset > GRID_TOLERANCE:
            raise InputError(
                f"Band {band}'s pixel grid is not band {reference_band}'s: the same sky positions fall "
                f"{offset:.3g} px apart (tolerance {GRID_TOLERANCE:g} px). Resample the images onto one "
                "grid first (the import does not resample)."
            )


def _pixel_scale_of(wcs) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    scales = proj_plane_pixel_scales(wcs) * 3600.0  # degrees per pixel along each axis
    return float(np.sqrt(scales[0] * scales[1]))


def import_fits(
    images: Mapping[str, str],
    *,
    variance: Mapping[str, str] | None = None,
    inverse_variance: Mapping[str, str] | None = None,
    psf: Mapping[str, str] | None = None,
    mask: Mapping[str, str] | None = None,
    band_map: Mapping[str, str] | None = None,
    pixel_scale: float | None = None,
    **options: Any,
) -> tuple[Scene, ImportReport]:
    """A scene from per-band FITS files (module docstring).

    Parameters
    ----------
    images : mapping [`str`, `str`]
        Band → ``PATH`` or ``PATH[HDU]`` of its image.
    variance, inverse_variance, psf, mask : mapping, optional
        Band → ``PATH[HDU]`` of those planes (see `scene_from_arrays`).
    band_map : mapping [`str`, `str`], optional
        Survey band name → LSST band (e.g. ``{"HSC-I": "i"}``), applied to
        every mapping's keys.
    pixel_scale : `float`, optional
        Arcsec per pixel; default: from the WCS (required without one). A
        value the WCS contradicts by more than 1% is refused.
    **options
        `scene_from_arrays`' ``unit``, ``zeropoint``, ``gain``, ``psf_size``,
        ``min_psf_stars``, ``psf_min_snr``.

    Raises
    ------
    InputError
        As `scene_from_arrays`; also if the grids differ (`GRID_TOLERANCE`),
        two names map to one band, or the pixel scale is unknown.
    """
    band_map = dict(band_map or {})

    def mapped(planes: Mapping[str, str] | None, what: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, spec in (planes or {}).items():
            band = band_map.get(name, name)
            if band in out:
                raise InputError(f"Two {what} files are given for band {band} ({out[band]} and {spec}).")
            out[band] = spec
        return out

    image_specs = mapped(images, "image")
    read = {band: read_fits_plane(spec) for band, spec in image_specs.items()}
    shape = next(iter(read.values()))[0].shape
    wcs_of = {band: _celestial_wcs(header, what) for band, (_, header, what) in read.items()}
    for data, _, what in read.values():
        if data.shape != shape:
            first = next(iter(read))
            raise InputError(f"{what} has shape {data.shape}, but band {first}'s image {shape}.")
    _check_grids(wcs_of, shape)
    reference = next((wcs for wcs in wcs_of.values() if wcs is not None), None)
    if reference is not None:
        from_wcs = _pixel_scale_of(reference)
        if pixel_scale is not None and abs(pixel_scale / from_wcs - 1) > 0.01:
            raise InputError(f'The pixel scale given ({pixel_scale:g}") is not the WCS\'s ({from_wcs:.4g}").')
        pixel_scale = from_wcs
    elif pixel_scale is None:
        raise InputError("The images have no WCS: give the pixel scale (arcsec per pixel).")

    def planes(specs: Mapping[str, str] | None, what: str) -> dict[str, np.ndarray]:
        return {band: read_fits_plane(spec)[0] for band, spec in mapped(specs, what).items()}

    scene, report = scene_from_arrays(
        {band: data for band, (data, _, _) in read.items()},
        pixel_scale=pixel_scale,
        variance=planes(variance, "variance"),
        inverse_variance=planes(inverse_variance, "inverse-variance"),
        psf=planes(psf, "PSF"),
        mask=planes(mask, "mask"),
        wcs_cards=dict(reference.to_header()) if reference is not None else None,
        **options,
    )
    report.sources = {band: what for band, (_, _, what) in read.items()}
    return scene, report


def scene_from_scarlet_npz(
    path: str | os.PathLike, *, pixel_scale: float, unit: str = "counts", zeropoint: float | None = 27.0
) -> tuple[Scene, ImportReport]:
    """A scene from a blend in scarlet's example ``.npz`` layout (``images``, ``filters``, ``psfs``,
    optionally ``variance``; e.g. its HSC COSMOS blends, in counts at zero point 27).

    The file's mask is not used: its bits are HSC pipeline planes the file does not name.

    Raises
    ------
    MissingInputError
        If the file does not exist.
    InputError
        If it lacks ``images``, ``filters`` or ``psfs``, or `scene_from_arrays` refuses it.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist.")
    with np.load(path) as data:
        missing = sorted({"images", "filters", "psfs"} - set(data.files))
        if missing:
            raise InputError(f"{path} has no {', '.join(missing)} array(s) (scarlet's example layout).")
        bands = [str(b) for b in data["filters"]]
        planes = {
            name: dict(zip(bands, data[key], strict=True))
            for name, key in (("images", "images"), ("psf", "psfs"))
        }
        variance = dict(zip(bands, data["variance"], strict=True)) if "variance" in data.files else None
    return scene_from_arrays(
        planes["images"],
        psf=planes["psf"],
        variance=variance,
        pixel_scale=pixel_scale,
        unit=unit,
        zeropoint=zeropoint,
    )
