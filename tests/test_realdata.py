"""Import of per-band survey images: units, grids, variance and PSF estimation (simulated files and
the real fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from lsst.meas.extensions.residual.cli.main import main
from lsst.meas.extensions.residual.errors import InputError
from lsst.meas.extensions.residual.realdata import (
    PsfEstimationError,
    import_fits,
    njy_per_unit,
    psf_fwhm,
    scene_from_arrays,
)
from lsst.meas.extensions.residual.scene import read_scene
from lsst.meas.extensions.residual.simulation import SimulationConfig, simulate_scene

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "real"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.exists(), reason=f"the real-image fixtures ({FIXTURES}) are not here"
)
BANDS = ("g", "r", "i")


def _wcs(scale: float, shape: tuple[int, int], shift: float = 0.0) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [shape[1] / 2 + shift, shape[0] / 2]
    wcs.wcs.cd = np.diag([-scale / 3600.0, scale / 3600.0])
    return wcs


@pytest.fixture(scope="module")
def star_field(tmp_path_factory):
    """A simulated 256² g,r,i star field written as one FITS file per band (nanomaggies, TAN WCS)."""
    scene = simulate_scene(
        5, SimulationConfig(height=256, width=256, bands="gri", star_density=120.0, galaxy_density=15.0)
    )
    folder = tmp_path_factory.mktemp("field")
    factor = njy_per_unit("nanomaggies")
    header = _wcs(0.2, scene.shape).to_header()
    files = {}
    for index, band in enumerate(scene.bands):
        for name, data in (
            ("image", scene.image[index] / factor),
            ("var", scene.variance[index] / factor**2),
            ("psf", scene.psf[index]),
        ):
            path = folder / f"{name}_{band}.fits"
            fits.PrimaryHDU(data.astype(np.float32), header=header if name != "psf" else None).writeto(path)
            files[name, band] = str(path)
    return scene, files, folder


def test_units_convert_to_njy():
    assert njy_per_unit("nJy") == 1.0
    assert njy_per_unit("nmgy") == pytest.approx(3631.0, rel=1e-4)  # AB 22.5
    assert njy_per_unit("counts", 27.0) == pytest.approx(57.544, rel=1e-4)  # HSC coadds
    for unit, zeropoint, message in (
        ("counts", None, "need a zero point"),
        ("nanomaggies", 22.5, "zero point goes with images in counts"),
        ("erg", None, "Unknown image unit 'erg'"),
    ):
        with pytest.raises(InputError, match=message):
            njy_per_unit(unit, zeropoint)


def test_a_known_source_keeps_its_flux_in_njy():
    # A point source of AB 20 on an image in counts at zero point 27: 7 mag above one count.
    image = np.zeros((41, 41))
    image[20, 20] = 10 ** (0.4 * 7.0)
    psf = np.zeros((5, 5))
    psf[2, 2] = 1.0
    scene, report = scene_from_arrays(
        {"r": image},
        pixel_scale=0.168,
        variance={"r": np.ones_like(image)},
        psf={"r": psf},
        unit="counts",
        zeropoint=27.0,
    )
    assert scene.image.sum() == pytest.approx(10 ** (-0.4 * (20.0 - 31.4)), rel=1e-5)  # AB 20 in nJy
    assert scene.metadata["BUNIT"] == "nJy" and scene.metadata["ZEROPT"] == 31.4
    assert scene.variance[0, 0, 0] == pytest.approx(report.njy_per_unit**2, rel=1e-6)
    assert scene.pixel_scale == 0.168 and scene.metadata["VARSRC_R"] == "given"


def test_import_with_variance_and_psf_keeps_them(star_field, tmp_path):
    scene, files, _ = star_field
    imported, report = import_fits(
        {b: files["image", b] for b in BANDS},
        variance={b: files["var", b] for b in BANDS},
        psf={b: files["psf", b] for b in BANDS},
        unit="nanomaggies",
    )
    np.testing.assert_allclose(imported.image, scene.image, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(imported.variance, scene.variance, rtol=1e-5)
    np.testing.assert_allclose(imported.psf, scene.psf, atol=1e-7)
    assert imported.pixel_scale == pytest.approx(0.2, rel=1e-6)  # from the WCS
    assert imported.metadata["CTYPE1"] == "RA---TAN" and imported.metadata["PSFSRC_G"] == "given"
    assert report.sources["g"].endswith("image_g.fits[PRIMARY]")
    # The scene file keeps it all, the WCS included.
    from lsst.meas.extensions.residual.scene import write_scene

    write_scene(imported, tmp_path / "scene.fits")
    back = read_scene(tmp_path / "scene.fits")
    assert back.metadata["CRVAL1"] == pytest.approx(150.1) and back.pixel_scale == imported.pixel_scale


def test_estimated_variance_and_psf_recover_the_known_ones(star_field):
    scene, files, _ = star_field
    imported, report = import_fits({b: files["image", b] for b in BANDS}, unit="nanomaggies")
    for index, band in enumerate(BANDS):
        # The sky σ: the simulated variance away from the sources.
        true_sky = np.sqrt(np.percentile(scene.variance[index], 5))
        assert report.sky_sigma_njy[band] == pytest.approx(true_sky, rel=0.1)
        assert report.variance[band].startswith("estimated: sky")
        # The PSF within 5% of the true FWHM, from at least the required stars.
        true_fwhm = psf_fwhm(scene.psf[index])
        assert report.psf[band]["fwhm_arcsec"] / 0.2 == pytest.approx(true_fwhm, rel=0.05)
        assert report.psf[band]["n_stars"] == len(report.psf[band]["stars"]) >= 5
        assert imported.metadata[f"PSFSRC_{band.upper()}"] == "estimated"
        assert imported.psf[index].sum() == pytest.approx(1.0, abs=1e-5)


def test_misaligned_grids_and_mismatched_planes_are_refused(star_field, tmp_path):
    scene, files, _ = star_field
    shifted = tmp_path / "image_r_shifted.fits"
    header = _wcs(0.2, scene.shape, shift=0.5).to_header()
    fits.PrimaryHDU(fits.getdata(files["image", "r"]), header=header).writeto(shifted)
    with pytest.raises(InputError, match=r"Band r's pixel grid is not band g's: .* 0\.5 px apart"):
        import_fits({"g": files["image", "g"], "r": str(shifted)}, unit="nanomaggies")
    with pytest.raises(InputError, match="both a variance and an inverse variance"):
        import_fits(
            {"g": files["image", "g"]},
            variance={"g": files["var", "g"]},
            inverse_variance={"g": files["var", "g"]},
            unit="nanomaggies",
        )
    with pytest.raises(InputError, match=r"Unknown band\(s\) HSC-G.*band map"):
        import_fits({"HSC-G": files["image", "g"]}, unit="nanomaggies")
    renamed, _ = import_fits(
        {"HSC-G": files["image", "g"]},
        psf={"HSC-G": files["psf", "g"]},
        variance={"HSC-G": files["var", "g"]},
        band_map={"HSC-G": "g"},
        unit="nanomaggies",
    )
    assert renamed.bands == ("g",)
    with pytest.raises(InputError, match=r"no HDU 'SCI'"):
        import_fits({"g": files["image", "g"] + "[SCI]"}, unit="nanomaggies")


def test_too_few_stars_are_refused_naming_the_count(star_field):
    _, files, _ = star_field
    with pytest.raises(
        PsfEstimationError, match=r"Band g: \d+ bright, isolated, unsaturated stars .* at least 500"
    ):
        import_fits({"g": files["image", "g"]}, unit="nanomaggies", min_psf_stars=500)


def test_import_command_writes_the_scene_and_its_report(star_field, tmp_path, capsys):
    _, files, _ = star_field
    out = tmp_path / "scene.fits"
    argv = ["import", "--unit", "nanomaggies", "--out", str(out)]
    argv += [f"--band={b}={files['image', b]}" for b in BANDS] + [f"--psf=g={files['psf', 'g']}"]
    assert main(argv) == 0
    scene = read_scene(out)
    report = json.loads(out.with_suffix(".import.json").read_text())
    assert scene.bands == BANDS and report["psf"]["g"]["source"] == "given"
    assert report["psf"]["r"]["source"] == "estimated" and len(report["psf"]["r"]["stars"]) >= 5
    assert main(argv) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["import", "--band", "g", "--out", str(tmp_path / "x.fits")]) == 2
    assert "give NAME=VALUE" in capsys.readouterr().err


@needs_fixtures
def test_the_decals_cutout_imports_with_its_variance_and_psf_estimated():
    decals = FIXTURES / "decals"
    scene, report = import_fits({b: str(decals / f"img_{b}.fits") for b in "grz"}, unit="nanomaggies")
    assert scene.bands == ("g", "r", "z") and scene.pixel_scale == pytest.approx(0.262, rel=1e-3)
    for band in scene.bands:
        # DECaLS DR7 seeing: about 1.1-1.6".
        assert 1.0 < report.psf[band]["fwhm_arcsec"] < 1.7 and report.psf[band]["n_stars"] >= 5
        assert report.sky_sigma_njy[band] > 0


@needs_fixtures
def test_the_hsc_blend_becomes_a_scene_with_its_own_variance_and_psfs(tmp_path):
    from lsst.meas.extensions.residual.realdata import scene_from_scarlet_npz

    source = FIXTURES / "hsc" / "hsc_cosmos_35.npz"
    scene, report = scene_from_scarlet_npz(source, pixel_scale=0.168)
    assert scene.bands == ("g", "r", "i", "z", "y") and scene.psf.shape == (5, 43, 43)
    assert all(report.psf[b]["source"] == "given" for b in scene.bands)
    assert all(report.variance[b] == "given" for b in scene.bands)
    with np.load(source) as data:  # counts at zero point 27: 57.5 nJy each
        np.testing.assert_allclose(scene.image[0].sum(), data["images"][0].sum() * 57.544, rtol=1e-3)
    # HSC's seeing in COSMOS: 0.5-0.8".
    assert all(0.4 < report.psf[b]["fwhm_arcsec"] < 1.0 for b in scene.bands)
    np.savez(tmp_path / "no_psf.npz", images=np.zeros((1, 8, 8)), filters=np.array(["r"]))
    with pytest.raises(InputError, match="has no psfs array"):
        scene_from_scarlet_npz(tmp_path / "no_psf.npz", pixel_scale=0.168)


# --- injection and recovery --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_scene():
    """A 128² g,r,i scene as a real one comes: no truth."""
    import dataclasses

    scene = simulate_scene(9, SimulationConfig(height=128, width=128, bands="gri"))
    return dataclasses.replace(scene, truth=None)


def test_injection_adds_the_truth_it_records(plain_scene):
    import dataclasses

    from lsst.meas.extensions.residual.realdata import InjectionConfig, inject_sources, point_source_depth

    # A sky-only variance (as `import` estimates without a gain): no noise or variance is added.
    sky_only = dataclasses.replace(
        plain_scene,
        metadata={
            **plain_scene.metadata,
            **{f"VARSRC_{b.upper()}": "estimated: sky; no source Poisson term" for b in "GRI"},
        },
    )
    injected = inject_sources(sky_only, 3, InjectionConfig(n_sources=20))
    assert len(injected.truth) == 20 and injected.metadata["INJN"] == 20
    np.testing.assert_allclose(
        injected.image - sky_only.image, injected.truth.render(sky_only.shape), atol=1e-2
    )
    np.testing.assert_array_equal(injected.variance, sky_only.variance)
    assert [injected.metadata[f"INJGAIN_{b}"] for b in "GRI"] == [0.0, 0.0, 0.0]
    # Magnitudes from the 5σ point-source depth - 3 to the depth, in i.
    depth = point_source_depth(sky_only)[2]
    mag_i = np.asarray(injected.truth.table["mag"])[:, 2]
    assert injected.metadata["INJREF"] == "i" and injected.metadata["DEPTH_I"] == pytest.approx(
        depth, abs=1e-3
    )
    assert np.all((mag_i >= depth - 3 - 1e-6) & (mag_i < depth + 1e-6))
    assert 2 <= np.sum(injected.truth.is_star) <= 6  # 20% of 20
    # A star drawn with the scene's PSF is that PSF.
    star = int(np.flatnonzero(injected.truth.is_star)[0])
    stamp, _ = injected.truth.isolated_image(star, sky_only.shape)
    assert psf_fwhm(stamp[2] / stamp[2].sum()) == pytest.approx(psf_fwhm(sky_only.psf[2]), rel=0.05)
    # With the simulator's Poisson term in the variance, the gain is measured and the variance grows.
    from lsst.meas.extensions.residual.realdata import scene_gain

    gain = scene_gain(plain_scene)
    assert np.all(gain > 0)
    noisy = inject_sources(plain_scene, 3, InjectionConfig(n_sources=20))
    added = noisy.truth.render(plain_scene.shape)
    np.testing.assert_allclose(
        noisy.variance - plain_scene.variance, added / gain[:, None, None], rtol=1e-3, atol=1e-3
    )
    # The same seed, the same injections.
    again = inject_sources(plain_scene, 3, InjectionConfig(n_sources=20))
    np.testing.assert_array_equal(again.truth.xy, noisy.truth.xy)
    np.testing.assert_array_equal(again.image, noisy.image)


def test_injections_near_sources_are_blends(plain_scene):
    from lsst.meas.extensions.residual.detection import detect_peaks
    from lsst.meas.extensions.residual.realdata import InjectionConfig, inject_sources
    from scipy.spatial import cKDTree

    injected = inject_sources(plain_scene, 4, InjectionConfig(n_sources=10, near_sources=True))
    fwhm = psf_fwhm(plain_scene.psf[2])
    distance = cKDTree(detect_peaks(plain_scene).xy).query(injected.truth.xy)[0] / fwhm
    assert np.all(distance <= 3.0 + 1e-6) and injected.metadata["INJNEAR"]
    with pytest.raises(ValueError, match="bright < faint"):
        InjectionConfig(mag_range=(24.0, 22.0))


def test_recovery_counts_what_the_chain_finds_of_the_injections(plain_scene, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _tasks_helpers import make_tiny_package
    from lsst.meas.extensions.residual.scene import write_scene

    package = make_tiny_package(tmp_path / "tiny.zip", bands=("g", "r", "i"))
    write_scene(plain_scene, tmp_path / "scene.fits")
    assert (
        main(
            [
                "inject",
                str(tmp_path / "scene.fits"),
                "--n",
                "12",
                "--seed",
                "5",
                "--out",
                str(tmp_path / "inj.fits"),
            ]
        )
        == 0
    )
    out = tmp_path / "recovery"
    argv = ["evaluate", "--injected", str(tmp_path / "inj.fits"), "--original", str(tmp_path / "scene.fits")]
    assert main([*argv, "--model", str(package), "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "recovery.json").read_text())
    assert (out / "recovery.png").exists() and summary["n_injected"] == 12
    recovered = summary["recovered"]
    # The first pass finds the injected sources well above the depth; pass 1 + 2 finds no fewer.
    per_source = summary["per_source"]
    bright = np.asarray(per_source["mag"]) < np.percentile(per_source["mag"], 50)
    assert np.mean(np.asarray(per_source["pass_1"])[bright]) >= 0.5
    assert recovered["pass_1_2"] >= recovered["pass_1"] and recovered["only_residual"] == pytest.approx(
        recovered["pass_1_2"] - recovered["pass_1"]
    )
    assert (
        sum(r["n"] for r in summary["vs_magnitude"])
        == 12
        == sum(r["n"] for r in summary["vs_separation_fwhm"])
    )
    assert summary["uninjected"]["first_pass_sources"] > 0
    assert main([*argv[:3], "--out", str(tmp_path / "x")]) == 2  # --original missing
