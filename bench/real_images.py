"""Real survey images: the DECaLS cutout and the HSC COSMOS blends through import, the chain and
injection–recovery (issue 12).

From ``../shared/fixtures/real`` (skipped, saying so, where it is absent):

* DECaLS DR7 g,r,z 512² (0.262″, nanomaggies, image only): ``import`` with
  the variance and the PSF estimated; ``run`` with the shipped residual
  package (its figure, ``run_decals/run.png``); 50 default injections
  (``inject --seed 1``: the simulator's galaxies and stars, 20% stars, from
  the 5σ point-source depth − 3 mag to the depth, drawn with the estimated
  PSF) and their recovery (``evaluate --injected``). Reported: the PSF FWHM
  per band, the recovery by pass 1 and pass 1 + 2, the share of the
  recovered found only by the residual pass, and the residual pass's new
  sources on the image without injections. Issue 12's target: at least 60%
  of the injections recovered.
* HSC COSMOS blend ``hsc_cosmos_35`` (g,r,i,z,y, 0.168″, counts at zero point
  27, with its own variance and PSFs): ``scene_from_arrays`` and ``run``.

The package is the shipped one that takes band subsets (network v2,
``residual_v2``): these bands and pixel scales are what it was made for.
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "real"
INJECTION_SEED = 1
N_INJECTED = 50
RECOVERY_TARGET = 0.6
#: What the report keeps of a run's summary.json.
_RUN_KEYS = ("first_pass_peaks", "new_sources", "new_artefacts", "final_sources", "seconds")


def _run(argv: list[str]) -> int:
    from lsst.meas.extensions.residual.cli.main import main

    return main(argv)


def _decals(out_dir: Path, model: Path, quick: bool) -> dict:
    from lsst.meas.extensions.residual.realdata import import_fits
    from lsst.meas.extensions.residual.scene import write_scene

    decals = FIXTURES / "decals"
    scene, report = import_fits({b: str(decals / f"img_{b}.fits") for b in "grz"}, unit="nanomaggies")
    scene_path = out_dir / "decals.fits"
    write_scene(scene, scene_path, overwrite=True)
    result: dict = {
        "psf_fwhm_arcsec": {b: report.psf[b]["fwhm_arcsec"] for b in scene.bands},
        "psf_stars": {b: report.psf[b]["n_stars"] for b in scene.bands},
        "sky_sigma_njy": {b: round(v, 3) for b, v in report.sky_sigma_njy.items()},
    }
    _chain(scene_path, model, out_dir / "run_decals", result)
    if "refused" in result:
        return result
    injected = out_dir / "decals_injected.fits"
    n = 10 if quick else N_INJECTED
    _run(
        [
            "inject",
            str(scene_path),
            "--n",
            str(n),
            "--seed",
            str(INJECTION_SEED),
            "--out",
            str(injected),
            "--overwrite",
        ]
    )
    recovery_dir = out_dir / "recovery_decals"
    _run(
        [
            "evaluate",
            "--injected",
            str(injected),
            "--original",
            str(scene_path),
            "--model",
            str(model),
            "--out",
            str(recovery_dir),
            "--overwrite",
        ]
    )
    recovery = json.loads((recovery_dir / "recovery.json").read_text())
    result["recovery"] = {k: v for k, v in recovery.items() if k != "per_source"}
    result["recovery_target_met"] = recovery["recovered"]["pass_1_2"] >= RECOVERY_TARGET
    return result


def _hsc(out_dir: Path, model: Path) -> dict:
    import numpy as np
    from lsst.meas.extensions.residual.realdata import scene_from_scarlet_npz
    from lsst.meas.extensions.residual.scene import write_scene

    source = FIXTURES / "hsc" / "hsc_cosmos_35.npz"
    scene, report = scene_from_scarlet_npz(source, pixel_scale=0.168)
    with np.load(source) as data:
        catalog_peaks = len(data["catalog"])
    scene_path = out_dir / "hsc_cosmos_35.fits"
    write_scene(scene, scene_path, overwrite=True)
    result: dict = {
        "psf_fwhm_arcsec": {b: report.psf[b]["fwhm_arcsec"] for b in scene.bands},
        "peaks_in_the_file": catalog_peaks,
    }
    return _chain(scene_path, model, out_dir / "run_hsc", result)


def _chain(scene_path: Path, model: Path, run_dir: Path, result: dict) -> dict:
    """``run`` on a scene; its counts (``result["run"]``), or why it was refused."""
    if _run(["run", str(scene_path), "--model", str(model), "--out", str(run_dir), "--overwrite"]) != 0:
        result["refused"] = "run exited with status 2 (see its message above)"
        return result
    summary = json.loads((run_dir / "summary.json").read_text())
    result["run"] = {k: summary.get(k) for k in _RUN_KEYS}
    return result


def run(out_dir: Path, quick: bool = False) -> dict:
    import logging

    from lsst.meas.extensions.residual.network import band_subset_model_path

    logging.getLogger("lsst.meas.extensions.residual").setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not FIXTURES.exists():
        print(f"No real-image fixtures at {FIXTURES}: skipped.")
        return {"skipped": f"no fixtures at {FIXTURES}"}
    model = band_subset_model_path("residual")
    if model is None:
        print("No shipped package takes band subsets: skipped.")
        return {"skipped": "no shipped package takes band subsets"}
    report = {"package": model.name, "decals": _decals(out_dir, model, quick), "hsc": _hsc(out_dir, model)}
    decals = report["decals"]
    print(f"DECaLS g,r,z: PSF FWHM {decals['psf_fwhm_arcsec']} arcsec from {decals['psf_stars']} stars")
    if "recovery" in decals:
        recovery = decals["recovery"]
        recovered = recovery["recovered"]
        print(
            f"  injections: {recovery['n_injected']}, recovered by pass 1 {recovered['pass_1']:.2f}, "
            f"by pass 1 + 2 {recovered['pass_1_2']:.2f} (target >= {RECOVERY_TARGET}: "
            f"{'met' if decals['recovery_target_met'] else 'NOT met'}); "
            f"only by the residual pass: {recovery['share_of_recovered_only_by_the_residual_pass']}"
        )
        new = recovery["uninjected"]["new_sources_residual_pass"]
        print(f"  new sources on the image without injections: {new}")
    else:
        print(f"  {decals.get('refused')}")
    hsc = report["hsc"]
    print(f"HSC COSMOS 35: PSF FWHM {hsc['psf_fwhm_arcsec']}; run: {hsc.get('run', hsc.get('refused'))}")
    (out_dir / "real_images.json").write_text(json.dumps(report, indent=2, default=str))
    return report
