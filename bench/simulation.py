"""Simulator speed: a 512x512 six-band 10-year scene on one core (target <= 2 s).

Baseline measured in the same run: drawing the same galaxies the direct galsim
way (each galaxy's bulge + disk, with their shears and per-band fluxes,
convolved with each band's PSF and drawn by galsim into the same stamp), on a
subset, scaled to the whole population.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

TARGET_SECONDS = 2.0


def _galsim_direct_seconds(scene, psf, population, n_galaxies: int) -> float:
    """Seconds per galaxy to draw all bands with galsim's own convolution."""
    import galsim
    from lsst.meas.extensions.residual.simulation.render import _BULGE_TRUNCATION

    galaxies = np.flatnonzero(np.asarray(population["class"]) == "galaxy")[:n_galaxies]
    stamp_sizes = np.asarray(scene.truth.table["stamp_height"])
    start = time.perf_counter()
    for index in galaxies:
        row = population[index]
        bulge = galsim.DeVaucouleurs(
            half_light_radius=float(row["bulge_hlr"]), trunc=_BULGE_TRUNCATION * float(row["bulge_hlr"])
        ).shear(g1=float(row["bulge_g1"]), g2=float(row["bulge_g2"]))
        disk = galsim.Exponential(half_light_radius=float(row["disk_hlr"])).shear(
            g1=float(row["disk_g1"]), g2=float(row["disk_g2"])
        )
        size = int(stamp_sizes[index])
        for band_index in range(len(scene.bands)):
            bulge_flux = float(row["bulge_flux"][band_index])
            disk_flux = float(row["flux"][band_index]) - bulge_flux
            galaxy = galsim.Add([bulge.withFlux(bulge_flux), disk.withFlux(disk_flux)])
            galsim.Convolve(galaxy, psf.profiles[band_index]).drawImage(
                nx=size, ny=size, scale=scene.pixel_scale
            )
    return (time.perf_counter() - start) / max(len(galaxies), 1)


def _population_of(seed: int, config):
    """The PSF and population `simulate_scene` draws for ``seed``."""
    from lsst.meas.extensions.residual.simulation.simulate import draw_psf_and_population

    return draw_psf_and_population(np.random.default_rng(seed), config)


def run(out_dir: Path, quick: bool = False) -> dict:
    from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

    out_dir.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(height=512, width=512)
    seeds = list(range(100, 102 if quick else 105))
    with threadpool_limits(1):
        simulate_scene(99, config)  # warm the colour tables and galsim caches
        times, counts = [], []
        for seed in seeds:
            start = time.perf_counter()
            scene = simulate_scene(seed, config)
            times.append(time.perf_counter() - start)
            counts.append(len(scene.truth))
        # The same population again, to time the direct galsim way on it.
        psf, population = _population_of(seeds[-1], config)
        per_galaxy = _galsim_direct_seconds(scene, psf, population, 10 if quick else 30)
    n_gal = int((np.asarray(scene.truth.table["class"]) == "galaxy").sum())
    baseline = per_galaxy * n_gal
    result = {
        "scene": "512x512, ugrizy, 10yr, default densities, 1 thread",
        "seconds_per_scene_mean": round(float(np.mean(times)), 3),
        "seconds_per_scene_max": round(float(np.max(times)), 3),
        "sources_per_scene_mean": round(float(np.mean(counts)), 1),
        "target_seconds": TARGET_SECONDS,
        "ratio_to_target": round(float(np.mean(times)) / TARGET_SECONDS, 3),
        "galsim_direct_seconds_estimate": round(baseline, 2),
        "galsim_direct_over_ours": round(baseline / float(np.mean(times)), 2),
    }
    print(
        f"simulate 512^2 x 6 bands: {result['seconds_per_scene_mean']:.2f} s/scene mean "
        f"(max {result['seconds_per_scene_max']:.2f} s, {result['sources_per_scene_mean']:.0f} sources), "
        f"{result['ratio_to_target']:.2f} x the 2 s target; drawing the same galaxies with galsim's own "
        f"convolution: ~{baseline:.1f} s (ratio {result['galsim_direct_over_ours']:.2f})"
    )
    (out_dir / "simulation.json").write_text(json.dumps(result, indent=2))
    return result
