"""The deblender: fit every footprint with its peaks, assemble the patch model.

`deblend` is the first pass: each footprint of the detections is one blend,
fitted on its own (`fit_blend`); single-peak footprints are fitted the same
way or, with ``isolated="footprint"``, handled LSST's cheap way. The result
holds the per-source catalog, the observed-PSF model of the patch rendered
from the scarlet model data, and the residual. A footprint beyond LSST's
limits (``max_footprint_area``, ``max_area_times_peaks``,
``max_number_of_peaks``) is cut into independent sub-blends within them
(`split_footprint`), or, where that cannot help or is turned off, not
fitted: its peaks keep their rows, flagged with the reason (`SKIP_REASONS`).

`deblend_with_new_peaks` is the second pass: from the first pass's peaks,
catalog and model data it adds new peaks to the first-pass footprints (or
gives them new ones), re-fits only the blends that changed and copies
everything else. With ``second_pass_start="warm"`` (the default) a re-fitted
blend's existing sources start from their first-pass components and only the
new sources are initialised (`warm_start`); ``"cold"`` initialises them all.
A warm blend is then fitted only around its new sources
(``second_pass_refit="local"``, the default, `local_refit`) or whole
(``"blend"``).
"""

from __future__ import annotations

__all__ = [
    "deblend",
    "deblend_with_new_peaks",
    "DeblendResult",
    "patch_model",
    "patch_residual",
    "SKIP_REASONS",
    "CATALOG_COLUMNS",
    "PER_BAND_COLUMNS",
]

import dataclasses
import logging
import time

import numpy as np
from astropy.table import Table, vstack
from threadpoolctl import threadpool_limits

from ..detection import Detections
from ..geometry import Box
from ..scene import Scene
from .blend import BlendFit, fit_blend, log_likelihood
from .component import FactorizedComponent
from .config import DeblendConfig
from .context import DeblendContext
from .flux import SourceShare, conserved_fluxes, source_shares, weighted_sums
from .initialization import BlendObservation
from .local_refit import free_sources, refit_window, window_observation
from .model_data import (
    BlendData,
    FactorizedComponentData,
    HierarchicalBlendData,
    IsolatedSourceData,
    ScarletModelData,
    SourceData,
)
from .peaks import check_positions, detections_from_positions
from .render import render_model_data
from .sub_blends import SubBlend, split_footprint
from .warm_start import first_pass_sources, fit_fresh_spectra, start_sources

_log = logging.getLogger(__name__)

FIRST_PASS = "first_pass"
RESIDUAL = "residual"


def patch_residual(scene: Scene, model: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(nbands, H, W) float32 ``scene.image − model``, zero at the scene's bad pixels (never NaN).

    Band by band into one cube (``out``, e.g. the big-endian array a FITS writer takes; default: a
    new float32 cube), so that a full patch holds that cube and, besides, only one band's arrays.
    """
    residual = np.empty(scene.image.shape, dtype=np.float32) if out is None else out
    for band in range(scene.nbands):
        plane = np.subtract(scene.image[band], model[band], dtype=np.float32)
        plane[~scene.good_at(band)] = 0.0
        residual[band] = plane
    return residual


class _DerivedCube:
    """A `DeblendResult` cube field: the array it was given, or else one made from the result.

    Subclasses say how (`make`) and whether the made cube is kept (`keep`). As a dataclass field
    it has no default (reading it from the class raises AttributeError).
    """

    keep = False

    def __set_name__(self, owner, name):
        self.name = name
        self.attribute = f"_{name}"

    def __get__(self, result, owner=None):
        if result is None:
            raise AttributeError(self.name)
        stored = getattr(result, self.attribute)
        if stored is None:
            stored = self.make(result)
            if self.keep:
                setattr(result, self.attribute, stored)
        return stored

    def __set__(self, result, value):
        setattr(result, self.attribute, None if value is None else np.asarray(value))

    def make(self, result) -> np.ndarray:
        raise NotImplementedError


class _Residual(_DerivedCube):
    """`DeblendResult.residual`: the cube it was given, or else one computed from its scene and model.

    A full patch's chain keeps only the models: each residual is a patch-sized cube, made when it
    is asked for (to write it, say) and not kept.
    """

    def make(self, result) -> np.ndarray:
        if result.scene is None:
            raise ValueError("This DeblendResult has neither a residual cube nor the scene to compute it.")
        return patch_residual(result.scene, result.model)


class _Model(_DerivedCube):
    """`DeblendResult.model`: the cube it was given, or once released (`DeblendResult.release_model`)
    the same cube rendered again from the model data and the scene (`patch_model`), then kept."""

    keep = True

    def make(self, result) -> np.ndarray:
        if result.scene is None:
            raise ValueError("This DeblendResult's model was released and it has no scene to render it.")
        return patch_model(result.scene, result.model_data)


@dataclasses.dataclass
class DeblendResult:
    """Output of `deblend` / `deblend_with_new_peaks`.

    Attributes
    ----------
    catalog : `astropy.table.Table`
        One row per peak: ``id`` (int64, the peak id), ``parent_id`` (the
        blend: footprint id), ``peak_id``, ``x``, ``y`` (peak position),
        ``flux`` (nbands, model flux), ``conserved_flux`` (nbands, flux of the
        source's share of the image), ``chi2`` and ``reduced_chi2`` (the
        residual χ² of the pixels weighted by the source's share),
        ``blend_reduced_chi2``, ``converged``, ``n_iter``, ``n_components``,
        ``n_peaks`` (in the footprint), ``n_blend_peaks`` (in the blend it
        was fitted in: fewer when the footprint was cut into sub-blends),
        flags ``isolated`` (single-peak footprint), ``skipped`` (not
        deblended; fluxes NaN) with one ``skipped_<reason>`` flag saying why
        (`SKIP_REASONS`: ``too_large``, ``area_times_peaks``,
        ``too_many_peaks``, ``no_data``), ``zero_flux``, ``masked_fraction``
        (nbands: the share of the source's model inside its footprint on
        pixels without data; NaN if not fitted), ``mostly_masked`` (nbands:
        ``masked_fraction`` above ``max_masked_fraction``; ``flux`` and
        ``conserved_flux`` are NaN in those bands), ``near_bright_star``
        (the peak lies in a bright star's zone, `bright_star_zones`), and
        ``found_by`` (``"first_pass"`` or ``"residual"``).
    model : `numpy.ndarray`
        (nbands, H, W) float32 observed-PSF model of the patch, rendered from
        ``model_data`` (isolated footprints: the image inside them,
        `patch_model`). After `release_model` it is rendered again when read.
    residual : `numpy.ndarray`
        (nbands, H, W) float32 image − model; zero at bad pixels, never NaN.
        Given as None (as `deblend` and `deblend_with_new_peaks` do), it is
        computed from ``scene`` and ``model`` each time it is read.
    model_data : `ScarletModelData`
        The models in LSST's scarlet model data format.
    detections : `Detections`
        The footprints and peaks that were deblended.
    bands : `tuple` [`str`]
        Bands of the planes.
    config : `DeblendConfig`
        The configuration used.
    timing : `dict`
        Seconds spent (``total``, ``fit``).
    scene : `Scene`, optional
        The scene that was deblended (needed when ``residual`` is None).
    context : `DeblendContext`, optional
        What the fit took from the whole patch (noise, detection image,
        kernels, bright-star zones): a second pass on the same scene with
        the same config takes it instead of making it again
        (`deblend_with_new_peaks`). None once released (`release_context`).
    """

    catalog: Table
    model: np.ndarray = _Model()
    residual: np.ndarray | None = _Residual()
    model_data: ScarletModelData
    detections: Detections
    bands: tuple[str, ...]
    config: DeblendConfig
    timing: dict = dataclasses.field(default_factory=dict)
    scene: Scene | None = dataclasses.field(default=None, repr=False)
    context: DeblendContext | None = dataclasses.field(default=None, repr=False, compare=False)

    def release_context(self) -> None:
        """Drop `context` (two patch-sized planes and up to 64 MB of kernel transforms), e.g. once
        the second pass has run."""
        self.context = None

    def release_model(self) -> None:
        """Drop the model cube (a patch-sized array): `model` renders it again from the model data
        when it is next read, identically. The chain does this while it runs its second pass.

        Raises
        ------
        ValueError
            If the result has no scene to render the model with.
        """
        if self.scene is None:
            raise ValueError("A DeblendResult without its scene cannot release its model.")
        self._model = None

    def normalized_residual(self, scene: Scene) -> np.ndarray:
        """(nbands, H, W) float32 residual / σ, zero at bad pixels (finite everywhere)."""
        return (self.residual * np.sqrt(scene.weights())).astype(np.float32)

    def write(self, directory, overwrite: bool = False) -> dict:
        """Write the result to ``directory`` (see `write_deblend_result`)."""
        from .io import write_deblend_result

        return write_deblend_result(self, directory, overwrite=overwrite)


def _check_inputs(scene: Scene, detections: Detections) -> None:
    if tuple(detections.bands) != tuple(scene.bands):
        raise ValueError(
            f"Detections are for bands {','.join(detections.bands)} "
            f"but the scene has {','.join(scene.bands)}."
        )
    if detections.footprints.shape != scene.shape:
        raise ValueError(
            f"Footprint image has shape {detections.footprints.shape}; the scene is {scene.shape}."
        )
    peaks = detections.peaks
    for column in ("id", "footprint_id", "x", "y"):
        if column not in peaks.colnames:
            raise ValueError(f"Peak table has no {column!r} column.")
    ids = np.asarray(peaks["id"])
    if len(np.unique(ids)) != len(ids):
        raise ValueError("Peak ids are not unique.")
    xy = check_positions(
        np.column_stack([peaks["x"], peaks["y"]]) if len(peaks) else np.zeros((0, 2)), scene.shape
    )
    px, py = np.floor(xy[:, 0] + 0.5).astype(int), np.floor(xy[:, 1] + 0.5).astype(int)
    labels = detections.footprints[py, px]
    wrong = np.flatnonzero(labels != np.asarray(peaks["footprint_id"]))
    if len(wrong):
        i = wrong[0]
        raise ValueError(
            f"{len(wrong)} peak(s) do not lie in their footprint, "
            f"e.g. peak {ids[i]} at ({xy[i, 0]:g}, {xy[i, 1]:g}) "
            f"has footprint_id {peaks['footprint_id'][i]} but that pixel belongs to footprint {labels[i]}."
        )


def _empty_rows(nbands: int) -> dict[str, list]:
    return {name: [] for name in CATALOG_COLUMNS}


#: Why a blend was not fitted, each a ``skipped_<reason>`` catalog flag (meas_extensions_scarlet's
#: ``deblend_skipped_*`` in brackets): ``too_large``, its box is beyond ``max_footprint_area``, and
#: ``area_times_peaks``, beyond ``max_area_times_peaks`` (both ``parentTooBig``); ``too_many_peaks``,
#: more than ``max_number_of_peaks`` (``tooManyPeaks``); ``no_data``, no pixel with weight.
SKIP_REASONS = ("too_large", "area_times_peaks", "too_many_peaks", "no_data")


#: Columns of `DeblendResult.catalog`, in order.
CATALOG_COLUMNS = (
    "id",
    "parent_id",
    "peak_id",
    "x",
    "y",
    "flux",
    "conserved_flux",
    "chi2",
    "reduced_chi2",
    "blend_reduced_chi2",
    "converged",
    "n_iter",
    "n_components",
    "n_peaks",
    "n_blend_peaks",
    "isolated",
    "skipped",
    *(f"skipped_{reason}" for reason in SKIP_REASONS),
    "zero_flux",
    "masked_fraction",
    "mostly_masked",
    "near_bright_star",
    "found_by",
)
#: Catalog columns with one value per band ((N, nbands) arrays).
PER_BAND_COLUMNS = ("flux", "conserved_flux", "masked_fraction", "mostly_masked")


def _rows_to_table(rows: dict[str, list], nbands: int) -> Table:
    table = Table()
    n = len(rows["id"])
    table["id"] = np.asarray(rows["id"], dtype=np.int64)
    table["parent_id"] = np.asarray(rows["parent_id"], dtype=np.int64)
    table["peak_id"] = np.asarray(rows["peak_id"], dtype=np.int64)
    table["x"] = np.asarray(rows["x"], dtype=np.float64)
    table["y"] = np.asarray(rows["y"], dtype=np.float64)
    table["flux"] = np.asarray(rows["flux"], dtype=np.float64).reshape(n, nbands)
    table["conserved_flux"] = np.asarray(rows["conserved_flux"], dtype=np.float64).reshape(n, nbands)
    for name in ("chi2", "reduced_chi2", "blend_reduced_chi2"):
        table[name] = np.asarray(rows[name], dtype=np.float64)
    for name in ("converged", "isolated", "skipped", *(f"skipped_{r}" for r in SKIP_REASONS), "zero_flux"):
        table[name] = np.asarray(rows[name], dtype=bool)
    table["masked_fraction"] = np.asarray(rows["masked_fraction"], dtype=np.float32).reshape(n, nbands)
    table["mostly_masked"] = np.asarray(rows["mostly_masked"], dtype=bool).reshape(n, nbands)
    table["near_bright_star"] = np.asarray(rows["near_bright_star"], dtype=bool)
    for name in ("n_iter", "n_components", "n_peaks", "n_blend_peaks"):
        table[name] = np.asarray(rows[name], dtype=np.int32)
    table["found_by"] = np.asarray(rows["found_by"], dtype="U10")
    return table


@dataclasses.dataclass
class _BlendOutcome:
    """What one footprint contributes: model data entries, catalog rows, and what χ² needs."""

    blend_id: int
    entry: HierarchicalBlendData | IsolatedSourceData | None
    rows: dict[str, list]
    box: Box
    footprint: np.ndarray
    shares: list[SourceShare] | None  # each fitted source's share of the pixels
    fitted_rows: list[int]  # indices in rows of the fitted sources (same order as shares)
    fit_seconds: float


def _deblend_footprint(
    context: DeblendContext,
    blend_id: int,
    peaks: np.ndarray,
    slices: tuple[slice, slice],
    footprints: np.ndarray,
    found_by: dict[int, str],
    first_pass: dict[int, SourceData] | None = None,
) -> _BlendOutcome:
    config = context.config
    nbands = context.scene.nbands
    box = Box(
        slices[0].start, slices[1].start, slices[0].stop - slices[0].start, slices[1].stop - slices[1].start
    )
    footprint = footprints[slices] == blend_id
    rows = _empty_rows(nbands)
    order = (
        np.argsort(-np.asarray(peaks["significance"]), kind="stable")
        if "significance" in peaks.dtype.names
        else (np.arange(len(peaks)))
    )
    peaks = peaks[order]
    n_peaks = len(peaks)
    isolated = n_peaks == 1
    centers = [(int(np.floor(p["y"] + 0.5)), int(np.floor(p["x"] + 0.5))) for p in peaks]
    centers_of = {int(p["id"]): c for p, c in zip(peaks, centers, strict=True)}
    psf_flux = {
        c: np.asarray(f, dtype=np.float64)
        for c, f in zip(centers, np.asarray(peaks["psf_flux"]), strict=True)
    }
    near_bright_star = context.near_bright_star

    def add_row(peak, n_blend_peaks: int, **values):
        rows["id"].append(int(peak["id"]))
        rows["parent_id"].append(blend_id)
        rows["peak_id"].append(int(peak["id"]))
        rows["x"].append(float(peak["x"]))
        rows["y"].append(float(peak["y"]))
        rows["n_peaks"].append(n_peaks)
        rows["n_blend_peaks"].append(n_blend_peaks)
        rows["isolated"].append(isolated)
        rows["found_by"].append(found_by.get(int(peak["id"]), FIRST_PASS))
        defaults = dict(
            flux=np.full(nbands, np.nan),
            conserved_flux=np.full(nbands, np.nan),
            chi2=np.nan,
            reduced_chi2=np.nan,
            blend_reduced_chi2=np.nan,
            converged=False,
            n_iter=0,
            n_components=0,
            skipped=False,
            **{f"skipped_{reason}": False for reason in SKIP_REASONS},
            zero_flux=False,
            masked_fraction=np.full(nbands, np.nan),
            mostly_masked=np.zeros(nbands, dtype=bool),
            near_bright_star=bool(near_bright_star[centers_of[int(peak["id"])]]),
        )
        if "masked_fraction" in values:
            # The data do not see most of the source in these bands: its fluxes there would be
            # the model's extrapolation (or a share of a few pixels), so they are NaN, flagged.
            mostly = np.asarray(values["masked_fraction"]) > config.max_masked_fraction
            values["mostly_masked"] = mostly
            for name in ("flux", "conserved_flux"):
                if name in values:
                    values[name] = np.where(mostly, np.nan, values[name])
        defaults.update(values)
        for key, value in defaults.items():
            rows[key].append(value)

    def skip(skipped_peaks: np.ndarray, reason: str) -> None:
        # Every peak keeps its row: flagged, with NaN fluxes, and no model (LSST stores none either).
        for peak in skipped_peaks:
            add_row(peak, len(skipped_peaks), skipped=True, **{f"skipped_{reason}": True})

    start = time.perf_counter()
    if isolated and config.isolated == "footprint":
        obs = context.observation(box, footprint, psf_flux)
        if not np.any(obs.weights > 0):
            skip(peaks, "no_data")
            return _BlendOutcome(blend_id, None, rows, box, footprint, None, [], 0.0)
        data = np.where(obs.weights > 0, obs.image, 0.0)
        flux = (data * footprint[None]).sum(axis=(1, 2))
        peak = peaks[0]
        unseen = ((obs.weights == 0) & footprint[None]).sum(axis=(1, 2)) / max(int(footprint.sum()), 1)
        add_row(
            peak,
            1,
            flux=flux,
            conserved_flux=flux,
            converged=True,
            zero_flux=bool(np.all(flux <= 0)),
            masked_fraction=unseen,
        )
        entry = IsolatedSourceData(
            origin=box.origin,
            peak=(float(centers[0][0]), float(centers[0][1])),
            span_array=footprint.astype(np.float32),
            metadata={"peak_id": int(peak["id"]), "id": int(peak["id"])},
        )
        return _BlendOutcome(blend_id, entry, rows, box, footprint, None, [], 0.0)

    parts = [SubBlend(box, footprint, np.arange(n_peaks))]
    if config.split_large_footprints and _skip_reason(config, box, n_peaks) is not None:
        parts = split_footprint(
            context.detect[slices],
            footprint,
            box,
            np.array(centers, dtype=int).reshape(-1, 2),
            max_area_times_peaks=_tighter(config.sub_blend_area_times_peaks, config.max_area_times_peaks),
            max_peaks=config.max_number_of_peaks,
            max_area=config.max_footprint_area,
        )
    split = len(parts) > 1
    children: dict[int, BlendData] = {}
    shares: list[SourceShare] = []
    fitted_rows = []
    for part in parts:
        part_peaks = peaks[part.peaks]
        reason = _skip_reason(config, part.box, len(part_peaks))
        obs = None if reason is not None else context.observation(part.box, part.mask, psf_flux)
        if obs is not None and not np.any(obs.weights > 0):
            reason = "no_data"
        if reason is not None:
            skip(part_peaks, reason)
            continue
        if split:
            # Beyond the valley the neighbouring sub-blend models the light: start the morphologies
            # on this sub-blend's own pixels, or they would claim (and the patch model count twice)
            # the neighbours' light where this fit has no data to correct them.
            obs.detect = np.where(part.mask, obs.detect, 0.0)
        sources, fit, part_shares, conserved = _fit_sources(
            context, obs, part_peaks, [centers[i] for i in part.peaks], first_pass
        )
        children_sources = {}
        for index, peak in enumerate(part_peaks):
            flux = sum(c.flux for c in sources[index])
            fitted_rows.append(len(rows["id"]))
            add_row(
                peak,
                len(part_peaks),
                flux=flux,
                conserved_flux=conserved[index],
                masked_fraction=part_shares[index].masked_fraction,
                converged=fit.converged,
                n_iter=fit.n_iter,
                n_components=len(sources[index]),
                # A flux a million times below one pixel's noise is the spectrum floor, not light.
                zero_flux=bool(np.all(flux < 1e-6 * context.noise_rms)),
            )
            children_sources[int(peak["id"])] = SourceData(
                components=[_component_data(c) for c in sources[index]],
                metadata={"peak_id": int(peak["id"]), "id": int(peak["id"])},
            )
        shares.extend(part_shares)
        # A footprint fitted whole is its own child (LSST: the deconvolved parent); a sub-blend is
        # named by its most significant peak.
        child_id = int(part_peaks[0]["id"]) if split else blend_id
        children[child_id] = BlendData(origin=part.box.origin, shape=part.box.shape, sources=children_sources)
    fit_seconds = time.perf_counter() - start
    if not children:
        return _BlendOutcome(blend_id, None, rows, box, footprint, None, [], fit_seconds)
    entry = HierarchicalBlendData(
        children=children, metadata={"spans": footprint.copy(), "origin": box.origin}
    )
    return _BlendOutcome(blend_id, entry, rows, box, footprint, shares, fitted_rows, fit_seconds)


def _tighter(limit: int, other: int) -> int:
    """The smaller of two limits where <= 0 means none."""
    return min(limit, other) if limit > 0 and other > 0 else max(limit, other)


def _skip_reason(config: DeblendConfig, box: Box, n_peaks: int) -> str | None:
    """Which limit a blend of ``n_peaks`` peaks in ``box`` is beyond (LSST's order), or None."""
    area = box.height * box.width
    if config.max_footprint_area > 0 and area > config.max_footprint_area:
        return "too_large"
    if config.max_area_times_peaks > 0 and area * n_peaks > config.max_area_times_peaks:
        return "area_times_peaks"
    if config.max_number_of_peaks > 0 and n_peaks > config.max_number_of_peaks:
        return "too_many_peaks"
    return None


def _fit_spectra_first(config: DeblendConfig, box: Box, n_sources: int) -> bool:
    """Whether initial spectra are fitted by least squares (LSST's ``setSpectra``, ``maxSpectrumCutoff``)."""
    cutoff = config.max_spectrum_cutoff
    return config.spectrum_init and (cutoff <= 0 or box.height * box.width * n_sources <= cutoff)


def _fit_sources(
    context: DeblendContext,
    obs: BlendObservation,
    peaks: np.ndarray,
    centers: list[tuple[int, int]],
    first_pass: dict[int, SourceData] | None,
) -> tuple[list[list[FactorizedComponent]], BlendFit, list[SourceShare], np.ndarray]:
    """Initialise (or warm-start) and fit the sources of one blend; their shares and conserved fluxes."""
    config = context.config
    box = obs.box
    # Sources with a first-pass model (second pass, warm start) start from it; the others from the image.
    peak_ids = [int(i) for i in peaks["id"]]
    sources, warm = start_sources(obs, peak_ids, centers, config, context.monotonicity, first_pass or {})
    if any(warm) and config.second_pass_refit == "local":
        fit = _fit_near_new_sources(obs, sources, warm, centers, config)
        local_end = log_likelihood(obs, [c for source in sources for c in source])
        if -2.0 * local_end > config.local_refit_max_chi2 * max(np.count_nonzero(obs.weights), 1):
            # A blend the first pass left this far from its data (a fit stuck far from the
            # optimum) is not mended by re-fitting around its new sources, which keeps the rest
            # as it was: the whole blend is fitted on from there (and cold if that ends worse).
            sources, fit = _fit_whole_blend(context, obs, sources, [True] * len(sources), peak_ids, centers)
    else:
        sources, fit = _fit_whole_blend(context, obs, sources, warm, peak_ids, centers)
    shares = source_shares(obs, sources)
    # Each source's share of the pixels stops at its blend's own (a sub-blend's neighbours have theirs).
    for share in shares:
        share.fraction *= obs.footprint[share.box.slices(box)][None]
    conserved = (
        conserved_fluxes(obs, shares)
        if config.conserve_flux
        else np.full((len(sources), context.scene.nbands), np.nan)
    )
    return sources, fit, shares, conserved


def _fit_whole_blend(
    context: DeblendContext,
    obs: BlendObservation,
    sources: list[list[FactorizedComponent]],
    warm: list[bool],
    peak_ids: list[int],
    centers: list[tuple[int, int]],
) -> tuple[list[list[FactorizedComponent]], BlendFit]:
    """Fit every source of the blend (first pass, cold second pass, ``second_pass_refit="blend"``)."""
    config = context.config
    components = [c for source in sources for c in source]
    if _fit_spectra_first(config, obs.box, len(sources)):
        fit_fresh_spectra(
            obs,
            [c for source, w in zip(sources, warm, strict=True) if not w for c in source],
            [c for source, w in zip(sources, warm, strict=True) if w for c in source],
        )
    fit = fit_blend(obs, components, config)
    warm_end = log_likelihood(obs, components) if any(warm) and fit.log_likelihood else None
    if warm_end is not None and warm_end < fit.log_likelihood[0]:
        # The optimizer's first steps from a converged start (its moments begin at zero, so each
        # step has the full step size) can throw the fit out of the first pass's basin, and it
        # then stops in a worse one. Such a blend is also fitted cold, and the better fit is kept.
        _log.debug(
            "Warm start of the blend at %s ended worse than it began; fitting it cold.", obs.box.origin
        )
        cold, cold_fit = _fit_cold(context, obs, peak_ids, centers)
        if log_likelihood(obs, [c for source in cold for c in source]) > warm_end:
            return cold, cold_fit
    return sources, fit


def _fit_cold(
    context: DeblendContext, obs: BlendObservation, peak_ids: list[int], centers: list[tuple[int, int]]
) -> tuple[list[list[FactorizedComponent]], BlendFit]:
    """Every source of the blend initialised from the image, as in the first pass, and fitted."""
    config = context.config
    cold, _ = start_sources(obs, peak_ids, centers, config, context.monotonicity, {})
    components = [c for source in cold for c in source]
    if _fit_spectra_first(config, obs.box, len(cold)):
        fit_fresh_spectra(obs, components, [])
    return cold, fit_blend(obs, components, config)


def _fit_near_new_sources(
    obs: BlendObservation,
    sources: list[list[FactorizedComponent]],
    warm: list[bool],
    centers: list[tuple[int, int]],
    config: DeblendConfig,
) -> BlendFit:
    """Fit (in place) the sources near the new ones on their window, the others held (`local_refit`)."""
    free = free_sources(obs, sources, centers, warm, config.local_refit_radius, config.local_refit_share)
    components = [c for source, f in zip(sources, free, strict=True) if f for c in source]
    held = [c for source, f in zip(sources, free, strict=True) if not f for c in source]
    window_obs = window_observation(obs, refit_window(obs, components, config.component_padding), held)
    if _fit_spectra_first(config, window_obs.box, sum(free)):
        fit_fresh_spectra(
            window_obs,
            [c for source, f, w in zip(sources, free, warm, strict=True) if f and not w for c in source],
            [c for source, f, w in zip(sources, free, warm, strict=True) if f and w for c in source],
        )
    start = [c.snapshot() for c in components]
    fit = fit_blend(window_obs, components, config)
    if fit.log_likelihood and log_likelihood(window_obs, components) < fit.log_likelihood[0]:
        # The fit stops on a change of the window's likelihood relative to itself: for a faint new
        # source that change is below the cut from the start, and the few iterations the rule
        # still takes (their first steps full-sized, the moments starting at zero) only add noise
        # to a start already at the least-squares spectra. The start is then kept. (A whole-blend
        # warm fit falls back to a cold fit of the blend instead, which here would cost more than
        # the local fit saves.)
        for component, state in zip(components, start, strict=True):
            component.restore(state)
    return fit


def _component_data(component: FactorizedComponent) -> FactorizedComponentData:
    return FactorizedComponentData(
        origin=component.box.origin,
        peak=(float(component.peak[0]), float(component.peak[1])),
        spectrum=component.spectrum.astype(np.float32),
        morph=component.morph.astype(np.float32),
    )


def _base_model_data(scene: Scene, context: DeblendContext) -> ScarletModelData:
    return ScarletModelData(
        metadata={
            "model_psf": context.model_psf.astype(np.float32),
            "psf": scene.psf.astype(np.float32),
            "bands": tuple(scene.bands),
            "patch_shape": [int(s) for s in scene.shape],
        }
    )


def _run_footprints(
    context: DeblendContext,
    detections: Detections,
    footprint_ids,
    found_by: dict[int, str],
    desc: str,
    first_pass: ScarletModelData | None = None,
) -> list[_BlendOutcome]:
    from tqdm.auto import tqdm

    # The peaks as one structured array, grouped by footprint: slicing an astropy Table per
    # footprint cost about 5% of a pass.
    peaks = detections.peaks.as_array()
    footprint_of_peak = np.asarray(peaks["footprint_id"])
    order = np.argsort(footprint_of_peak, kind="stable")
    with_peaks, starts = np.unique(footprint_of_peak[order], return_index=True)
    rows_of = dict(zip(with_peaks.tolist(), np.split(order, starts[1:]) if len(order) else [], strict=True))
    slices = detections.footprint_slices()
    outcomes = []
    ids = [int(f) for f in footprint_ids]
    # Large blends first so the progress bar's estimate is pessimistic, not optimistic.
    ids.sort(
        key=lambda f: -(slices[f][0].stop - slices[f][0].start) * (slices[f][1].stop - slices[f][1].start)
    )
    # BLAS on one thread: the blends' linear algebra (normal equations of a few spectra, their
    # least squares) is too small to share, and between calls OpenBLAS's other threads spin. On
    # the bench.scaling 2048² patch a first pass took 15.5 s of CPU for 12.4 s of wall time with
    # two BLAS threads, 11.9 s for 11.9 s with one: the same wall time, and a core left free for
    # another quantum.
    with threadpool_limits(limits=1, user_api="blas"):
        for blend_id in tqdm(
            ids, desc=desc, unit="blend", disable=not context.config.show_progress, leave=False
        ):
            outcomes.append(
                _deblend_footprint(
                    context,
                    blend_id,
                    peaks[rows_of.get(blend_id, np.zeros(0, dtype=np.int64))],
                    slices[blend_id],
                    detections.footprints,
                    found_by,
                    None if first_pass is None else first_pass_sources(first_pass, blend_id),
                )
            )
    outcomes.sort(key=lambda o: o.blend_id)
    return outcomes


def _add_isolated(model: np.ndarray, source: IsolatedSourceData, scene: Scene) -> None:
    """Add an isolated source's model (the image inside its span, as `render_model_data`) to ``model``."""
    source_box = Box(int(source.origin[0]), int(source.origin[1]), *source.shape)
    inside = source_box.intersect(Box(0, 0, *model.shape[1:]))
    if inside.empty:
        return
    sl = (slice(None), *inside.slices())
    # `Scene.clean_image` cut to the box: no patch-sized clean image.
    image = np.where(scene.good_at(sl), scene.image[sl], np.float32(0))
    span = source.span_array[inside.slices(source_box)] > 0
    model[sl] += np.where(span, image.astype(np.float64), 0.0)


def patch_model(scene: Scene, model_data: ScarletModelData) -> np.ndarray:
    """(nbands, H, W) float32 observed-PSF model of a deblended patch (`DeblendResult.model`).

    Blends are rendered from ``model_data`` into one cube, blend by blend;
    isolated footprints are the image inside their spans (zero at bad pixels).
    """
    model = render_model_data(model_data, scene.shape, bands=scene.bands, include_isolated=False)
    for source in model_data.isolated.values():
        _add_isolated(model, source, scene)
    return model


def _finish(
    scene: Scene,
    context: DeblendContext,
    model_data: ScarletModelData,
    outcomes: list[_BlendOutcome],
    kept_rows: Table | None,
) -> tuple[Table, np.ndarray]:
    """Render the patch model (blend by blend, into one cube); the χ² columns and the catalog."""
    model = patch_model(scene, model_data)
    nbands = scene.nbands
    fitted = _empty_rows(nbands)  # every outcome's rows, made into one table at the end
    for outcome in outcomes:
        sl = outcome.box.slices()
        # The residual blend by blend: the patch's residual cube is never made here.
        image, weights = context.pixels(outcome.box)
        residual = np.subtract(image, model[:, sl[0], sl[1]]).astype(np.float32)
        residual[weights == 0] = 0.0
        chi = residual.astype(np.float64) ** 2 * weights * outcome.footprint[None]
        used = (weights > 0) & outcome.footprint[None]
        n_used = int(used.sum())
        blend_chi2 = float(chi.sum()) / n_used if n_used else np.nan
        rows = outcome.rows
        rows["blend_reduced_chi2"] = [blend_chi2] * len(rows["id"])
        if outcome.shares is not None:
            chi2 = weighted_sums(outcome.shares, chi, outcome.box).sum(axis=1)
            dof = weighted_sums(outcome.shares, used.astype(np.float32), outcome.box).sum(axis=1)
            for k, row in enumerate(outcome.fitted_rows):
                rows["chi2"][row] = float(chi2[k])
                rows["reduced_chi2"][row] = float(chi2[k] / dof[k]) if dof[k] > 0 else np.nan
        elif isinstance(outcome.entry, IsolatedSourceData):
            rows["chi2"][0] = float(chi.sum())
            rows["reduced_chi2"][0] = blend_chi2
        for name, values in rows.items():
            fitted[name].extend(values)
    catalog = _rows_to_table(fitted, nbands)
    if kept_rows is not None:
        catalog = vstack([kept_rows, catalog], join_type="exact")
    if len(catalog):
        catalog = catalog[np.lexsort((np.asarray(catalog["id"]), np.asarray(catalog["parent_id"])))]
    if scene.metadata.get("BUNIT"):
        catalog["flux"].unit = catalog["conserved_flux"].unit = str(scene.metadata["BUNIT"])
    return catalog, model


def deblend(scene: Scene, detections: Detections, config: DeblendConfig | None = None) -> DeblendResult:
    """Deblend every footprint of ``detections`` (the first pass).

    Parameters
    ----------
    scene : `Scene`
        The image; bad pixels (masked, non-finite, non-positive variance)
        get zero weight.
    detections : `Detections`
        Footprints and peaks, e.g. from `detect_peaks` or
        `detections_from_positions`; their S/N image
        (`Detections.significance`), where they carry one, is taken as the
        scene's instead of being made again.
    config : `DeblendConfig`, optional
        Parameters (LSST's defaults).

    Returns
    -------
    result : `DeblendResult`

    Raises
    ------
    ValueError
        If bands, shapes or peaks do not match the scene (a peak off the
        image or outside its footprint, repeated peak ids), or a band has no
        usable pixel.
    """
    config = DeblendConfig() if config is None else config
    _check_inputs(scene, detections)
    start = time.perf_counter()
    context = DeblendContext.build(scene, config, detections.significance)
    footprint_ids = np.unique(np.asarray(detections.peaks["footprint_id"]))
    outcomes = _run_footprints(context, detections, footprint_ids, {}, "deblend")
    model_data = _base_model_data(scene, context)
    for outcome in outcomes:
        _add_entry(model_data, outcome)
    catalog, model = _finish(scene, context, model_data, outcomes, None)
    timing = {"total": time.perf_counter() - start, "fit": sum(o.fit_seconds for o in outcomes)}
    _log.info(
        "Deblended %d peaks in %d footprints in %.1f s.",
        len(detections.peaks),
        len(footprint_ids),
        timing["total"],
    )
    return DeblendResult(
        catalog, model, None, model_data, detections, tuple(scene.bands), config, timing, scene, context
    )


def _add_entry(model_data: ScarletModelData, outcome: _BlendOutcome) -> None:
    if isinstance(outcome.entry, IsolatedSourceData):
        model_data.isolated[outcome.blend_id] = outcome.entry
    elif outcome.entry is not None:
        model_data.blends[outcome.blend_id] = outcome.entry


def deblend_with_new_peaks(
    scene: Scene,
    detections: Detections,
    catalog: Table,
    model_data: ScarletModelData,
    new_peaks_xy: np.ndarray,
    config: DeblendConfig | None = None,
    new_peak_ids: np.ndarray | None = None,
    context: DeblendContext | None = None,
) -> DeblendResult:
    """Second pass: add new peaks and re-fit only the blends they fall in.

    Each new position (x, y) joins the first-pass footprint that contains it;
    a position outside every footprint gets a new small footprint (see
    `detections_from_positions`). The blends that gained peaks are fitted
    again with all their peaks: with ``config.second_pass_start == "warm"``
    their existing sources start from their first-pass components in
    ``model_data`` and only the others (new peaks, and peaks without a
    fitted factorised first-pass model) are initialised, their spectra
    fitted with the existing sources held fixed, and with
    ``config.second_pass_refit == "local"`` only the sources near the new
    ones are fitted, on their window (`local_refit`); with ``"cold"`` every
    source is initialised from the image as in the first pass. Either way
    the fit stops on the first pass's rule (``max_iter``, ``min_iter``,
    ``relative_error``). Every other blend's model data entry and catalog
    rows are copied unchanged from the first pass. New sources have
    ``found_by == "residual"``. The first-pass model cube is not needed (nor
    rendered): only the new patch model is.

    Parameters
    ----------
    scene : `Scene`
        The scene the first pass was run on.
    detections : `Detections`
        The first pass's footprints and peaks (and S/N image, as in `deblend`).
    catalog : `astropy.table.Table`
        The first pass's catalog (`DeblendResult.catalog` columns).
    model_data : `ScarletModelData`
        The first pass's model data (patch pixels, footprint and peak ids).
    new_peaks_xy : `numpy.ndarray`
        (N, 2) new peak positions (x, y).
    config : `DeblendConfig`, optional
        Parameters of the re-fit (keep them equal to the first pass's).
    new_peak_ids : `numpy.ndarray`, optional
        Ids of the new peaks; default: after the largest first-pass peak id.
    context : `DeblendContext`, optional
        The first pass's (`DeblendResult.context`): taken if it was made for
        this ``scene`` with an equal ``config``, else made again (the same
        arrays either way).

    Returns
    -------
    result : `DeblendResult`
        The updated result (the inputs are not modified).
    """
    config = DeblendConfig() if config is None else config
    if tuple(detections.bands) != tuple(scene.bands):
        raise ValueError(f"The first pass has bands {detections.bands}; the scene has {scene.bands}.")
    model_bands = (model_data.metadata or {}).get("bands")
    if model_bands is not None and tuple(model_bands) != tuple(scene.bands):
        # The warm start reads the first-pass spectra band by band.
        raise ValueError(
            f"The first-pass model data has bands {','.join(model_bands)}; "
            f"the scene has {','.join(scene.bands)}."
        )
    new_peaks_xy = check_positions(new_peaks_xy, scene.shape, "new peak")
    start = time.perf_counter()
    if context is None or context.scene is not scene or context.config != config:
        context = DeblendContext.build(scene, config, detections.significance)
    detections = detections_from_positions(
        scene, new_peaks_xy, base=detections, ids=new_peak_ids, significance=context.significance
    )
    n_new = len(new_peaks_xy)
    new_rows = slice(len(detections.peaks) - n_new, len(detections.peaks))
    new_ids = np.asarray(detections.peaks["id"][new_rows])
    touched = np.unique(np.asarray(detections.peaks["footprint_id"][new_rows]))
    found_by = {int(i): RESIDUAL for i in new_ids}
    found_by.update(
        {
            int(i): str(f)
            for i, f, p in zip(catalog["id"], catalog["found_by"], catalog["parent_id"], strict=True)
            if p in touched
        }
    )
    warm = config.second_pass_start == "warm"
    outcomes = _run_footprints(
        context, detections, touched, found_by, "re-deblend", model_data if warm else None
    )

    updated = _base_model_data(scene, context)
    updated.metadata = model_data.metadata
    touched_set = {int(t) for t in touched}
    for key, blend in model_data.blends.items():
        if key not in touched_set:
            updated.blends[key] = blend
    for key, source in model_data.isolated.items():
        if key not in touched_set:
            updated.isolated[key] = source
    for outcome in outcomes:
        _add_entry(updated, outcome)
    kept = catalog[~np.isin(np.asarray(catalog["parent_id"]), list(touched_set))]
    new_catalog, model = _finish(scene, context, updated, outcomes, kept)
    timing = {"total": time.perf_counter() - start, "fit": sum(o.fit_seconds for o in outcomes)}
    _log.info(
        "Re-deblended %d blend(s) with %d new peak(s) in %.1f s.", len(touched), len(new_ids), timing["total"]
    )
    return DeblendResult(
        new_catalog, model, None, updated, detections, tuple(scene.bands), config, timing, scene, context
    )
