"""Per-band PSFs of a simulated coadd.

Three families: Kolmogorov (atmospheric turbulence), Moffat (any β), and
Kolmogorov convolved with the Airy pattern of Rubin's centrally obscured
8.36 m pupil at each band's effective wavelength (the diffraction core is
unresolved at 0.2″, but its rings add a power-law wing). The seeing FWHM sets
the atmospheric part; it scales as wavelength^-0.2 across bands.
"""

from __future__ import annotations

__all__ = ["PSF_MODELS", "MOFFAT_BETA", "ScenePsf", "draw_scene_psf", "make_psfs"]

import dataclasses

import numpy as np

from .survey import EFFECTIVE_WAVELENGTH, RUBIN_DIAMETER, RUBIN_OBSCURATION

#: PSF families `make_psfs` draws.
PSF_MODELS = ("kolmogorov", "moffat", "kolmogorov_airy")
#: Moffat β of the default scenes.
MOFFAT_BETA = 3.5

# Atmospheric seeing scales as wavelength^-0.2 (Kolmogorov turbulence).
_SEEING_EXPONENT = -0.2


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
        (nbands,) FWHM in arcsec (of the atmospheric part for
        ``"kolmogorov_airy"``).
    fwhm_r : `float`
        FWHM (arcsec) at the r-band wavelength, which sets the others.
    model : `str`
        PSF family, one of `PSF_MODELS`.
    moffat_beta : `float` or `None`
        Moffat β (None for the other families).
    reported : `ScenePsf` or `None`
        The PSF a scene reports (its ``PSF`` extension, what a measurement
        is told) where it differs from this one, the PSF that drew the
        sources: a PSF-model error. None: the same.
    fwhm_error : `numpy.ndarray` or `None`
        (nbands,) fractional size error of ``reported``: its profile is this
        one dilated by 1 + ``fwhm_error``.
    shear_error : `numpy.ndarray` or `None`
        (nbands, 2) error (g1, g2) of ``reported``'s reduced shear.
    """

    profiles: list
    image: np.ndarray
    sampled: np.ndarray
    fwhm: np.ndarray
    fwhm_r: float
    model: str = "kolmogorov"
    moffat_beta: float | None = None
    reported: ScenePsf | None = None
    fwhm_error: np.ndarray | None = None
    shear_error: np.ndarray | None = None
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
                [_radial_profile(p, radii, pixel_scale) * pixel_scale**2 for p in self.profiles]
            )
        # Kolmogorov, Moffat and Kolmogorov⊗Airy wings fall monotonically
        # (the Airy rings are far finer than a pixel): the first radius
        # below the limit in every band is the answer.
        faint_enough = (
            np.asarray(flux)[:, None] * self._wing_profile < fraction * np.asarray(noise_sigma)[:, None]
        )
        needed = faint_enough.all(axis=0)
        radius = int(np.argmax(needed)) if needed.any() else limit
        return int(min(max(half, step * int(np.ceil(radius / step))), limit))


def _radial_profile(profile, radii: np.ndarray, pixel_scale: float) -> np.ndarray:
    """Surface brightness of ``profile`` at ``radii`` pixels along +x (per arcsec²)."""
    if profile.is_analytic_x:
        return np.array([profile.xValue(r * pixel_scale, 0.0) for r in radii])
    # A convolution has no closed form: sample it (galsim's FFT) and read the row through the centre.
    half = int(radii.max())
    image = profile.drawImage(
        nx=2 * half + 1, ny=2 * half + 1, scale=pixel_scale, method="no_pixel", dtype=np.float64
    ).array
    return image[half, half + radii] / pixel_scale**2


def _profile(model: str, band: str, fwhm: float, moffat_beta: float):
    """The unsheared galsim profile of ``model`` in ``band`` with atmospheric FWHM ``fwhm`` (arcsec)."""
    import galsim

    if model == "kolmogorov":
        return galsim.Kolmogorov(fwhm=fwhm)
    if model == "moffat":
        return galsim.Moffat(beta=moffat_beta, fwhm=fwhm)
    if model == "kolmogorov_airy":
        airy = galsim.Airy(
            lam=EFFECTIVE_WAVELENGTH[band],
            diam=RUBIN_DIAMETER,
            obscuration=RUBIN_OBSCURATION,
            scale_unit=galsim.arcsec,
        )
        return galsim.Convolve(galsim.Kolmogorov(fwhm=fwhm), airy)
    raise ValueError(f"Unknown PSF model {model!r}; choose one of {', '.join(map(repr, PSF_MODELS))}.")


def make_psfs(
    bands: tuple[str, ...],
    fwhm_r: float,
    size: int,
    pixel_scale: float,
    model: str = "kolmogorov",
    shear: np.ndarray | None = None,
    moffat_beta: float = MOFFAT_BETA,
    dilation: np.ndarray | None = None,
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
        One of `PSF_MODELS`: ``"kolmogorov"``, ``"moffat"`` or
        ``"kolmogorov_airy"``.
    shear : `numpy.ndarray`, optional
        (nbands, 2) reduced shear (g1, g2) of each band's PSF.
    moffat_beta : `float`, optional
        β of the ``"moffat"`` profile.
    dilation : `numpy.ndarray`, optional
        (nbands,) factor by which each band's profile is dilated (its FWHM
        scaled), before the shear; a PSF-model error.
    """
    if size % 2 == 0:
        raise ValueError(f"PSF size must be odd, not {size}.")
    profiles, images, sampled, fwhms = [], [], [], []
    for index, band in enumerate(bands):
        fwhm = fwhm_r * (EFFECTIVE_WAVELENGTH[band] / EFFECTIVE_WAVELENGTH["r"]) ** _SEEING_EXPONENT
        profile = _profile(model, band, fwhm, moffat_beta)
        if dilation is not None:
            profile = profile.dilate(float(dilation[index]))
            fwhm *= float(dilation[index])
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
    return ScenePsf(
        profiles,
        np.array(images),
        np.array(sampled),
        np.array(fwhms),
        float(fwhm_r),
        model=model,
        moffat_beta=float(moffat_beta) if model == "moffat" else None,
    )


def draw_scene_psf(
    rng: np.random.Generator,
    bands: tuple[str, ...],
    fwhm_r: float,
    size: int,
    pixel_scale: float,
    shear: np.ndarray | None = None,
    models: tuple[str, ...] = ("kolmogorov",),
    moffat_beta_range: tuple[float, float] = (MOFFAT_BETA, MOFFAT_BETA),
    model_error: float = 0.0,
) -> ScenePsf:
    """Draw a scene's PSF family, Moffat β and PSF-model error, and make its PSFs.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random numbers for these draws only (the seeing and shear are given).
    bands, fwhm_r, size, pixel_scale, shear
        As `make_psfs`.
    models : `tuple` [`str`]
        Families to draw from, uniformly (one: always it).
    moffat_beta_range : `tuple` [`float`, `float`]
        Moffat β is drawn uniformly in this range (equal ends: that β).
    model_error : `float`
        Scatter of the PSF-model error: each band's reported PSF is the true
        one dilated by 1 + e and its shear offset by (δg1, δg2), with e, δg1,
        δg2 ~ N(0, ``model_error``). 0: the reported PSF is the true one.

    Returns
    -------
    psf : `ScenePsf`
        The PSF that draws the sources, with ``reported``, ``fwhm_error`` and
        ``shear_error`` set when ``model_error`` > 0.
    """
    if not models:
        raise ValueError("No PSF model to draw from.")
    if model_error < 0.0:
        raise ValueError(f"PSF-model error scatter must be >= 0, not {model_error}.")
    model = models[0] if len(models) == 1 else models[int(rng.integers(len(models)))]
    moffat_beta = float(rng.uniform(*moffat_beta_range))
    psf = make_psfs(bands, fwhm_r, size, pixel_scale, model, shear, moffat_beta)
    if model_error > 0.0:
        fwhm_error = rng.normal(0.0, model_error, size=len(bands))
        shear_error = rng.normal(0.0, model_error, size=(len(bands), 2))
        reported_shear = shear_error if shear is None else np.asarray(shear) + shear_error
        psf.reported = make_psfs(
            bands, fwhm_r, size, pixel_scale, model, reported_shear, moffat_beta, dilation=1.0 + fwhm_error
        )
        psf.fwhm_error, psf.shear_error = fwhm_error, shear_error
    return psf
