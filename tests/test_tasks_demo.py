"""``residual-detectron demo`` (the embedded Butler demo) on tiny patches with a tiny network."""

from __future__ import annotations

import json

import pytest
from _tasks_helpers import make_tiny_package, tiny_scene
from lsst.meas.extensions.residual.cli.main import main


@pytest.mark.slow
def test_demo_builds_runs_summarises_and_is_safe_to_rerun(tmp_path, capsys):
    package = make_tiny_package(tmp_path / "tiny.zip")
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--patch-size",
        "48",
        "--patches-x",
        "2",
        "--patches-y",
        "2",
        "--model",
        str(package),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 patches simulated and ingested" in printed
    report = json.loads((out / "summary.json").read_text())
    assert [p["patch"] for p in report["patches"]] == [0, 1, 2, 3]
    for patch in report["patches"]:
        assert patch["final_sources"] == patch["first_pass_sources"] + patch["new_detections"]
        assert patch["true_sources"] >= patch["true_found_first_pass"] >= 0
        assert (out / f"patch_{patch['patch']}.png").stat().st_size > 10_000
    assert "true found 1st->final" in printed
    assert report["parameters"]["seed"] == 1 and report["parameters"]["patch_size"] == 48
    assert report["output_run"].startswith("demo/output/")

    from lsst.daf.butler import Butler

    def outputs():
        with Butler.from_config(str(out / "repo")) as butler:
            return {
                ref.id
                for ref in butler.query_datasets("object_residual_deblend", collections=["demo/output"])
            }

    # The last patch has artefacts (a saturated star at least), its mask planes kept in the Butler.
    assert report["parameters"]["artefacts"] == "last"
    with Butler.from_config(str(out / "repo"), collections=["demo/inputs"]) as butler:
        saturated = {
            patch: butler.get("deep_coadd", skymap="residual_demo", tract=0, patch=patch, band="i").mask.get(
                "SATURATED"
            )
            for patch in (0, 3)
        }
    assert saturated[3].any() and not saturated[0].any()

    first = outputs()
    assert len(first) == 4
    assert main(argv) == 0  # again: inputs reused, finished work skipped, nothing overwritten
    printed = capsys.readouterr().out
    assert "reusing the inputs of 4 patches" in printed and "simulated and ingested" not in printed
    assert "Nothing left to run" in printed
    assert outputs() == first
    again = json.loads((out / "summary.json").read_text())
    assert again["patches"] == report["patches"] and again["output_run"] == report["output_run"]

    # Other parameters on the same repository: refused before anything is written or shown.
    assert main([*argv, "--seed", "2", "--depth", "1yr"]) == 2
    err = capsys.readouterr().err
    assert "--seed 1 was used, now 2" in err and "--depth '10yr' was used, now '1yr'" in err
    assert "another --out" in err
    assert outputs() == first
    assert json.loads((out / "summary.json").read_text()) == again


@pytest.fixture
def tiny_demo(tmp_path):
    """A demo repository (inputs only, no pipeline run) of one 32-pixel patch."""
    from lsst.meas.extensions.residual.tasks.demo import DemoConfig, build_demo_repo

    package = make_tiny_package(tmp_path / "tiny.zip")
    out = tmp_path / "demo"
    config = DemoConfig(patch_size=32, patches_x=1, patches_y=1, model=str(package))
    inputs = build_demo_repo(out / "repo", config, progress=False)
    assert inputs.simulated == (0,) and inputs.reused == ()
    return out, config, package


def test_the_repository_records_its_parameters_and_refuses_others(tiny_demo, tmp_path, capsys):
    from lsst.daf.butler import Butler
    from lsst.meas.extensions.residual.tasks.demo import (
        INPUT_RUN,
        PARAMETERS,
        DemoParametersError,
        build_demo_repo,
        demo_parameters,
    )

    out, config, package = tiny_demo
    with Butler.from_config(str(out / "repo")) as butler:
        recorded = butler.get(PARAMETERS, collections=[INPUT_RUN])
    assert recorded == demo_parameters(config)
    assert recorded["simulation"]["height"] == 32 and len(recorded["model_sha256"]) == 64

    again = build_demo_repo(out / "repo", config, progress=False)  # the same parameters: reused
    assert again.simulated == () and again.reused == (0,)
    with pytest.raises(DemoParametersError, match="--seed 1 was used, now 5"):
        build_demo_repo(out / "repo", config.replace(seed=5), progress=False)

    # Another model package (other content, so another checksum) through the command line.
    other = make_tiny_package(tmp_path / "other.zip", recipe="residual")
    argv = ["demo", "--out", str(out), "--patch-size", "32", "--patches-x", "1", "--patches-y", "1"]
    assert main([*argv, "--model", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"--model (package checksum): {package.resolve()} was used, now {other.resolve()}" in err
    assert main([*argv, "--model", str(package), "--patch-size", "40"]) == 2
    assert "--patch-size 32 was used, now 40" in capsys.readouterr().err


def test_demo_refuses_a_repository_whose_inputs_have_no_record(tmp_path, capsys):
    from lsst.meas.extensions.residual.tasks.repo import (
        create_repo,
        ingest_scene,
        register_bands,
        register_skymap,
    )
    from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

    package = make_tiny_package(tmp_path / "tiny.zip")
    out = tmp_path / "demo"
    skymap = DemoSkyMap(patch_size=32, patch_nx=1, patch_ny=1)
    butler = create_repo(out / "repo")
    register_skymap(butler, skymap)
    register_bands(butler)
    ingest_scene(butler, tiny_scene(3, 32), skymap, 0, "demo/inputs")  # as an older version did
    argv = ["demo", "--out", str(out), "--patch-size", "32", "--patches-x", "1", "--patches-y", "1"]
    assert main([*argv, "--model", str(package)]) == 2
    assert "without a record of their parameters" in capsys.readouterr().err


def test_demo_refuses_a_repository_made_with_another_sky_map(tmp_path, capsys):
    from lsst.meas.extensions.residual.tasks.repo import create_repo, register_skymap
    from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

    package = make_tiny_package(tmp_path / "tiny.zip")
    out = tmp_path / "demo"
    register_skymap(create_repo(out / "repo"), DemoSkyMap(patch_size=40))
    assert main(["demo", "--out", str(out), "--patch-size", "48", "--model", str(package)]) == 2
    assert "different sky map" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--patch-size", "8", "--model", str(package)]) == 2
    assert "patch_size" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--model", str(tmp_path / "missing.zip")]) == 2
    assert "missing.zip does not exist" in capsys.readouterr().err
