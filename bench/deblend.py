"""The first deblending pass: speed, fit quality, fluxes, and what the residual shows.

On simulated 512x512 six-band scenes, four with about 100 sources (20
galaxies and 4 stars per arcmin^2 to the depth: the speed target) and two at
the simulator's default density (about 280 sources: more blends), every true
source is given as a peak and the scene is deblended. Reported:

* wall time of `deblend` (and with the first-pass peaks of `detect_peaks`),
  separately for the two densities;
* median reduced chi^2 inside the footprints (per footprint, residual of the
  whole-scene model, good pixels);
* median relative i-band flux error of galaxies with i-band S/N > 50, isolated
  (true 1-sigma footprint overlaps no other source) and blended, for the model
  flux and the conserved (flux-redistributed) flux;
* with 10 % of the sources (S/N > 20) withheld from the peaks, the residual
  S/N at the withheld positions versus the same positions when every source
  is a peak.

Baselines measured in the same run: our own initialisation without any
iteration (``max_iter=0``), scarlet2 (the JAX scarlet on PyPI, install
with ``pip install -e '.[bench]'``) fitted to the same scenes and peaks, when
it is importable, and the turn-before deblender: today's deblending package
with the operators and fit loop it had before the speed work
(`BEFORE_FILES` as committed in `BEFORE_COMMIT`, read with ``git show`` into
a temporary copy of the package), on the same scenes and truth peaks, for
the time ratio at equal reduced chi^2 and flux accuracy. What today's
callers need of those files and they did not have yet is appended to them in
their own terms (`_BEFORE_ADDITIONS`: the likelihood, one band's
convolution, the transform precision, which for them is double only, and
no shared kernel transforms).
Ours is also run with double-precision transforms
(``fit_precision="float64"``) on the same scenes and peaks: the time and
accuracy of the default single-precision fit against double.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SNR_CUT = 50.0
WITHHELD_FRACTION = 0.1
WITHHELD_MIN_SNR = 20.0
SCARLET2_MAX_ITER = 300
SCARLET2_E_REL = 1e-4
BEFORE_COMMIT = "dc5ed5ee04d0b716d619bb8f03d448d19e74755f"
"""The last commit with the deblender's operators and fit loop before the speed work (issue 9)."""
BEFORE_FILES = ("monotonicity.py", "convolution.py", "adaprox.py", "blend.py", "component.py")
"""The files of the deblending package that the speed work changed."""


def _scenes(quick: bool):
    """(seed, kind, scene): "sparse" scenes (~100 sources on 512^2), then "dense" ones (default density)."""
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    size = 256 if quick else 512
    plan = (
        [(1, "sparse"), (101, "dense")]
        if quick
        else [(1, "sparse"), (2, "sparse"), (3, "sparse"), (4, "sparse"), (101, "dense"), (102, "dense")]
    )
    for seed, kind in plan:
        density = {"galaxy_density": 20.0, "star_density": 4.0} if kind == "sparse" else {}
        yield seed, kind, simulate_scene(seed, SimulationConfig(height=size, width=size, **density))


def _truth_properties(scene) -> dict:
    """i-band S/N, galaxy flag and blendedness of each true source."""
    truth = scene.truth
    band = scene.bands.index("i")
    snr = np.empty(len(truth))
    for index in range(len(truth)):
        stamp, (sy, sx) = truth.isolated_image(index, scene.shape)
        snr[index] = np.sqrt(np.sum(stamp[band] ** 2 / scene.variance[band, sy, sx]))
    sigma = np.sqrt(np.median(scene.variance, axis=(1, 2)))
    blended = np.zeros(len(truth), dtype=bool)
    for i, j in truth.overlapping_pairs(scene.shape, sigma, 1.0):
        blended[i] = blended[j] = True
    return {
        "snr": snr,
        "galaxy": ~truth.is_star,
        "blended": blended,
        "flux": np.asarray(truth.table["flux"])[:, band],
        "band": band,
    }


def _footprint_chi2(scene, model: np.ndarray, footprints: np.ndarray) -> np.ndarray:
    """Reduced chi^2 of each footprint (all bands, good pixels), residual of the whole-scene model."""
    weights = scene.weights()
    chi = np.where(weights > 0, (scene.clean_image() - model) ** 2 * weights, 0.0).sum(axis=0)
    used = (weights > 0).sum(axis=0)
    n = int(footprints.max())
    from scipy import ndimage

    index = np.arange(1, n + 1)
    total = ndimage.sum_labels(chi, footprints, index)
    count = ndimage.sum_labels(used, footprints, index)
    return total[count > 0] / count[count > 0]


def _flux_errors(props: dict, flux: np.ndarray) -> dict:
    """Relative i-band flux errors of the galaxy samples (by true-source index)."""
    error = (flux - props["flux"]) / props["flux"]
    samples = {
        "isolated": props["galaxy"] & ~props["blended"] & (props["snr"] > SNR_CUT),
        "blended": props["galaxy"] & props["blended"] & (props["snr"] > SNR_CUT),
    }
    return {name: error[sel] for name, sel in samples.items()}


def _residual_snr(scene, residual: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Multi-band matched-filter S/N of the residual, maximum within 1 px of each position."""
    from lsst.meas.extensions.residual.detection import detection_image
    from lsst.meas.extensions.residual.scene import Scene

    significance = detection_image(Scene(residual, scene.variance, scene.psf, scene.bands, mask=scene.mask))[
        0
    ]
    values = []
    for x, y in np.floor(xy + 0.5).astype(int):
        window = significance[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        values.append(float(window.max()))
    return np.array(values)


#: What today's callers need of `BEFORE_FILES` that those files did not have yet, appended to them in
#: the operators' own terms (double precision, the same arithmetic as the fit loop of that commit).
_BEFORE_ADDITIONS = {
    "convolution.py": """

# Added by bench.deblend for today's callers.
_BoxConvolverOfThisCommit = BoxConvolver


class KernelTransforms:
    # Today's callers share transforms between convolvers; here each convolver makes its own.
    def __init__(self, kernels, max_bytes=0):
        self.kernels = np.asarray(kernels, dtype=np.float64)


class BoxConvolver(_BoxConvolverOfThisCommit):
    # DeblendConfig.fit_precision: these operators transform in double precision only, and each
    # convolver transforms its kernels itself (no shared KernelTransforms).
    def __init__(self, kernels, shape, transform_dtype=None, transforms=None):
        super().__init__(kernels, shape)
        self.transform_dtype = np.dtype(np.float64)
        self.transforms = None

    # The least-squares spectra convolve a stack of morphologies with each band's kernel.
    def convolve_bands(self, images):
        transformed = fft.rfft2(images, s=self.fft_shape)
        hy, hx = self.half
        for band in range(self.nbands):
            full = fft.irfft2(transformed * self._kernel_fft[band], s=self.fft_shape)
            yield full[..., hy : hy + self.shape[0], hx : hx + self.shape[1]]
""",
    "blend.py": """

# Added by bench.deblend for today's callers: the likelihood as fit_blend computes it.
def log_likelihood(obs, components):
    convolved = obs.convolver.convolve(model_frame(obs, components))
    return -0.5 * float(np.sum(obs.weights * (convolved - obs.image) * (convolved - obs.image)))
""",
}


def _deblender_before(workdir: Path):
    """Today's deblending package with `BEFORE_FILES` from `BEFORE_COMMIT`, imported from ``workdir``.

    Returns the package module, or a sentence saying why it is unavailable
    (no git checkout, the commit is not in it, or its files no longer fit
    the rest of the package).
    """
    from lsst.meas.extensions.residual import deblending

    source = Path(deblending.__file__).parent
    repo = Path(__file__).resolve().parents[1]
    relative = source.resolve().relative_to(repo) if source.resolve().is_relative_to(repo) else None
    if relative is None:
        return f"not run: the package at {source} is not in the checkout {repo}"
    target = workdir / "deblending_before"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in BEFORE_FILES:
        try:
            text = subprocess.run(
                ["git", "-C", str(repo), "show", f"{BEFORE_COMMIT}:{(relative / name).as_posix()}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            return f"not run: cannot read {name} at {BEFORE_COMMIT[:10]} ({detail.strip()})"
        (target / name).write_text(text + _BEFORE_ADDITIONS.get(name, ""))
    # A sibling of the real package: its relative imports (..geometry, ...) resolve to the same modules.
    name = f"{deblending.__name__.rpartition('.')[0]}._deblending_before"
    spec = importlib.util.spec_from_file_location(
        name, target / "__init__.py", submodule_search_locations=[str(target)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (ImportError, AttributeError) as err:  # today's other files need what the old ones lack
        _forget_modules(name)
        return f"not run: the files of {BEFORE_COMMIT[:10]} do not fit today's package ({err})"
    return module


def _forget_modules(package: str) -> None:
    """Remove ``package`` and its submodules from `sys.modules`."""
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        del sys.modules[name]


def _ours(scene, props, config, package=None) -> dict:
    """Deblend at the true positions with ``package`` (default: ours) and measure the result."""
    if package is None:
        from lsst.meas.extensions.residual import deblending as package
    from lsst.meas.extensions.residual.deblending import detections_from_positions

    detections = detections_from_positions(scene, scene.truth.xy)
    start = time.perf_counter()
    result = package.deblend(scene, detections, config)
    seconds = time.perf_counter() - start
    row_of = {int(p): k for k, p in enumerate(result.catalog["peak_id"])}
    rows = np.array([row_of[i + 1] for i in range(len(scene.truth))])  # truth order: peak id = index + 1
    band = props["band"]
    return {
        "result": result,
        "seconds": seconds,
        # Initialisation, fit and flux shares of the blends, without the catalog and the patch model.
        "fit_seconds": float(result.timing.get("fit", np.nan)),
        "chi2": _footprint_chi2(scene, result.model, detections.footprints),
        "model_flux": _flux_errors(props, np.asarray(result.catalog["flux"])[rows, band]),
        "conserved_flux": _flux_errors(props, np.asarray(result.catalog["conserved_flux"])[rows, band]),
        "n_iter": np.asarray(result.catalog["n_iter"]),
        "footprints": detections.footprints,
    }


def _scarlet2_available() -> str | None:
    try:
        import scarlet2  # noqa: F401
    except Exception as err:  # ImportError, or JAX failing to initialise
        return f"{type(err).__name__}: {err}"
    return None


def _scarlet2(scene, props, footprints: np.ndarray, max_iter: int) -> dict:
    """Fit the scene with scarlet2's recommended set-up (quick-start guide) at the true positions."""
    import contextlib
    import io
    from functools import partial

    import jax.numpy as jnp
    import scarlet2 as s2
    from numpyro.distributions import constraints

    s2.set_validation(False)
    observation = s2.Observation(
        jnp.asarray(scene.clean_image()),
        jnp.asarray(scene.weights()),
        psf=s2.ArrayPSF(jnp.asarray(scene.psf)),
        channels=list(scene.bands),
    )
    frame = s2.Frame.from_observations(observation)
    observation.match(frame)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # scarlet2 prints a line per odd spectrum
        with s2.Scene(frame) as model_scene:
            for x, y in scene.truth.xy:
                center = jnp.array([y, x])
                try:
                    spectrum, morph = s2.init.from_gaussian_moments(observation, center, min_corr=0.99)
                except ValueError:
                    spectrum = s2.init.pixel_spectrum(observation, center)
                    morph = s2.init.compact_morphology()
                # Negative initial spectra turn the positivity constraint's transform into NaN.
                s2.Source(center, jnp.maximum(spectrum, 1e-3), morph)
    with s2.Parameters(model_scene) as parameters:
        for index, source in enumerate(model_scene.sources):
            s2.Parameter(
                source.spectrum,
                name=f"spectrum:{index}",
                constraint=constraints.positive,
                stepsize=partial(s2.relative_step, factor=0.05),
            )
            s2.Parameter(
                source.morphology,
                name=f"morph:{index}",
                constraint=constraints.unit_interval,
                stepsize=partial(s2.relative_step, factor=1e-3),
            )
    init_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fitted = model_scene.fit(
        observation, parameters, max_iter=max_iter, e_rel=SCARLET2_E_REL, progress_bar=False
    )
    fit_seconds = time.perf_counter() - start
    model = np.asarray(observation.render(fitted()))
    # Per-source models: flux, and the conserved flux with the same redistribution rule as ours.
    band = props["band"]
    image = np.where(scene.good, scene.clean_image(), 0.0)[band]
    rendered = [
        np.clip(np.asarray(observation.render(fitted.evaluate_source(s)))[band], 0, None)
        for s in fitted.sources
    ]
    total = np.sum(rendered, axis=0)
    model_flux, conserved = [], []
    for index, (x, y) in enumerate(scene.truth.xy):
        source_model = np.asarray(fitted.evaluate_source(fitted.sources[index]))[band]
        model_flux.append(float(source_model.sum()))
        fp = footprints == footprints[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]
        ratio = np.divide(rendered[index], total, out=np.zeros_like(total), where=total > 0)
        conserved.append(float(np.sum(ratio * image * fp)))
    return {
        "seconds": init_seconds + fit_seconds,
        "init_seconds": init_seconds,
        "fit_seconds": fit_seconds,
        "chi2": _footprint_chi2(scene, model, footprints),
        "model_flux": _flux_errors(props, np.array(model_flux)),
        "conserved_flux": _flux_errors(props, np.array(conserved)),
    }


def _median_abs(values: list[np.ndarray]) -> float | None:
    pooled = np.concatenate(values) if values else np.zeros(0)
    return round(float(np.median(np.abs(pooled))), 4) if len(pooled) else None


def _summarise(runs: list[dict]) -> dict:
    summary = {
        "seconds_per_scene": round(float(np.mean([r["seconds"] for r in runs])), 2),
        "median_footprint_reduced_chi2": round(
            float(np.median(np.concatenate([r["chi2"] for r in runs]))), 4
        ),
    }
    for kind in ("model_flux", "conserved_flux"):
        for sample in ("isolated", "blended"):
            values = [r[kind][sample] for r in runs]
            summary[f"{kind}_{sample}_median_rel_error"] = _median_abs(values)
            summary[f"{kind}_{sample}_n"] = int(sum(len(v) for v in values))
    return summary


def _plot_fluxes(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, sample in zip(axes, ("isolated", "blended"), strict=True):
        for label, (scene_runs, marker) in runs.items():
            errors = np.concatenate([r["conserved_flux"][sample] for r in scene_runs])
            snr = np.concatenate([r["snr"][sample] for r in scene_runs])
            ax.scatter(
                snr,
                errors,
                s=14,
                marker=marker,
                label=f"{label} (median |err| {np.median(np.abs(errors)):.3f})",
            )
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("true i-band S/N")
        ax.set_title(f"{sample} galaxies, S/N > {SNR_CUT:g}: conserved i-band flux")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("relative flux error")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False) -> dict:
    from lsst.meas.extensions.residual.deblending import (
        DeblendConfig,
        deblend,
        detections_from_positions,
        plot_deblend,
    )
    from lsst.meas.extensions.residual.deblending.monotonicity import Monotonicity
    from lsst.meas.extensions.residual.detection import detect_peaks

    out_dir.mkdir(parents=True, exist_ok=True)
    config = DeblendConfig(show_progress=False)
    scarlet2_missing = _scarlet2_available()
    scarlet2_scenes = 1 if quick else 2
    # The compiled monotonicity pass is built (or loaded from numba's cache) once per process: not timed.
    start = time.perf_counter()
    Monotonicity()(np.ones((3, 3)), (1, 1))
    jit_seconds = time.perf_counter() - start
    workdir = tempfile.TemporaryDirectory(prefix="bench-deblend-")
    before = _deblender_before(Path(workdir.name))
    ours, initial, theirs, befores, doubles, per_scene = [], [], [], [], [], []
    withheld_snr, complete_snr = [], []
    for index, (seed, kind, scene) in enumerate(_scenes(quick)):
        props = _truth_properties(scene)
        mine = _ours(scene, props, config)
        sample_snr = {
            "isolated": props["snr"][props["galaxy"] & ~props["blended"] & (props["snr"] > SNR_CUT)],
            "blended": props["snr"][props["galaxy"] & props["blended"] & (props["snr"] > SNR_CUT)],
        }
        mine["snr"] = sample_snr
        ours.append(mine)
        if not isinstance(before, str):
            previous = _ours(scene, props, before.DeblendConfig(show_progress=False), before)
            previous["snr"] = sample_snr
            previous["kind"] = kind
            # Largest model difference in noise sigma: round-off if the two fits are the same.
            sigma_weights = np.sqrt(scene.weights())
            previous["model_difference_sigma"] = float(
                np.max(np.abs(mine["result"].model - previous["result"].model) * sigma_weights)
            )
            befores.append(previous)
        double = _ours(scene, props, config.replace(fit_precision="float64"))
        double["snr"] = sample_snr
        double["kind"] = kind
        doubles.append(double)
        init = _ours(scene, props, DeblendConfig(show_progress=False, max_iter=0))
        init["snr"] = sample_snr
        initial.append(init)

        detections = detect_peaks(scene)
        start = time.perf_counter()
        deblend(scene, detections, config)
        detected_seconds = time.perf_counter() - start

        # Withhold some sources from the peaks: the residual must show them.
        rng = np.random.default_rng(seed)
        candidates = np.flatnonzero(props["snr"] > WITHHELD_MIN_SNR)
        n_withheld = max(1, int(round(WITHHELD_FRACTION * len(scene.truth))))
        withheld = rng.choice(candidates, size=min(n_withheld, len(candidates)), replace=False)
        kept = np.setdiff1d(np.arange(len(scene.truth)), withheld)
        partial_result = deblend(scene, detections_from_positions(scene, scene.truth.xy[kept]), config)
        withheld_snr.append(_residual_snr(scene, partial_result.residual, scene.truth.xy[withheld]))
        complete_snr.append(_residual_snr(scene, mine["result"].residual, scene.truth.xy[withheld]))
        if index == 0:
            plot_deblend(
                scene,
                mine["result"],
                out_dir / "deblend_truth_peaks.png",
                title=f"seed {seed}: every true source a peak",
            )
            plot_deblend(
                scene,
                partial_result,
                out_dir / "deblend_withheld.png",
                title=f"seed {seed}: {len(withheld)} sources withheld (white dots: truth)",
            )

        entry = {
            "seed": seed,
            "kind": kind,
            "n_true_sources": len(scene.truth),
            "n_detected_peaks": len(detections.peaks),
            "seconds_truth_peaks": round(mine["seconds"], 2),
            "seconds_detected_peaks": round(detected_seconds, 2),
            "median_iterations": float(np.median(mine["n_iter"])),
            "median_footprint_reduced_chi2": round(float(np.median(mine["chi2"])), 4),
            "double_precision_seconds_truth_peaks": round(doubles[-1]["seconds"], 2),
            "double_precision_median_footprint_reduced_chi2": round(float(np.median(doubles[-1]["chi2"])), 4),
        }
        if befores and len(befores) == len(ours):
            entry["before_seconds_truth_peaks"] = round(befores[-1]["seconds"], 2)
            entry["before_over_ours_time"] = round(befores[-1]["seconds"] / mine["seconds"], 2)
            entry["before_over_ours_fit_time"] = round(befores[-1]["fit_seconds"] / mine["fit_seconds"], 2)
            entry["before_median_footprint_reduced_chi2"] = round(float(np.median(befores[-1]["chi2"])), 4)
            entry["max_model_difference_sigma"] = float(f"{befores[-1]['model_difference_sigma']:.2e}")
        if scarlet2_missing is None and index < scarlet2_scenes:
            other = _scarlet2(scene, props, mine["footprints"], 50 if quick else SCARLET2_MAX_ITER)
            other["snr"] = sample_snr
            theirs.append(other)
            entry["scarlet2_seconds"] = round(other["seconds"], 2)
            entry["scarlet2_median_footprint_reduced_chi2"] = round(float(np.median(other["chi2"])), 4)
        per_scene.append(entry)
        print(json.dumps(entry), flush=True)

    withheld_all, complete_all = np.concatenate(withheld_snr), np.concatenate(complete_snr)

    def seconds(kind: str, key: str) -> float | None:
        values = [e[key] for e in per_scene if e["kind"] == kind]
        return round(float(np.mean(values)), 2) if values else None

    summary = {
        "scenes": len(per_scene),
        "scene_size": 256 if quick else 512,
        "seconds_per_scene": {
            kind: {
                "n_true_sources": int(np.mean([e["n_true_sources"] for e in per_scene if e["kind"] == kind])),
                "truth_peaks": seconds(kind, "seconds_truth_peaks"),
                "detected_peaks": seconds(kind, "seconds_detected_peaks"),
            }
            for kind in ("sparse", "dense")
        },
        "ours": _summarise(ours),
        "init_only": _summarise(initial),
        "withheld": {
            "n": int(len(withheld_all)),
            "median_residual_snr_withheld": round(float(np.median(withheld_all)), 2),
            "fraction_residual_snr_above_5": round(float(np.mean(withheld_all > 5)), 3),
            "median_residual_snr_same_positions_all_peaks": round(float(np.median(complete_all)), 2),
        },
        "per_scene": per_scene,
    }
    if theirs:
        summary["scarlet2"] = _summarise(theirs)
        summary["scarlet2"]["scenes"] = len(theirs)
        summary["scarlet2"]["max_iter"] = 50 if quick else SCARLET2_MAX_ITER
        summary["scarlet2"]["fit_seconds_per_scene"] = round(
            float(np.mean([t["fit_seconds"] for t in theirs])), 2
        )
        summary["ours_on_scarlet2_scenes"] = _summarise(ours[: len(theirs)])
    else:
        summary["scarlet2"] = f"not run: {scarlet2_missing}"
    summary["double_precision"] = _summarise(doubles)
    summary["double_over_single_time"] = {
        kind: round(
            sum(d["seconds"] for d in doubles if d["kind"] == kind)
            / sum(o["seconds"] for o, d in zip(ours, doubles, strict=True) if d["kind"] == kind),
            2,
        )
        for kind in ("sparse", "dense")
    }
    summary["monotonicity_first_call_seconds"] = round(jit_seconds, 2)
    if befores:
        summary["before"] = _summarise(befores)
        summary["before"]["commit"] = BEFORE_COMMIT
        summary["before"]["files"] = list(BEFORE_FILES)
        summary["before"]["max_model_difference_sigma"] = float(
            f"{max(b['model_difference_sigma'] for b in befores):.2e}"
        )
        for key, name in (("seconds", "before_over_ours_time"), ("fit_seconds", "before_over_ours_fit_time")):
            summary[name] = {
                kind: round(
                    sum(b[key] for b in befores if b["kind"] == kind)
                    / sum(o[key] for o, b in zip(ours, befores, strict=True) if b["kind"] == kind),
                    2,
                )
                for kind in ("sparse", "dense")
            }
        _forget_modules(before.__name__)
    else:
        summary["before"] = before
    workdir.cleanup()

    runs = {"ours": (ours, "o"), "init only": (initial, "x")}
    if theirs:
        runs["scarlet2"] = (theirs, "^")
    _plot_fluxes(runs, out_dir / "flux_errors.png")

    o, i = summary["ours"], summary["init_only"]
    for kind, t in summary["seconds_per_scene"].items():
        print(
            f"deblend, {kind} scenes (~{t['n_true_sources']} sources): "
            f"{t['truth_peaks']} s/scene with truth peaks, {t['detected_peaks']} s/scene with detected peaks "
            "(target for ~100 sources on 512^2: <= 30 s)"
        )
    print(
        f"median footprint reduced chi2: {o['median_footprint_reduced_chi2']:.3f} (target <= 1.3); "
        f"fit/init ratio {o['median_footprint_reduced_chi2'] / i['median_footprint_reduced_chi2']:.3f}"
    )
    for sample, target in (("isolated", 0.03), ("blended", 0.10)):
        error, n = o[f"conserved_flux_{sample}_median_rel_error"], o[f"conserved_flux_{sample}_n"]
        print(
            f"conserved flux, {sample} galaxies S/N>{SNR_CUT:g}: "
            f"median |err| {error} (n={n}, target <= {target}); "
            f"model flux {o[f'model_flux_{sample}_median_rel_error']}"
        )
    w = summary["withheld"]
    print(
        f"withheld sources: median residual S/N {w['median_residual_snr_withheld']} "
        f"({w['fraction_residual_snr_above_5']:.0%} above 5) "
        f"vs {w['median_residual_snr_same_positions_all_peaks']} when they are peaks"
    )
    if theirs:
        s, mine = summary["scarlet2"], summary["ours_on_scarlet2_scenes"]
        print(
            f"scarlet2 ({s['scenes']} scene(s), max_iter {s['max_iter']}): "
            f"{s['seconds_per_scene']:.1f} s/scene, "
            f"ours/scarlet2 time ratio {mine['seconds_per_scene'] / s['seconds_per_scene']:.3f}; "
            f"chi2 {s['median_footprint_reduced_chi2']:.3f} "
            f"vs ours {mine['median_footprint_reduced_chi2']:.3f}; "
            f"conserved flux isolated {s['conserved_flux_isolated_median_rel_error']} "
            f"vs ours {mine['conserved_flux_isolated_median_rel_error']}, "
            f"blended {s['conserved_flux_blended_median_rel_error']} "
            f"vs ours {mine['conserved_flux_blended_median_rel_error']}"
        )
    else:
        print(f"scarlet2 baseline {summary['scarlet2']}")
    d, ratio = summary["double_precision"], summary["double_over_single_time"]
    print(
        f"double-precision transforms (fit_precision=float64), same scenes and peaks: time double/single "
        f"{ratio['sparse']}x on sparse scenes, {ratio['dense']}x on dense ones; chi2 "
        f"{d['median_footprint_reduced_chi2']:.4f} vs {o['median_footprint_reduced_chi2']:.4f}; conserved "
        f"flux isolated {d['conserved_flux_isolated_median_rel_error']} vs "
        f"{o['conserved_flux_isolated_median_rel_error']}, blended "
        f"{d['conserved_flux_blended_median_rel_error']} vs {o['conserved_flux_blended_median_rel_error']}"
    )
    if befores:
        b, ratio, fit = (
            summary["before"],
            summary["before_over_ours_time"],
            summary["before_over_ours_fit_time"],
        )
        flux = {
            sample: f"{b[f'conserved_flux_{sample}_median_rel_error']} vs "
            f"{o[f'conserved_flux_{sample}_median_rel_error']}"
            for sample in ("isolated", "blended")
        }
        print(
            f"turn-before deblender ({BEFORE_COMMIT[:10]}: {', '.join(BEFORE_FILES)}), same scenes, peaks: "
            f"time before/ours {ratio['sparse']}x on sparse scenes, {ratio['dense']}x on dense ones "
            f"(target >= 2; the blends' fits alone {fit['sparse']}x and {fit['dense']}x); "
            f"chi2 {b['median_footprint_reduced_chi2']:.4f} vs ours "
            f"{o['median_footprint_reduced_chi2']:.4f}; conserved flux isolated {flux['isolated']}, "
            f"blended {flux['blended']}; largest model difference {b['max_model_difference_sigma']:.1e} σ; "
            f"first monotonicity call (numba compile or cache load, once per process) "
            f"{summary['monotonicity_first_call_seconds']} s"
        )
    else:
        print(f"turn-before deblender {summary['before']}")
    (out_dir / "deblend.json").write_text(json.dumps(summary, indent=2))
    return {k: v for k, v in summary.items() if k != "per_scene"}
