"""Draw the noiseless, PSF-convolved image of each source.

Galaxies: galsim draws the bulge and disk of each galaxy once, pixel-integrated
and unconvolved; each band's image is the SED-weighted sum of the two,
convolved (FFT) with that band's PSF sampled at pixel centres. Stars are
galsim's pixel-integrated PSF at the star's sub-pixel position. PSF wings are
drawn out to where they fall below 5% of the background noise (beyond the
scene's K×K PSF images for bright sources). Every stamp is normalised so that
its sum is exactly the source's flux.

Star-forming knots (``knot_count`` > 0) are the points of a `galsim.RandomKnots`
on the disk's exponential profile, sheared as the disk; each is pixel-integrated
(all its light in the pixel it falls in) before the PSF convolution, as for a
point source, and the knots carry the galaxy's ``knot_flux``.
"""

from __future__ import annotations

__all__ = ["render_sources", "RenderedSource"]

import dataclasses
import functools

import numpy as np
from scipy.signal import fftconvolve

from .psf import ScenePsf

# Radii (in half-light radii) that hold the profiles: the bulge is a de
# Vaucouleurs profile truncated there; the exponential disk holds >99.8% of
# its flux within it.
_BULGE_TRUNCATION = 4.5
_DISK_EXTENT = 5.0
# de Vaucouleurs bulges are cuspy: sample them this many times per pixel side.
_BULGE_SUPERSAMPLING = 4
_MAX_HALF_SIZE = 160
# Disks smaller than this (arcsec; the standard size relation's floor, so standard scenes are
# drawn as ever) are sampled in real space, this many times per pixel side.
_SMALL_DISK_HLR = 0.08
_SMALL_DISK_SUPERSAMPLING = 16


@dataclasses.dataclass
class RenderedSource:
    """Noiseless image of one source and its intrinsic shape measurements."""

    stamp: np.ndarray
    """(nbands, h, w) PSF-convolved image; sums to the source's flux per band."""
    y0: int
    x0: int
    hlr: float
    """Half-light radius (arcsec) of the unconvolved reference-band profile."""
    e1: float
    e2: float


@functools.cache
def _unit_bulge():
    import galsim

    return galsim.Sersic(n=4, half_light_radius=1.0, trunc=_BULGE_TRUNCATION)


def _draw_bulge(hlr, g1, g2, half, offset, pixel_scale):
    profile = _unit_bulge().dilate(hlr).shear(g1=g1, g2=g2)
    image = _supersampled(profile, 2 * half + 1, _BULGE_SUPERSAMPLING, offset, pixel_scale)
    return image / image.sum()


def _supersampled(profile, size: int, ss: int, offset, pixel_scale: float) -> np.ndarray:
    """(size, size) pixel integral of a galsim profile, sampled ``ss``² times per pixel in real space."""
    image = profile.drawImage(
        nx=size * ss,
        ny=size * ss,
        scale=pixel_scale / ss,
        offset=(offset[0] * ss, offset[1] * ss),
        method="no_pixel",
        dtype=np.float64,
    ).array
    return image.reshape(size, ss, size, ss).sum(axis=(1, 3))


def _draw_disk(hlr, g1, g2, half, offset, pixel_scale):
    import galsim

    size = 2 * half + 1
    disk = galsim.Exponential(half_light_radius=hlr).shear(g1=g1, g2=g2)
    if hlr < _SMALL_DISK_HLR:
        # galsim's FFT of a disk this small needs a huge k grid (~0.1 s a disk); sampling it
        # 16x per pixel side in real space is as good (0.1-0.2% of the peak) and ~1000x faster.
        image = _supersampled(disk, size, _SMALL_DISK_SUPERSAMPLING, offset, pixel_scale)
    else:
        image = disk.drawImage(nx=size, ny=size, scale=pixel_scale, offset=offset, dtype=np.float64).array
    return image / image.sum()


def _draw_knots(count, seed, disk_hlr, g1, g2, half, offset, pixel_scale):
    """Pixel-integrated image of ``count`` unresolved knots on an exponential disk, summing to 1.

    Returns None when no knot falls inside the stamp.
    """
    import galsim

    knots = galsim.RandomKnots(
        int(count), profile=galsim.Exponential(half_light_radius=disk_hlr), rng=galsim.BaseDeviate(int(seed))
    )
    # Knot positions (arcsec, x and y) sheared with the disk, in stamp pixels about the galaxy's centre.
    points = np.asarray(knots.points, dtype=np.float64) @ galsim.Shear(g1=g1, g2=g2).getMatrix().T
    column = np.floor(half + offset[0] + points[:, 0] / pixel_scale + 0.5).astype(int)
    row = np.floor(half + offset[1] + points[:, 1] / pixel_scale + 0.5).astype(int)
    size = 2 * half + 1
    inside = (column >= 0) & (column < size) & (row >= 0) & (row < size)
    if not np.any(inside):
        return None
    image = np.zeros((size, size))
    np.add.at(image, (row[inside], column[inside]), 1.0)
    return image / image.sum()


def _shape_measurements(image: np.ndarray, pixel_scale: float) -> tuple[float, float, float]:
    """Half-light radius (circular, about the centroid) and ellipticity (a-b)/(a+b)."""
    total = image.sum()
    y, x = np.indices(image.shape, dtype=np.float64)
    yc, xc = (image * y).sum() / total, (image * x).sum() / total
    dy, dx = y - yc, x - xc
    ixx, iyy, ixy = (
        (image * dx * dx).sum() / total,
        (image * dy * dy).sum() / total,
        (image * dx * dy).sum() / total,
    )
    denom = ixx + iyy + 2.0 * np.sqrt(max(ixx * iyy - ixy * ixy, 0.0))
    e1, e2 = ((ixx - iyy) / denom, 2.0 * ixy / denom) if denom > 0 else (0.0, 0.0)
    radius = np.hypot(dx, dy).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order])
    hlr_pixels = radius[order][np.searchsorted(cumulative, 0.5 * total)]
    return float(hlr_pixels * pixel_scale), float(e1), float(e2)


def _split(position: float) -> tuple[int, float]:
    centre = int(np.floor(position + 0.5))
    return centre, position - centre


def render_sources(
    table, psf: ScenePsf, pixel_scale: float, reference_band: int, noise_sigma: np.ndarray
) -> list[RenderedSource]:
    """Draw every source of a population table (see `draw_population`).

    Parameters
    ----------
    table : `astropy.table.Table`
        Sources.
    psf : `ScenePsf`
        The scene's PSFs.
    pixel_scale : `float`
        arcsec/pixel.
    reference_band : `int`
        Index of the band in which ``hlr`` and ellipticity are measured.
    noise_sigma : `numpy.ndarray`
        (nbands,) background noise per pixel: a source's PSF wings are drawn
        out to where they fall well below it.
    """
    rendered = []
    for row in table:
        xc, dx = _split(float(row["x"]))
        yc, dy = _split(float(row["y"]))
        flux = np.asarray(row["flux"], dtype=np.float64)
        psf_half = psf.wing_half_size(flux, noise_sigma, pixel_scale)
        if row["class"] == "star":
            size = 2 * psf_half + 1
            stamp = (
                np.stack([psf.point_source(b, (dx, dy), pixel_scale, size) for b in range(len(flux))])
                * flux[:, None, None]
            )
            rendered.append(RenderedSource(stamp, yc - psf_half, xc - psf_half, 0.0, 0.0, 0.0))
            continue
        disk_hlr, bulge_hlr = float(row["disk_hlr"]), float(row["bulge_hlr"])
        stretch_disk = np.sqrt(
            (1 + np.hypot(row["disk_g1"], row["disk_g2"])) / (1 - np.hypot(row["disk_g1"], row["disk_g2"]))
        )
        stretch_bulge = np.sqrt(
            (1 + np.hypot(row["bulge_g1"], row["bulge_g2"]))
            / (1 - np.hypot(row["bulge_g1"], row["bulge_g2"]))
        )
        extent = max(_DISK_EXTENT * disk_hlr * stretch_disk, _BULGE_TRUNCATION * bulge_hlr * stretch_bulge)
        half = min(int(np.ceil(extent / pixel_scale)) + 1, _MAX_HALF_SIZE)
        disk = _draw_disk(disk_hlr, float(row["disk_g1"]), float(row["disk_g2"]), half, (dx, dy), pixel_scale)
        bulge = _draw_bulge(
            bulge_hlr, float(row["bulge_g1"]), float(row["bulge_g2"]), half, (dx, dy), pixel_scale
        )
        bulge_flux = np.asarray(row["bulge_flux"], dtype=np.float64)
        knots = None
        if "knot_count" in table.colnames and row["knot_count"] > 0:
            knots = _draw_knots(
                row["knot_count"],
                row["knot_seed"],
                disk_hlr,
                float(row["disk_g1"]),
                float(row["disk_g2"]),
                half,
                (dx, dy),
                pixel_scale,
            )
        if knots is None:
            intrinsic = bulge_flux[:, None, None] * bulge + (flux - bulge_flux)[:, None, None] * disk
        else:
            knot_flux = np.asarray(row["knot_flux"], dtype=np.float64)
            intrinsic = (
                bulge_flux[:, None, None] * bulge
                + (flux - bulge_flux - knot_flux)[:, None, None] * disk
                + knot_flux[:, None, None] * knots
            )
        kernel = psf.sampled_image(2 * psf_half + 1, pixel_scale)
        stamp = fftconvolve(intrinsic, kernel, mode="full", axes=(1, 2))
        # FFT round-off leaves tiny negative values where the profile is zero.
        stamp = np.clip(stamp, 0.0, None)
        stamp *= (flux / stamp.sum(axis=(1, 2)))[:, None, None]
        hlr, e1, e2 = _shape_measurements(intrinsic[reference_band], pixel_scale)
        offset = half + psf_half
        rendered.append(RenderedSource(stamp, yc - offset, xc - offset, hlr, e1, e2))
    return rendered
