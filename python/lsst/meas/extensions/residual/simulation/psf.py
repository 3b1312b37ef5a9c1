"""Per-band PSFs of a simulated coadd."""

from __future__ import annotations

__all__ = ["ScenePsf", "make_psfs"]

import dataclasses

import numpy as np

from .survey import EFFECTIVE_WAVELENGTH

# Atmospheric seeing scales as wavelength^-0.2 (Kolmogorov turbulence).
_SEEING_EXPONENT = -0.2
_MOFFAT_BETA = 3.5


@dataclasses.dataclass
class ScenePsf:
    """The PSF of each band of a scene.

    Attributes
    ----------
    profiles : `list` [`galsim.GSObject`]
        One galsim profile per band (without the pixel response).
    image : `numpy.ndarray`
        (nbands, K, K) pixel-integrated PSF images normalised to sum 1: the
        scene's ``PSF`` extension, and the image of a point source.
    sampled : `numpy.ndarray`
        (nbands, K, K) PSF sampled at pixel centres (no pixel response),
        normalised to sum 1; convolving a pixel-integrated galaxy image with
        it gives the observed galaxy without counting the pixel twice.
    fwhm : `numpy.ndarray`
        (nbands,) FWHM in arcsec.
    fwhm_r : `float`
        FWHM (arcsec) at the r-band wavelength, which sets the others.
    """

    profiles: list
    image: np.ndarray
    sampled: np.ndarray
    fwhm: np.ndarray
    fwhm_r: float

    def point_source(self, band_index: int, offset: tuple[float, float], pixel_scale: float) -> np.ndarray:
        """Unit-flux (K, K) image of a point source offset by (dx, dy) pixels from the centre."""
        size = self.image.shape[-1]
        array = (
            self.profiles[band_index]
            .drawImage(nx=size, ny=size, scale=pixel_scale, offset=offset, dtype=np.float64)
            .array
        )
        return array / array.sum()


def make_psfs(
    bands: tuple[str, ...],
    fwhm_r: float,
    size: int,
    pixel_scale: float,
    model: str = "kolmogorov",
    shear: np.ndarray | None = None,
) -> ScenePsf:
    """Make band-dependent PSFs.

    Parameters
    ----------
    bands : `tuple` [`str`]
        Bands.
    fwhm_r : `float`
        FWHM (arcsec) at the r-band effective wavelength; other bands scale
        as wavelength^-0.2.
    size : `int`
        Odd side of the PSF images, pixels.
    pixel_scale : `float`
        arcsec/pixel.
    model : `str`
        ``"kolmogorov"`` or ``"moffat"`` (β = 3.5).
    shear : `numpy.ndarray`, optional
        (nbands, 2) reduced shear (g1, g2) of each band's PSF.
    """
    import galsim

    if size % 2 == 0:
        raise ValueError(f"PSF size must be odd, not {size}.")
    profiles, images, sampled, fwhms = [], [], [], []
    for index, band in enumerate(bands):
        fwhm = fwhm_r * (EFFECTIVE_WAVELENGTH[band] / EFFECTIVE_WAVELENGTH["r"]) ** _SEEING_EXPONENT
        if model == "kolmogorov":
            profile = galsim.Kolmogorov(fwhm=fwhm)
        elif model == "moffat":
            profile = galsim.Moffat(beta=_MOFFAT_BETA, fwhm=fwhm)
        else:
            raise ValueError(f"Unknown PSF model {model!r}; choose 'kolmogorov' or 'moffat'.")
        if shear is not None:
            profile = profile.shear(g1=float(shear[index, 0]), g2=float(shear[index, 1]))
        image = profile.drawImage(nx=size, ny=size, scale=pixel_scale, dtype=np.float64).array
        point = profile.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel", dtype=np.float64).array
        profiles.append(profile)
        images.append(image / image.sum())
        sampled.append(point / point.sum())
        fwhms.append(fwhm)
    return ScenePsf(profiles, np.array(images), np.array(sampled), np.array(fwhms), float(fwhm_r))
