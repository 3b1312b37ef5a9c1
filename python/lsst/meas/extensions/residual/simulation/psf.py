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
    _sampled_cache: dict = dataclasses.field(default_factory=dict, repr=False)
    _wing_profile: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def point_source(
        self, band_index: int, offset: tuple[float, float], pixel_scale: float, size: int
    ) -> np.ndarray:
        """Unit-flux (size, size) image of a point source offset by (dx, dy) pixels from the centre."""
        array = (
            self.profiles[band_index]
            .drawImage(nx=size, ny=size, scale=pixel_scale, offset=offset, dtype=np.float64)
            .array
        )
        return array / array.sum()

    def sampled_image(self, size: int, pixel_scale: float) -> np.ndarray:
        """(nbands, size, size) PSF sampled at pixel centres, each normalised to sum 1."""
        if size == self.sampled.shape[-1]:
            return self.sampled
        if size not in self._sampled_cache:
            images = [
                p.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel", dtype=np.float64).array
                for p in self.profiles
            ]
            self._sampled_cache[size] = np.array([im / im.sum() for im in images])
        return self._sampled_cache[size]

    def wing_half_size(
        self,
        flux: np.ndarray,
        noise_sigma: np.ndarray,
        pixel_scale: float,
        fraction: float = 0.05,
        step: int = 4,
        limit: int = 96,
    ) -> int:
        """Half-size of a stamp outside which a source of ``flux`` is fainter than ``fraction`` × noise.

        The PSF images are K×K, but a bright source's PSF wings stay above
        the noise well beyond K/2; cutting them there would leave a square
        edge around bright stars. The answer is at least K//2, rounded up to
        a multiple of ``step`` (so few distinct stamp sizes are drawn) and at
        most ``limit``.
        """
        half = self.image.shape[-1] // 2
        if self._wing_profile is None:
            radii = np.arange(limit + 1)
            self._wing_profile = np.array(
                [[p.xValue(r * pixel_scale, 0.0) * pixel_scale**2 for r in radii] for p in self.profiles]
            )
        # Kolmogorov and Moffat wings fall monotonically: the first radius
        # below the limit in every band is the answer.
        faint_enough = (
            np.asarray(flux)[:, None] * self._wing_profile < fraction * np.asarray(noise_sigma)[:, None]
        )
        needed = faint_enough.all(axis=0)
        radius = int(np.argmax(needed)) if needed.any() else limit
        return int(min(max(half, step * int(np.ceil(radius / step))), limit))


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
        point = profile.drawImage(
            nx=size, ny=size, scale=pixel_scale, method="no_pixel", dtype=np.float64
        ).array
        profiles.append(profile)
        images.append(image / image.sum())
        sampled.append(point / point.sum())
        fwhms.append(fwhm)
    return ScenePsf(profiles, np.array(images), np.array(sampled), np.array(fwhms), float(fwhm_r))
