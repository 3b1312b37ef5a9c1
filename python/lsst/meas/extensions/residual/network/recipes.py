"""Channel recipes: which network input channels are made from a scene, and how.

A recipe is a ``+``-joined list of channel kinds, each giving one channel per
band, in this order of bands:

``residual``
    (image − model) / √variance per pixel: unit-noise residual. Values beyond
    ``residual_clip`` are compressed with ``c·asinh(x/c)`` so that bright-star
    residuals do not dominate the input scale.
``model``
    asinh(model / (s·σ_b)): the first-pass (Scarlet) model, asinh-stretched
    with softening ``s`` times the band's background noise σ_b.
``image``
    asinh(image / (s·σ_b)): the observed image, stretched the same way.
``bad``
    1 at the band's bad pixels (masked, non-finite, non-positive variance),
    0 elsewhere: where the other channels are 0 for want of data. A band
    the data lack is bad everywhere, which is how a model trained with band
    dropout (`ModelMetadata.band_subsets`) reads which bands it was given.

ResidualDetectron uses ``residual+model`` (12 channels for ugrizy); the Burke
et al. (2019)-style direct detector uses ``image``.

All channels are pixelwise functions of the inputs and of one noise level per
band (`band_noise`, measured once on the whole image), so channels cut from a
tile equal the tile cut from the channels: tiled inference sees exactly what
training saw. Bad pixels (masked, non-finite, or non-positive variance) are
0 in every channel but ``bad``.
"""

from __future__ import annotations

__all__ = [
    "CHANNEL_KINDS",
    "ChannelNormalisation",
    "parse_recipe",
    "channel_names",
    "band_noise",
    "make_channels",
    "recipe_needs_model",
]

import numpy as np
import pydantic

from ..configs import StrictModel

#: The channel kinds a recipe can combine, in the order they are stacked.
CHANNEL_KINDS = ("residual", "model", "image", "bad")


class ChannelNormalisation(StrictModel):
    """How raw pixel values become network inputs (stored in a model package)."""

    asinh_softening: float = pydantic.Field(default=1.0, gt=0.0)
    """Softening of the asinh stretch of ``model``/``image``, in units of the band's noise σ."""
    residual_clip: float = pydantic.Field(default=10.0, gt=0.0)
    """Residual S/N beyond which values are asinh-compressed."""


def parse_recipe(recipe: str) -> tuple[str, ...]:
    """Split and check a recipe name such as ``"residual+model"``.

    Returns
    -------
    kinds : `tuple` [`str`]
        Channel kinds in canonical order (``residual``, ``model``, ``image``, ``bad``).

    Raises
    ------
    ValueError
        If the recipe is empty, repeats a kind or names an unknown one.
    """
    kinds = [k.strip() for k in str(recipe).split("+") if k.strip()]
    if not kinds:
        raise ValueError(f"Empty channel recipe {recipe!r}; use e.g. 'residual+model' or 'image'.")
    unknown = [k for k in kinds if k not in CHANNEL_KINDS]
    if unknown:
        raise ValueError(
            f"Unknown channel kind(s) {unknown} in recipe {recipe!r}; known: {', '.join(CHANNEL_KINDS)}."
        )
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"Channel recipe {recipe!r} repeats a kind.")
    return tuple(k for k in CHANNEL_KINDS if k in kinds)


def recipe_needs_model(recipe: str) -> bool:
    """Whether the recipe needs the first-pass model (``residual`` or ``model`` channels)."""
    return any(k in ("residual", "model") for k in parse_recipe(recipe))


def channel_names(recipe: str, bands: tuple[str, ...]) -> list[str]:
    """Names of the channels, e.g. ``["residual_u", ..., "model_y"]``."""
    return [f"{kind}_{band}" for kind in parse_recipe(recipe) for band in bands]


def band_noise(variance: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
    """(nbands,) typical background noise σ per band: median √variance over good pixels.

    Raises
    ------
    ValueError
        If a band has no usable pixel.
    """
    variance = np.asarray(variance)
    if good is None:
        good = np.isfinite(variance) & (variance > 0)
    sigma = np.empty(variance.shape[0], dtype=np.float64)
    for band in range(variance.shape[0]):
        values = variance[band][good[band]]
        if values.size == 0:
            raise ValueError(f"Band plane {band} has no pixel with finite positive variance.")
        sigma[band] = np.sqrt(np.median(values))
    return sigma


def make_channels(
    recipe: str,
    image: np.ndarray,
    variance: np.ndarray,
    model: np.ndarray | None = None,
    good: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    normalisation: ChannelNormalisation | None = None,
) -> np.ndarray:
    """Make the network input channels of (a cut-out of) a scene.

    Parameters
    ----------
    recipe : `str`
        Channel recipe (see module docstring).
    image, variance : `numpy.ndarray`
        (nbands, H, W) image and its variance.
    model : `numpy.ndarray`, optional
        (nbands, H, W) first-pass model; required by ``residual`` and ``model``.
    good : `numpy.ndarray`, optional
        (nbands, H, W) boolean usable pixels (default: finite image and
        variance, positive variance).
    noise : `numpy.ndarray`, optional
        (nbands,) background σ per band (default `band_noise` of ``variance``);
        pass the whole image's value when making channels tile by tile.
    normalisation : `ChannelNormalisation`, optional
        Stretch parameters.

    Returns
    -------
    channels : `numpy.ndarray`
        (nkinds·nbands, H, W) float32, finite everywhere.

    Raises
    ------
    ValueError
        If the model is missing but needed, shapes differ, or the model has
        non-finite values at usable pixels.
    """
    kinds = parse_recipe(recipe)
    norm = ChannelNormalisation() if normalisation is None else normalisation
    image = np.asarray(image, dtype=np.float32)
    variance = np.asarray(variance, dtype=np.float32)
    if image.ndim != 3 or variance.shape != image.shape:
        raise ValueError(
            f"image and variance must be (nbands, H, W) of one shape; got {image.shape}, {variance.shape}."
        )
    if good is None:
        with np.errstate(invalid="ignore"):
            good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    elif good.shape != image.shape:
        raise ValueError(f"good mask shape {good.shape} differs from image shape {image.shape}.")
    if any(k in ("residual", "model") for k in kinds):
        if model is None:
            raise ValueError(f"Channel recipe {recipe!r} needs the first-pass model, but none was given.")
        model = np.asarray(model, dtype=np.float32)
        if model.shape != image.shape:
            raise ValueError(f"model shape {model.shape} differs from image shape {image.shape}.")
        bad_model = good & ~np.isfinite(model)
        if np.any(bad_model):
            raise ValueError(f"The model has {int(bad_model.sum())} non-finite values at usable pixels.")
    if noise is None:
        noise = band_noise(variance, good)
    noise = np.asarray(noise, dtype=np.float32)
    if noise.shape != (image.shape[0],) or not np.all(np.isfinite(noise) & (noise > 0)):
        raise ValueError(f"noise must be {image.shape[0]} positive finite values; got {noise}.")
    scale = (norm.asinh_softening * noise)[:, None, None]

    planes = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for kind in kinds:
            if kind == "residual":
                chi = (image - model) / np.sqrt(np.where(good, variance, 1.0))
                clip = np.float32(norm.residual_clip)
                values = clip * np.arcsinh(chi / clip)
            elif kind == "model":
                values = np.arcsinh(model / scale)
            elif kind == "bad":
                planes.append(np.logical_not(good).astype(np.float32))
                continue
            else:
                values = np.arcsinh(image / scale)
            planes.append(np.where(good, values, np.float32(0)).astype(np.float32))
    return np.concatenate(planes, axis=0)
