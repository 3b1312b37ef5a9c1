"""Source injection into a scene, as LSST's source_injection does it for exposures.

`inject_sources` adds simulated galaxies and stars to a (real) scene:

* the sources are the simulator's (`draw_population` at the scene's pixel
  scale and bands: bulge + disk galaxies, some knotty, on the standard
  size–magnitude relation, and stars, with their colours), chosen with a
  reference-band magnitude in ``mag_range``: by default from the scene's
  5σ point-source depth (`point_source_depth`, from its PSF and median
  variance) minus 3 mag to the depth;
* they are drawn with the scene's own PSF (`image_psf`: each band's PSF
  image as a galsim interpolated profile with the pixel response taken out,
  so a point source drawn on the pixel grid is that image again) by the
  simulator's renderer;
* placed uniformly on the pixels with data in every band (``margin`` px from
  the edges), or with ``near_sources`` each at 1-3 PSF FWHM (reference band)
  from a source the scene's first-pass detection finds, to test blends;
* their Poisson noise is added to the image and their variance to
  VARIANCE, at the scene's gain: given (e- per nJy), or measured from its
  variance plane where that holds the sources' Poisson term (the slope of
  variance against image over pixels brighter than 10σ); a scene whose
  variance is sky only (e.g. estimated by ``import`` without a gain) gets
  neither, and the header says so (``INJGAIN_<B> = 0``);
* the scene's TRUTH becomes the injected sources only (the project's truth
  schema); the header records the seed, count, magnitude range, reference
  band and each band's depth (``DEPTH_<B>``).
"""

from __future__ import annotations

__all__ = ["InjectionConfig", "inject_sources", "point_source_depth", "image_psf", "scene_gain"]

import dataclasses

import numpy as np
import pydantic
from astropy.table import vstack

from ..configs import StrictModel
from ..errors import InputError
from ..scene import Scene
from ..simulation.population import PopulationConfig, draw_population
from ..simulation.psf import ScenePsf
from ..simulation.render import render_sources
from ..simulation.simulate import population_truth
from ..simulation.survey import flux_to_mag
from .noise import NO_POISSON_TERM
from .psf_estimation import psf_fwhm

#: Draws of the simulator's population tried before giving up on filling the magnitude range.
_MAX_DRAWS = 50
#: Side (pixels) of each population draw the injected sources are chosen from.
_DRAW_SIDE = 1024


class InjectionConfig(StrictModel):
    """What `inject_sources` adds."""

    n_sources: int = pydantic.Field(default=50, ge=1)
    """Sources injected."""
    star_fraction: float = pydantic.Field(default=0.2, ge=0.0, le=1.0)
    """Share of them that are stars."""
    mag_range: tuple[float, float] | None = None
    """(bright, faint) AB magnitudes in the reference band; None: the scene's 5σ point-source depth
    minus 3 mag, to the depth."""
    near_sources: bool = False
    """Place each source at 1-3 PSF FWHM from a source of the scene (its first-pass detections)."""
    margin: int = pydantic.Field(default=8, ge=0)
    """Pixels kept free of injected centres along the edges."""
    gain: float | None = pydantic.Field(default=None, gt=0.0)
    """Electrons per nJy for the injected sources' Poisson noise; None: measured from the scene's
    variance (`scene_gain`), none where it holds no Poisson term."""

    @pydantic.field_validator("mag_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"must be (bright, faint) with bright < faint, not {value}")
        return value


def reference_band(bands: tuple[str, ...]) -> int:
    """The band magnitudes are given in: i, else r, else the middle one."""
    for band in ("i", "r"):
        if band in bands:
            return bands.index(band)
    return len(bands) // 2


def point_source_depth(scene: Scene) -> np.ndarray:
    """(nbands,) AB magnitude of a point source at 5σ in each band: PSF-weighted flux on the median
    variance of the pixels with data, σ = (Σ psf² / var)^-½."""
    depth = np.full(scene.nbands, np.nan)
    good = scene.good
    for band in range(scene.nbands):
        if not good[band].any():
            continue
        variance = float(np.median(scene.variance[band][good[band]]))
        sigma = np.sqrt(variance / np.sum(np.asarray(scene.psf[band], dtype=np.float64) ** 2))
        depth[band] = float(flux_to_mag(5.0 * sigma))
    return depth


def image_psf(scene: Scene) -> ScenePsf:
    """The scene's PSF images as a `ScenePsf` the simulator's renderer draws with."""
    import galsim

    scale = scene.pixel_scale
    profiles = [
        galsim.InterpolatedImage(galsim.Image(np.asarray(p, dtype=np.float64), scale=scale), depixelize=True)
        for p in scene.psf
    ]
    sampled = np.array(
        [
            p.drawImage(nx=scene.psf.shape[-1], ny=scene.psf.shape[-1], scale=scale, method="no_pixel").array
            for p in profiles
        ]
    )
    sampled /= sampled.sum(axis=(1, 2), keepdims=True)
    fwhm = np.array([psf_fwhm(p) * scale for p in scene.psf])
    reference = reference_band(scene.bands)
    return ScenePsf(
        profiles=profiles,
        image=np.asarray(scene.psf, dtype=np.float64),
        sampled=sampled,
        fwhm=fwhm,
        fwhm_r=float(fwhm[reference]),
        model="image",
    )


def scene_gain(scene: Scene, min_pixels: int = 100) -> np.ndarray:
    """(nbands,) electrons per nJy from the variance plane, 0 where it has no Poisson term.

    Over the pixels brighter than 10 times the sky σ, variance = sky + image / gain: the slope of a
    straight-line fit is 1 / gain. It counts only if positive at 3 standard errors, on at least
    ``min_pixels`` pixels. A band whose header says its variance holds no such term (an estimated
    sky variance, ``VARSRC_<B>``) has none: a sky σ measured box by box is higher around bright
    sources, a slope that is not a gain.
    """
    gains = np.zeros(scene.nbands)
    good = scene.good
    for band in range(scene.nbands):
        usable = good[band]
        if not usable.any() or NO_POISSON_TERM in str(
            scene.metadata.get(f"VARSRC_{scene.bands[band].upper()}", "")
        ):
            continue
        variance = scene.variance[band][usable].astype(np.float64)
        image = scene.image[band][usable].astype(np.float64)
        bright = image > 10.0 * np.sqrt(np.median(variance))
        if bright.sum() < min_pixels:
            continue
        x, y = image[bright], variance[bright]
        design = np.column_stack([np.ones_like(x), x])
        coefficients, residuals, *_ = np.linalg.lstsq(design, y, rcond=None)
        dof = max(len(x) - 2, 1)
        scatter = float(residuals[0]) / dof if len(residuals) else float(np.var(y - design @ coefficients))
        error = np.sqrt(scatter * np.linalg.inv(design.T @ design)[1, 1])
        if coefficients[1] > 3.0 * error and coefficients[1] > 0:
            gains[band] = 1.0 / coefficients[1]
    return gains


def _pool(rng: np.random.Generator, scene: Scene, reference: int, mag_range, config: InjectionConfig):
    """Enough of the simulator's stars and galaxies in the magnitude range."""
    n_stars = int(round(config.n_sources * config.star_fraction))
    wanted = {"star": n_stars, "galaxy": config.n_sources - n_stars}
    chosen = {name: [] for name in wanted}
    for _ in range(_MAX_DRAWS):
        table = draw_population(
            rng, (_DRAW_SIDE, _DRAW_SIDE), scene.bands, scene.pixel_scale, PopulationConfig()
        )
        mag = flux_to_mag(np.asarray(table["flux"], dtype=np.float64)[:, reference])
        inside = (mag >= mag_range[0]) & (mag < mag_range[1])
        for name in wanted:
            have = sum(len(t) for t in chosen[name])
            rows = np.flatnonzero(inside & (np.asarray(table["class"]) == name))[: wanted[name] - have]
            if len(rows):
                chosen[name].append(table[rows])
        if all(sum(len(t) for t in chosen[name]) >= wanted[name] for name in wanted):
            parts = [t for name in wanted for t in chosen[name]]
            return vstack(parts) if parts else table[:0]
    raise InputError(
        f"The simulator's population has too few sources in {mag_range[0]:.2f}-{mag_range[1]:.2f} mag "
        f"({scene.bands[reference]}) for {config.n_sources} injections; widen the range."
    )


def _positions(rng: np.random.Generator, scene: Scene, n: int, config: InjectionConfig, fwhm_pixels: float):
    """(n, 2) x, y of the injected centres."""
    from scipy import ndimage

    usable = scene.good.all(axis=0)
    if config.margin:
        usable = ndimage.binary_erosion(usable, iterations=config.margin, border_value=0)
    ys, xs = np.nonzero(usable)
    if len(xs) == 0:
        raise InputError("The scene has no pixel with data in every band away from its edges to inject at.")
    if not config.near_sources:
        pick = rng.integers(0, len(xs), size=n)
        return np.column_stack([xs[pick], ys[pick]]) + rng.uniform(-0.5, 0.5, size=(n, 2))
    from ..detection import detect_peaks

    anchors = detect_peaks(scene).xy
    if len(anchors) == 0:
        raise InputError("--near-sources: the scene's first-pass detection finds no source to inject near.")
    placed = []
    for _ in range(100 * n):
        anchor = anchors[rng.integers(len(anchors))]
        radius = rng.uniform(1.0, 3.0) * fwhm_pixels
        angle = rng.uniform(0.0, 2.0 * np.pi)
        x, y = anchor[0] + radius * np.cos(angle), anchor[1] + radius * np.sin(angle)
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if 0 <= iy < usable.shape[0] and 0 <= ix < usable.shape[1] and usable[iy, ix]:
            placed.append((x, y))
            if len(placed) == n:
                return np.array(placed)
    raise InputError(f"--near-sources: only {len(placed)} of {n} positions near sources have data.")


def inject_sources(scene: Scene, seed: int, config: InjectionConfig | None = None) -> Scene:
    """``scene`` with simulated sources added (module docstring); its truth is theirs.

    Raises
    ------
    InputError
        If the scene has no depth to set default magnitudes, no room to inject, or the
        magnitude range cannot be filled.
    """
    config = InjectionConfig() if config is None else config
    rng = np.random.default_rng(int(seed))
    reference = reference_band(scene.bands)
    depth = point_source_depth(scene)
    if config.mag_range is not None:
        mag_range = config.mag_range
    elif np.isfinite(depth[reference]):
        mag_range = (float(depth[reference]) - 3.0, float(depth[reference]))
    else:
        raise InputError(f"Band {scene.bands[reference]} has no data: give the magnitude range.")
    psf = image_psf(scene)
    table = _pool(rng, scene, reference, mag_range, config)
    table = table[rng.permutation(len(table))]
    xy = _positions(rng, scene, len(table), config, psf.fwhm[reference] / scene.pixel_scale)
    table["x"], table["y"] = xy[:, 0], xy[:, 1]
    sky = np.sqrt(
        [np.median(v[g]) if g.any() else 1.0 for v, g in zip(scene.variance, scene.good, strict=True)]
    )
    truth = population_truth(
        table, render_sources(table, psf, scene.pixel_scale, reference, sky), scene.nbands
    )
    added = truth.render(scene.shape).astype(np.float64)
    gain = np.full(scene.nbands, config.gain) if config.gain is not None else scene_gain(scene)
    image = scene.image.astype(np.float64) + added
    variance = scene.variance.astype(np.float64)
    for band in range(scene.nbands):
        if gain[band] > 0:
            poisson = np.maximum(added[band], 0.0) / gain[band]  # interpolated PSFs ring slightly
            image[band] += rng.normal(0.0, 1.0, size=scene.shape) * np.sqrt(poisson)
            variance[band] += poisson
    # Pixels without data stay without: nothing is injected where nothing was observed.
    image = np.where(scene.good, image, scene.image)
    metadata = dict(scene.metadata)
    metadata.update(
        {
            "INJECTED": True,
            "INJSEED": int(seed),
            "INJN": len(table),
            "INJMAG0": round(mag_range[0], 4),
            "INJMAG1": round(mag_range[1], 4),
            "INJREF": scene.bands[reference],
            "INJNEAR": bool(config.near_sources),
        }
    )
    for band, value, band_gain in zip(scene.bands, depth, gain, strict=True):
        metadata[f"DEPTH_{band.upper()}"] = round(float(value), 4)
        metadata[f"INJGAIN_{band.upper()}"] = float(band_gain)
    return dataclasses.replace(
        scene,
        image=image.astype(np.float32),
        variance=variance.astype(np.float32),
        truth=truth,
        metadata=metadata,
        artefacts=None,
    )
