"""Start a second-pass blend from the components the first pass fitted.

When new peaks join a blend, the sources it already had are started from
their first-pass components, read back from the model data
(`FactorizedComponentData` → `FactorizedComponent`: same box, peak, spectrum
and morphology; the optimizer's moments start afresh, with the step sizes
scaled by ``warm_step_scale``). Only the sources
without a usable first-pass model are initialised as the first pass
initialises them (`initialize_sources` on their centres): the new peaks, and
existing peaks whose first-pass entry is missing (skipped, or the footprint
was handled LSST's cheap way as an isolated source) or not factorised (cube
components).

The spectra of the freshly initialised components alone are then fitted by
linear least squares to what the warm-started sources leave of the image,
those held fixed. Fitting every spectrum jointly instead would move the
existing sources away from their fitted values before the first iteration,
while their morphologies, shaped by the first-pass fit around the light of
the missed source, make the joint system nearly degenerate near the new
peak; holding them fixed keeps the new sources' system as small and as well
conditioned as the first pass's, and hands the optimizer a start whose only
error is the new sources' share of the light.
"""

from __future__ import annotations

__all__ = ["first_pass_sources", "start_sources", "fit_fresh_spectra"]

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from ..geometry import Box
from .blend import model_frame
from .component import FactorizedComponent
from .config import DeblendConfig
from .initialization import BlendObservation, fit_spectra, initialize_sources
from .model_data import FactorizedComponentData, ScarletModelData, SourceData
from .monotonicity import Monotonicity


def first_pass_sources(model_data: ScarletModelData, blend_id: int) -> dict[int, SourceData]:
    """The fitted sources of a first-pass blend, by peak id.

    Empty when the footprint has no fitted blend in ``model_data`` (it was
    skipped, handled as an isolated source, or is new). A source's peak id is
    its ``metadata["peak_id"]``, else its key.
    """
    entry = model_data.blends.get(int(blend_id))
    if entry is None:
        return {}
    sources = {}
    for key, source in entry.sources.items():
        metadata = source.metadata or {}
        sources[int(metadata.get("peak_id", key))] = source
    return sources


def _warm_components(
    source: SourceData, obs: BlendObservation, config: DeblendConfig, monotonicity: Monotonicity | None
) -> list[FactorizedComponent] | None:
    """The first-pass components of ``source`` on the blend box, or None if they cannot start a fit."""
    if not source.components:
        return None
    components = []
    for data in source.components:
        if not isinstance(data, FactorizedComponentData):
            return None
        spectrum = np.asarray(data.spectrum, dtype=np.float64)
        morph = np.asarray(data.morph, dtype=np.float64)
        if spectrum.shape != (obs.nbands,) or not (
            np.all(np.isfinite(spectrum)) and np.all(np.isfinite(morph))
        ):
            return None
        box = Box(int(data.origin[0]), int(data.origin[1]), *morph.shape)
        # The footprint of an existing blend does not change in the second pass, so its components
        # already lie in the blend box; cropping only guards model data from elsewhere.
        inside = box.intersect(obs.box)
        peak = (int(np.floor(data.peak[0] + 0.5)), int(np.floor(data.peak[1] + 0.5)))
        if inside.empty or not inside.contains(*peak):
            return None
        components.append(
            FactorizedComponent(
                spectrum,
                morph[inside.slices(box)],
                inside,
                peak,
                obs.noise_rms,
                config,
                monotonicity,
                step_scale=config.warm_step_scale,
            )
        )
    return components


def start_sources(
    obs: BlendObservation,
    peak_ids: Sequence[int],
    centers: Sequence[tuple[int, int]],
    config: DeblendConfig,
    monotonicity: Monotonicity | None,
    first_pass: Mapping[int, SourceData],
) -> tuple[list[list[FactorizedComponent]], list[bool]]:
    """The components each source of a blend starts from.

    Parameters
    ----------
    obs : `BlendObservation`
        The blend.
    peak_ids : `list` [`int`]
        Peak id of each source.
    centers : `list` [`tuple` [`int`, `int`]]
        (y, x) peak pixel of each source, in patch coordinates.
    config : `DeblendConfig`
        Parameters.
    monotonicity : `Monotonicity` or None
        The shared monotonicity operator.
    first_pass : `dict` [`int`, `SourceData`]
        First-pass sources by peak id (`first_pass_sources`); empty: every
        source is initialised from the image (a cold start).

    Returns
    -------
    sources : `list` [`list` [`FactorizedComponent`]]
        Components of each source, in the order of ``peak_ids``.
    warm : `list` [`bool`]
        Whether each source starts from its first-pass components.
    """
    if len(peak_ids) != len(centers):
        raise ValueError(f"{len(peak_ids)} peak ids for {len(centers)} centres.")
    started: list[list[FactorizedComponent] | None] = [
        _warm_components(first_pass[int(i)], obs, config, monotonicity) if int(i) in first_pass else None
        for i in peak_ids
    ]
    cold = [k for k, components in enumerate(started) if components is None]
    # Each peak is initialised on its own, so initialising a subset gives those peaks the first pass's start.
    for k, components in zip(
        cold, initialize_sources(obs, [centers[k] for k in cold], config, monotonicity), strict=True
    ):
        started[k] = components
    cold_set = set(cold)
    return started, [k not in cold_set for k in range(len(started))]


def fit_fresh_spectra(
    obs: BlendObservation, fresh: list[FactorizedComponent], fixed: list[FactorizedComponent]
) -> None:
    """Fit the spectra of ``fresh`` (`fit_spectra`) to the image less the model of ``fixed``.

    With nothing ``fixed`` this is `fit_spectra` on ``fresh``, the first pass's rule.
    """
    if not fresh:
        return
    if not fixed:
        fit_spectra(obs, fresh)
        return
    held = obs.convolver.convolve(model_frame(obs, fixed))
    fit_spectra(dataclasses.replace(obs, image=obs.image - held), fresh)
