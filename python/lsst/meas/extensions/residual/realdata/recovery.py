"""Injection–recovery: how many injected sources the chain finds, by pass, magnitude and blending.

The chain runs on the scene as it was and on the same scene with injected
sources (`inject_sources`). A detection of the injected run stands for an
injected source only if the run without them has no detection within
``same_source_radius`` of it (else it is a real source, found either way);
the rest are matched one to one to the injected truth (Hungarian,
`match_positions`) within ``match_radius_fwhm`` PSF FWHM (reference band, at
least 1.5 px). An injected source is recovered

* by pass 1 if a first-pass peak matches it;
* by pass 1 + 2 if a source of the final catalog does (first-pass sources
  and the residual pass's new ones); ``only_residual``: by pass 1 + 2 and
  not by pass 1, what the residual network adds.

Recovery is reported against the reference-band magnitude and against the
separation from the nearest real source (a final source of the run without
injections), in PSF FWHM. The residual pass's new sources in the run
without injections are an upper bound on its spurious detections there (a
real image has no truth: some may be real sources the first pass missed).
"""

from __future__ import annotations

__all__ = ["RecoveryConfig", "injection_recovery", "plot_recovery"]

import numpy as np
import pydantic
from scipy.spatial import cKDTree

from ..configs import StrictModel
from ..errors import InputError
from ..groundtruth.matching import match_positions
from ..scene import Scene
from .injection import reference_band
from .psf_estimation import psf_fwhm

#: The smallest match radius (pixels).
_MIN_MATCH_RADIUS = 1.5


class RecoveryConfig(StrictModel):
    """How injected sources are matched and binned."""

    match_radius_fwhm: float = pydantic.Field(default=0.5, gt=0.0)
    """A detection matches an injected source within this many PSF FWHM (at least 1.5 px)."""
    same_source_radius: float = pydantic.Field(default=1.5, gt=0.0)
    """Pixels within which a detection of the injected run is one of the run without injections."""
    magnitude_bins: int = pydantic.Field(default=6, ge=1)
    """Bins of the injected magnitude range."""
    separation_edges_fwhm: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 5.0, np.inf)
    """Edges of the bins of separation from the nearest real source (PSF FWHM)."""


def _xy(table) -> np.ndarray:
    return np.column_stack([np.asarray(table["x"], float), np.asarray(table["y"], float)]).reshape(-1, 2)


def _matched(truth_xy: np.ndarray, found_xy: np.ndarray, real_xy: np.ndarray, radius: float, same: float):
    """Bool per injected source: matched by a detection that is not one of the real sources'."""
    if len(found_xy) and len(real_xy):
        distance = cKDTree(real_xy).query(found_xy)[0]
        found_xy = found_xy[distance > same]
    hit = np.zeros(len(truth_xy), dtype=bool)
    if len(found_xy) and len(truth_xy):
        index, _ = match_positions(truth_xy, found_xy, radius)
        hit[index] = True
    return hit


def _binned(values: np.ndarray, edges: np.ndarray, masks: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= lo) & (values < hi)
        row = {"low": float(lo), "high": float(hi), "n": int(inside.sum())}
        for name, hit in masks.items():
            row[name] = float(hit[inside].mean()) if inside.any() else None
        rows.append(row)
    return rows


def injection_recovery(
    injected: Scene, original, with_injections, config: RecoveryConfig | None = None
) -> dict:
    """Recovery figures (module docstring) from the chain's results on both scenes.

    Parameters
    ----------
    injected : `Scene`
        The injected scene (its truth: the injected sources).
    original, with_injections : `~lsst.meas.extensions.residual.chain.ChainResult`
        `run_chain` on the scene without and with the injections.
    config : `RecoveryConfig`, optional
        Matching and bins.

    Raises
    ------
    InputError
        If the injected scene has no truth.
    """
    config = RecoveryConfig() if config is None else config
    if injected.truth is None or len(injected.truth) == 0:
        raise InputError("The injected scene has no TRUTH: make it with `inject` (or inject_sources).")
    reference = reference_band(injected.bands)
    fwhm = psf_fwhm(injected.psf[reference])
    radius = max(_MIN_MATCH_RADIUS, config.match_radius_fwhm * fwhm)
    truth_xy = injected.truth.xy
    mag = np.asarray(injected.truth.table["mag"], dtype=np.float64).reshape(len(truth_xy), -1)[:, reference]
    real_final = _xy(original.second_pass.catalog)
    real_peaks = _xy(original.first_pass.detections.peaks)
    pass1 = _matched(
        truth_xy,
        _xy(with_injections.first_pass.detections.peaks),
        real_peaks,
        radius,
        config.same_source_radius,
    )
    final = _matched(
        truth_xy, _xy(with_injections.second_pass.catalog), real_final, radius, config.same_source_radius
    )
    final |= pass1  # a first-pass source is in the final catalog (its position may move in the fit)
    masks = {"pass_1": pass1, "pass_1_2": final, "only_residual": final & ~pass1}
    separation = (
        cKDTree(real_final).query(truth_xy)[0] / fwhm if len(real_final) else np.full(len(truth_xy), np.inf)
    )
    lo, hi = (
        float(injected.metadata.get("INJMAG0", mag.min())),
        float(injected.metadata.get("INJMAG1", mag.max())),
    )
    mag_edges = np.linspace(lo, hi + 1e-9, config.magnitude_bins + 1)
    residual_original = np.asarray(original.second_pass.catalog["found_by"]).astype(str) == "residual"
    return {
        "n_injected": int(len(truth_xy)),
        "reference_band": injected.bands[reference],
        "psf_fwhm_pixels": round(fwhm, 3),
        "match_radius_pixels": round(radius, 3),
        "recovered": {name: float(hit.mean()) for name, hit in masks.items()},
        "recovered_count": {name: int(hit.sum()) for name, hit in masks.items()},
        "share_of_recovered_only_by_the_residual_pass": (
            float(masks["only_residual"].sum() / final.sum()) if final.any() else None
        ),
        "vs_magnitude": _binned(mag, mag_edges, masks),
        "vs_separation_fwhm": _binned(separation, np.asarray(config.separation_edges_fwhm, float), masks),
        "uninjected": {
            "first_pass_sources": int(len(real_peaks)),
            "new_sources_residual_pass": int(residual_original.sum()),
        },
        "per_source": {
            "x": truth_xy[:, 0].tolist(),
            "y": truth_xy[:, 1].tolist(),
            "mag": mag.tolist(),
            "class": [str(c) for c in injected.truth.table["class"]],
            "separation_fwhm": separation.tolist(),
            **{name: hit.tolist() for name, hit in masks.items()},
        },
    }


def plot_recovery(summary: dict, path, title: str = "") -> None:
    """Recovery against magnitude and against separation (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        ("vs_magnitude", f"{summary['reference_band']} magnitude of the injected source"),
        ("vs_separation_fwhm", "separation from the nearest real source (PSF FWHM)"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        rows = [r for r in summary[key] if r["n"]]
        centres = [0.5 * (r["low"] + r["high"]) if np.isfinite(r["high"]) else r["low"] + 1.0 for r in rows]
        for name, style in (("pass_1", "o--"), ("pass_1_2", "s-"), ("only_residual", "^:")):
            ax.plot(
                centres, [r[name] for r in rows], style, label=name.replace("_", " ").replace("1 2", "1 + 2")
            )
        for x, r in zip(centres, rows, strict=True):
            ax.annotate(str(r["n"]), (x, 0.02), ha="center", fontsize=7, color="grey")
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction recovered")
        ax.legend(fontsize=8)
    recovered = summary["recovered"]
    fig.suptitle(
        f"{title} {summary['n_injected']} injected: pass 1 {recovered['pass_1']:.0%}, "
        f"pass 1 + 2 {recovered['pass_1_2']:.0%}; {summary['uninjected']['new_sources_residual_pass']} new "
        "sources on the image without injections",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
