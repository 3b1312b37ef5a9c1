"""``residual-detectron find`` / ``evaluate`` / ``train`` command lines (tiny untrained packages)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lsst.meas.extensions.residual.cli.main import main  # noqa: E402
from lsst.meas.extensions.residual.cli.outputs import check_output_folder  # noqa: E402
from lsst.meas.extensions.residual.network import (  # noqa: E402
    ModelConfig,
    ModelMetadata,
    build_model,
    channel_names,
    read_source_detections,
    save_model_package,
)
from lsst.meas.extensions.residual.scene import write_scene  # noqa: E402

TINY = {
    "slim_widths": [8, 8, 16, 16],
    "slim_blocks": [1, 1, 1, 1],
    "fpn_channels": 16,
    "box_head_size": 32,
    "mask_head_layers": [16],
    "box_detections_per_img": 30,
}


def _package(path, recipe, bands=("u", "g", "r", "i", "z", "y")):
    torch.manual_seed(0)
    meta = ModelMetadata(
        name=f"tiny-{recipe}",
        mode="image" if recipe == "image" else "residual",
        recipe=recipe,
        bands=bands,
        classes=("star", "galaxy"),
        model=ModelConfig(in_channels=len(channel_names(recipe, bands)), **TINY),
        inference={"tile_size": 64, "tile_overlap": 16, "score_threshold": 0.0},
        provenance={"training_dataset": {"seeds": [0, 9]}},
        training={"dataset": {"labels": {"snr_cut": 5.0}}},
    )
    return save_model_package(path, meta, build_model(meta.model).state_dict())


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory, small_scene):
    path = tmp_path_factory.mktemp("scene") / "scene.fits"
    write_scene(small_scene, path)
    return path


def test_find_writes_catalogue_footprints_and_overlay(tmp_path, scene_file, capsys):
    package = _package(tmp_path / "image.zip", "image")
    out = tmp_path / "found"
    assert main(["find", str(scene_file), "--model", str(package), "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    found = read_source_detections(out / "sources.fits")
    assert summary["detections"] == len(found) and found.shape == (96, 96)
    assert (out / "overlay.png").stat().st_size > 1000 and (out / "sources.ecsv").exists()
    # Outputs are not replaced silently.
    assert main(["find", str(scene_file), "--model", str(package), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_find_residual_mode_with_a_given_first_pass_model(tmp_path, scene_file, small_scene):
    from astropy.io import fits

    package = _package(tmp_path / "residual.zip", "residual+model")
    model_file = tmp_path / "model.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(small_scene.truth.render(small_scene.shape), name="MODEL")]
    ).writeto(model_file)
    out = tmp_path / "found"
    assert (
        main(
            [
                "find",
                str(scene_file),
                "--model",
                str(package),
                "--first-pass-model",
                str(model_file),
                "--out",
                str(out),
                "--no-plot",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["mode"] == "residual"
    wrong = tmp_path / "wrong.fits"
    fits.PrimaryHDU(np.zeros((6, 10, 10), np.float32)).writeto(wrong)
    assert (
        main(
            [
                "find",
                str(scene_file),
                "--model",
                str(package),
                "--first-pass-model",
                str(wrong),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_find_reports_band_mismatch(tmp_path, scene_file, small_scene, capsys):
    gri = tmp_path / "gri.fits"
    write_scene(small_scene.band_subset(["g", "r", "i"]), gri)
    package = _package(tmp_path / "image.zip", "image")
    assert main(["find", str(gri), "--model", str(package), "--out", str(tmp_path / "out")]) == 2
    assert "missing u,z,y" in capsys.readouterr().err
    assert (
        main(["find", str(scene_file), "--model", str(tmp_path / "none.zip"), "--out", str(tmp_path / "o")])
        == 2
    )


def test_evaluate_command(tmp_path, capsys):
    package = _package(tmp_path / "image.zip", "image")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(package),
                "--scenes",
                "1",
                "--seed",
                "77",
                "--size",
                "64",
                "--no-baselines",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "evaluation.json").read_text())
    assert report["scenes"]["seeds"] == [77, 77] and report["baselines"] == {}
    assert check_output_folder(out)["outputs"].keys() == {
        "evaluation.json",
        "example_overlay.png",
        "pr_curves.png",
        "recall_vs_mag.png",
        "reliability.png",
        "detection_scores.npz",
    }
    capsys.readouterr()
    assert main(["evaluate", "--model", str(package), "--seed", "8", "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    again = ["evaluate", "--model", str(package), "--scenes", "2", "--seed", "8", "--out", str(out)]
    assert main([*again, "--overwrite"]) == 2
    assert "never saw" in capsys.readouterr().err
    check_output_folder(out)  # the refused run left the earlier outputs as they were
    calibrate = ["evaluate", "--model", str(package), "--calibrate", "--out", str(tmp_path / "cal")]
    assert main([*calibrate, "--purity", "1.5"]) == 2
    assert "--purity must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "cal").exists()
    # A band subset needs a package that takes them (this one needs all of its bands).
    subset = [
        "evaluate",
        "--model",
        str(package),
        "--bands",
        "gr",
        "--scenes",
        "1",
        "--out",
        str(tmp_path / "gr"),
    ]
    assert main(subset) == 2
    assert "needs bands" in capsys.readouterr().err and not (tmp_path / "gr").exists()


def test_train_command_reports_bad_config(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 0\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "epochs: Input should be greater than or equal to 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_scene_making_commands_refuse_fewer_than_one_worker(command, tmp_path, capsys):
    args = ["--config", "unread.yaml"] if command == "train" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args, "--out", str(tmp_path / "out"), "--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: must be at least 1, not 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--time-limit", "--loader-workers"])
def test_train_refuses_negative_limits(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "unread.yaml", "--out", str(tmp_path / "out"), option, "-1"])
    assert exit_info.value.code == 2
    assert f"{option}: must be at least 0, not -1" in capsys.readouterr().err
