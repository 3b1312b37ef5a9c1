"""Observed-PSF model images from scarlet model data alone.

A blend's model-frame cube is the sum of its components; convolving it with
each band's difference kernel (observed PSF ÷ model PSF, `difference_kernels`)
gives the model as the telescope would see it. The rendered cube covers the
blend's box grown by the kernel radius, so the PSF wings are not cut off.
"""

from __future__ import annotations

__all__ = ["render_blend", "render_model_data", "blend_psfs"]

import logging

import numpy as np

from ..geometry import Box
from .convolution import BoxConvolver, KernelTransforms
from .model_data import (
    BlendData,
    HierarchicalBlendData,
    ScarletModelData,
    ScarletModelDataError,
)
from .psf import difference_kernels

_log = logging.getLogger(__name__)


def _children(blend: BlendData | HierarchicalBlendData) -> list[BlendData]:
    return list(blend.children.values()) if isinstance(blend, HierarchicalBlendData) else [blend]


def blend_psfs(
    blend: BlendData, model_data: ScarletModelData | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Model PSF, observed PSFs and bands of a blend (its own metadata first, then the model data's)."""
    sources = [blend.metadata or {}, (model_data.metadata or {}) if model_data is not None else {}]
    found = {}
    for key in ("model_psf", "psf", "bands"):
        for meta in sources:
            if key in meta and meta[key] is not None:
                found[key] = meta[key]
                break
    missing = [k for k in ("model_psf", "psf") if k not in found]
    if missing:
        raise ScarletModelDataError(
            f"No {' or '.join(missing)} in the blend or model metadata: cannot render."
        )
    bands = tuple(found["bands"]) if "bands" in found else None
    return np.asarray(found["model_psf"]), np.asarray(found["psf"]), bands


def _model_frame(blend: BlendData, nbands: int) -> np.ndarray:
    """(nbands, h, w) sum of the components of ``blend`` in its box."""
    y0, x0 = blend.origin
    h, w = blend.shape
    cube = np.zeros((nbands, h, w))
    for source_id, source in blend.sources.items():
        for component in source.components:
            model = component.model()
            if model.shape[0] != nbands:
                raise ScarletModelDataError(
                    f"Source {source_id} has a {model.shape[0]}-band component "
                    f"but the PSF has {nbands} bands."
                )
            _add_clipped(cube, model, component.origin, (y0, x0))
    return cube


def render_blend(
    blend: BlendData | HierarchicalBlendData,
    model_data: ScarletModelData | None = None,
    *,
    model_psf: np.ndarray | None = None,
    psf: np.ndarray | None = None,
    convolve: bool = True,
    clip_negative: bool = True,
    crop: bool = False,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Render one blend.

    Parameters
    ----------
    blend : `BlendData` or `HierarchicalBlendData`
        The blend.
    model_data : `ScarletModelData`, optional
        Supplies the PSFs when the blend's own metadata does not.
    model_psf, psf : `numpy.ndarray`, optional
        Override the model PSF (k, k) and observed PSFs (bands, K, K).
    convolve : `bool`
        If False, return the model-frame cube (model PSF) in the blend box.
    clip_negative : `bool`
        Set negative pixels of the convolved model to zero. A positive model
        seen through a physical PSF is non-negative; negative pixels come
        from the ringing of the difference kernel (observed ÷ model PSF
        amplifies high frequencies) and from PSF models with slightly
        negative wings. LSST clips them the same way before redistributing
        flux.
    crop : `bool`
        Crop the convolved model to the blend box, as LSST's
        ``Blend.get_model(convolve=True)`` does; by default the box is grown
        by the kernel radius so the PSF wings are kept.

    Returns
    -------
    cube : `numpy.ndarray`
        (bands, h, w) float64 image, in the band order of the PSFs.
    origin : `tuple` [`int`, `int`]
        (y0, x0) of ``cube[:, 0, 0]`` in the patch.
    """
    return _render_blend(
        blend,
        model_data,
        model_psf=model_psf,
        psf=psf,
        convolve=convolve,
        clip_negative=clip_negative,
        crop=crop,
        shared={},
    )


def _shared_transforms(kernels: np.ndarray, shared: dict[int, KernelTransforms]) -> KernelTransforms:
    """The transforms of ``kernels`` that the convolvers of one render share, by transform shape.

    ``shared`` holds them by the kernels' identity: `difference_kernels` returns the same array
    for the same PSFs, so every blend of a patch (the model data's PSFs) finds the same entry.
    """
    transforms = shared.get(id(kernels))
    if transforms is None:
        transforms = KernelTransforms(kernels)  # holds ``kernels``: its id is not reused meanwhile
        if len(shared) < 8:  # blends with PSFs of their own: a few sets kept, the rest made afresh
            shared[id(kernels)] = transforms
    return transforms


def _render_blend(
    blend, model_data, *, model_psf, psf, convolve, clip_negative, crop, shared: dict[int, KernelTransforms]
):
    """`render_blend`, its convolvers sharing kernel transforms through ``shared`` (`_shared_transforms`)."""
    children = _children(blend)
    if not children:
        raise ScarletModelDataError("Blend has no child blends to render.")
    parts = []
    for child in children:
        child_model_psf, child_psf, _ = blend_psfs(child, model_data)
        child_model_psf = child_model_psf if model_psf is None else model_psf
        child_psf = child_psf if psf is None else psf
        if child_psf.ndim != 3:
            raise ScarletModelDataError(f"Observed PSFs must be (bands, K, K), got shape {child_psf.shape}.")
        cube = _model_frame(child, child_psf.shape[0])
        origin = tuple(child.origin)
        if convolve:
            kernels = difference_kernels(child_psf, child_model_psf)
            convolver = BoxConvolver(kernels, cube.shape[1:], transforms=_shared_transforms(kernels, shared))
            if crop:
                cube = convolver.convolve(cube)
            else:
                cube = convolver.convolve_full(cube)
                origin = (origin[0] - kernels.shape[1] // 2, origin[1] - kernels.shape[2] // 2)
            if clip_negative:
                np.clip(cube, 0.0, None, out=cube)
        parts.append((cube, origin))
    if len(parts) == 1:
        return parts[0]
    y0 = min(o[0] for _, o in parts)
    x0 = min(o[1] for _, o in parts)
    y1 = max(o[0] + c.shape[1] for c, o in parts)
    x1 = max(o[1] + c.shape[2] for c, o in parts)
    total = np.zeros((parts[0][0].shape[0], y1 - y0, x1 - x0))
    for cube, (cy, cx) in parts:
        total[:, cy - y0 : cy - y0 + cube.shape[1], cx - x0 : cx - x0 + cube.shape[2]] += cube
    return total, (y0, x0)


def _add_clipped(
    canvas: np.ndarray, cube: np.ndarray, origin: tuple[int, int], offset: tuple[int, int]
) -> None:
    """Add ``cube`` (at patch ``origin``) into ``canvas`` (whose [0, 0] is at patch ``offset``)."""
    cube_box = Box(int(origin[0]), int(origin[1]), *cube.shape[-2:])
    canvas_box = Box(int(offset[0]), int(offset[1]), *canvas.shape[-2:])
    inside = cube_box.intersect(canvas_box)
    if not inside.empty:
        canvas[(..., *inside.slices(canvas_box))] += cube[(..., *inside.slices(cube_box))]


def render_model_data(
    model_data: ScarletModelData,
    shape: tuple[int, int] | None = None,
    origin: tuple[int, int] = (0, 0),
    *,
    bands: tuple[str, ...] | None = None,
    blend_ids=None,
    image: np.ndarray | None = None,
    include_isolated: bool = True,
    dtype=np.float32,
) -> np.ndarray:
    """Render the observed-PSF model of a whole patch (or of some blends).

    Parameters
    ----------
    model_data : `ScarletModelData`
        The models.
    shape : `tuple` [`int`, `int`], optional
        (H, W) of the output; default: the metadata's ``patch_shape``, or
        else the union of the rendered blends (then ``origin`` is its corner).
    origin : `tuple` [`int`, `int`]
        Patch (y, x) of the output's [0, 0] pixel.
    bands : `tuple` [`str`], optional
        Output band order; default `ScarletModelData.bands`. Blends whose
        bands differ are reordered; a missing band is an error.
    blend_ids : iterable of `int`, optional
        Render only these blends (and isolated sources with these ids).
    image : `numpy.ndarray`, optional
        (bands, H, W) image on the output grid: the model of an isolated
        source is the image inside its span.
    include_isolated : `bool`
        If True (default), isolated sources are rendered, which needs ``image``.
    dtype : `numpy.dtype`
        Type of the output, in which the blends are summed. With a known
        ``shape`` the blends are rendered one at a time into the output, so a
        patch needs little more memory than the output itself.

    Returns
    -------
    model : `numpy.ndarray`
        (nbands, H, W) model image.

    Raises
    ------
    ScarletModelDataError
        Missing PSFs or bands, band/PSF mismatches, or isolated sources
        without an ``image``.
    """
    out_bands = tuple(bands) if bands is not None else model_data.bands
    wanted = None if blend_ids is None else {int(b) for b in blend_ids}
    shared: dict[int, KernelTransforms] = {}  # kernel transforms of this render, `_shared_transforms`

    def rendered_blends():
        """Each child blend's (cube, origin), rendered one at a time in ``out_bands``' order."""
        nonlocal out_bands
        for blend_id, blend in model_data.blends.items():
            if wanted is not None and blend_id not in wanted:
                continue
            for child in _children(blend):
                _, psf, child_bands = blend_psfs(child, model_data)
                cube, cube_origin = _render_blend(
                    child,
                    model_data,
                    model_psf=None,
                    psf=None,
                    convolve=True,
                    clip_negative=True,
                    crop=False,
                    shared=shared,
                )
                if out_bands is None:
                    out_bands = child_bands
                if (
                    child_bands is not None
                    and out_bands is not None
                    and tuple(child_bands) != tuple(out_bands)
                ):
                    missing = [b for b in out_bands if b not in child_bands]
                    if missing:
                        raise ScarletModelDataError(f"Blend {blend_id} has no band(s) {missing}.")
                    cube = cube[[list(child_bands).index(b) for b in out_bands]]
                elif out_bands is not None and cube.shape[0] != len(out_bands):
                    raise ScarletModelDataError(
                        f"Blend {blend_id} has {cube.shape[0]} PSF bands "
                        f"but the model has {len(out_bands)} bands."
                    )
                yield cube, cube_origin

    isolated = [
        (key, source)
        for key, source in model_data.isolated.items()
        if include_isolated and (wanted is None or key in wanted)
    ]
    if shape is None and model_data.metadata and "patch_shape" in model_data.metadata:
        shape = tuple(int(s) for s in model_data.metadata["patch_shape"])
    if shape is None:
        # The output's extent is the union of the rendered boxes, so they are all rendered first.
        rendered = list(rendered_blends())
        boxes = [(o, c.shape[1:]) for c, o in rendered] + [(s.origin, s.shape) for _, s in isolated]
        if not boxes:
            raise ScarletModelDataError("Nothing to render: no blends and no shape given.")
        y0, x0 = min(b[0][0] for b in boxes), min(b[0][1] for b in boxes)
        y1 = max(b[0][0] + b[1][0] for b in boxes)
        x1 = max(b[0][1] + b[1][1] for b in boxes)
        origin, shape = (y0, x0), (y1 - y0, x1 - x0)
    else:
        # Blend by blend into the one output cube: a full patch never holds more than one blend's cube.
        rendered = rendered_blends()
    canvas = None
    for cube, cube_origin in rendered:
        if canvas is None:
            canvas = np.zeros((cube.shape[0], *shape), dtype=dtype)
        _add_clipped(canvas, cube, cube_origin, origin)
    if canvas is None:
        nbands = len(out_bands) if out_bands is not None else 0
        if nbands == 0 and image is not None:
            nbands = image.shape[0]
        canvas = np.zeros((nbands, *shape), dtype=dtype)
    if isolated:
        if image is None:
            raise ScarletModelDataError(
                f"{len(isolated)} isolated source(s) are modelled by the image itself: pass `image` "
                "or include_isolated=False."
            )
        if image.shape != canvas.shape:
            raise ScarletModelDataError(f"image has shape {image.shape}; the rendering is {canvas.shape}.")
        canvas_box = Box(int(origin[0]), int(origin[1]), *shape)
        for _, source in isolated:
            source_box = Box(int(source.origin[0]), int(source.origin[1]), *source.shape)
            inside = source_box.intersect(canvas_box)
            if not inside.empty:
                span = source.span_array[inside.slices(source_box)] > 0
                pixels = (slice(None), *inside.slices(canvas_box))
                # Cleaned source by source: no patch-sized copy of the image.
                clean = np.nan_to_num(
                    np.asarray(image[pixels], dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0
                )
                canvas[pixels] += np.where(span, clean, 0.0)
    return canvas
