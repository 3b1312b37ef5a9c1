"""``residual-detectron demo`` (the embedded Butler demo) on tiny patches with a tiny network."""

from __future__ import annotations

import json

import pytest
from _tasks_helpers import make_tiny_package
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
    report = json.loads((out / "summary.json").read_text())
    assert [p["patch"] for p in report["patches"]] == [0, 1, 2, 3]
    for patch in report["patches"]:
        assert patch["final_sources"] == patch["first_pass_sources"] + patch["new_detections"]
        assert patch["true_sources"] >= patch["true_found_first_pass"] >= 0
        assert (out / f"patch_{patch['patch']}.png").stat().st_size > 10_000
    assert "true found 1st->final" in printed

    from lsst.daf.butler import Butler

    def outputs():
        with Butler.from_config(str(out / "repo")) as butler:
            return {
                ref.id
                for ref in butler.query_datasets("object_residual_deblend", collections=["demo/output"])
            }

    first = outputs()
    assert len(first) == 4
    assert main(argv) == 0  # again: inputs reused, finished work skipped, nothing overwritten
    assert "Nothing left to run" in capsys.readouterr().out
    assert outputs() == first
    assert json.loads((out / "summary.json").read_text())["patches"] == report["patches"]


def test_demo_refuses_a_repository_made_with_another_sky_map(tmp_path, capsys):
    from lsst.meas.extensions.residual.tasks.repo import create_repo, register_skymap
    from lsst.meas.extensions.residual.tasks.skymap import DemoSkyMap

    package = make_tiny_package(tmp_path / "tiny.zip")
    out = tmp_path / "demo"
    register_skymap(create_repo(out / "repo"), DemoSkyMap(patch_size=40))
    assert main(["demo", "--out", str(out), "--patch-size", "48", "--model", str(package)]) == 2
    assert "different sky map" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--patch-size", "8", "--model", str(package)]) == 2
    assert main(["demo", "--out", str(out), "--model", str(tmp_path / "missing.zip")]) == 2
