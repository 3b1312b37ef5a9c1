"""pex_config fields and command-line options generated from the core's parameter models."""

import argparse
import dataclasses
from typing import Any

import pydantic
import pytest
from lsst.meas.extensions.residual.cli.options import (
    add_inference_options,
    add_model_options,
    inference_config_from_args,
    model_from_args,
)
from lsst.meas.extensions.residual.configs import StrictModel, make_config
from lsst.meas.extensions.residual.deblending import DeblendConfig
from lsst.meas.extensions.residual.detection import DetectionConfig
from lsst.meas.extensions.residual.errors import ConfigError
from lsst.meas.extensions.residual.network import InferenceConfig
from lsst.meas.extensions.residual.tasks import ResidualDetectionConfig
from lsst.meas.extensions.residual.tasks.config_fields import (
    DeblendFieldsConfig,
    DetectionFieldsConfig,
    InferenceFieldsConfig,
    model_fields_config,
)


@dataclasses.dataclass
class Case:
    model: type[StrictModel]
    pex: type
    values: dict[str, Any]
    """Non-default values of some model fields."""
    bad: dict[str, Any]
    """One out-of-range value: model field → value."""
    message: str
    """Part of the model's message for ``bad``."""


CASES = [
    Case(
        InferenceConfig,
        InferenceFieldsConfig,
        {"tile_size": 64, "tile_overlap": 16, "batch_size": 2, "score_threshold": 0.3, "merge_ios": 0.4},
        {"score_threshold": 1.5},
        "score_threshold: Input should be less than or equal to 1",
    ),
    Case(
        InferenceConfig,
        InferenceFieldsConfig,
        {},
        {"tile_size": 33},
        "tile_size: Input should be a multiple of 32",
    ),
    Case(
        DeblendConfig,
        DeblendFieldsConfig,
        {
            "max_iter": 30,
            "min_snr": 20.0,
            "spectrum_init": False,
            "isolated": "footprint",
            "monotonic": False,
        },
        {"max_iter": -1},
        "max_iter: Input should be greater than or equal to 0",
    ),
    Case(
        DeblendConfig,
        DeblendFieldsConfig,
        {},
        {"model_psf_size": 14},
        "model_psf_size: Value error, must be odd",
    ),
    Case(
        DetectionConfig,
        DetectionFieldsConfig,
        {"threshold": 3.0, "min_pixels": 2, "grow_psf_sigma": 0.0},
        {"threshold": 0.0},
        "threshold: Input should be greater than 0",
    ),
]
IDS = [f"{case.model.__name__}-{next(iter(case.bad))}" for case in CASES]


def _pex(case: Case, **values: Any):
    config = case.pex()
    for field, value in values.items():
        setattr(config, case.pex.field_names[field], value)
    return config


def _model_message(case: Case) -> str:
    """What the core itself says about ``case.bad`` (after the ``what`` prefix)."""
    with pytest.raises(ConfigError) as caught:
        make_config(case.model, "core", **case.bad)
    return str(caught.value).removeprefix("core: ")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_one_pex_field_per_model_field_with_its_default_and_description(case):
    config = case.pex()
    expected = {name: info for name, info in case.model.model_fields.items() if name not in case.pex.exclude}
    assert sorted(case.pex.field_names) == sorted(expected)
    assert sorted(config.keys()) == sorted(case.pex.field_names.values())
    for name, info in expected.items():
        pex_name = case.pex.field_names[name]
        field = case.pex._fields[pex_name]
        assert getattr(config, pex_name) == info.default, name
        assert field.doc == " ".join(info.description.split()), name
    assert case.pex().to_model() == case.model(**case.pex.exclude)


def test_lsst_spellings_and_excluded_fields():
    names = DeblendFieldsConfig.field_names
    assert (names["min_snr"], names["spectrum_init"], names["max_number_of_peaks"]) == (
        "minSNR",
        "setSpectra",
        "maxNumberOfPeaks",
    )
    assert (names["max_footprint_area"], names["max_area_times_peaks"]) == (
        "maxFootprintArea",
        "maxAreaTimesPeaks",
    )
    assert "show_progress" not in names and DeblendFieldsConfig().to_model().show_progress is False
    assert len(DeblendFieldsConfig().keys()) == len(DeblendConfig.model_fields) - 1
    isolated = DeblendFieldsConfig._fields["isolated"]
    assert set(isolated.allowed) == {"fit", "footprint"} and isolated.default == "fit"
    assert InferenceFieldsConfig._fields["scoreThreshold"].optional


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_to_model_round_trips_and_validate_refuses_what_the_model_refuses(case):
    assert _pex(case, **case.values).to_model() == case.model(**case.values, **case.pex.exclude)
    config = _pex(case, **case.bad)
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert case.message in str(caught.value)
    assert str(caught.value).endswith(_model_message(case))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_and_load_round_trip(case):
    config = _pex(case, **case.values)
    text = config.saveToString()
    assert f"import {case.pex.__module__}\n" in text and case.pex.__qualname__ in text
    loaded = case.pex()
    loaded.loadFromString(text)
    assert loaded.compare(config) and loaded.to_model() == config.to_model()


def test_task_config_override_syntax_and_persistence():
    from lsst.pipe.base.configOverrides import ConfigOverrides

    config = ResidualDetectionConfig()
    overrides = ConfigOverrides()
    overrides.addValueOverride("find.inference.scoreThreshold", "0.3")  # pipetask -c residualDetection:...
    overrides.addValueOverride("find.inference.tileSize", "64")
    overrides.applyTo(config)
    config.validate()
    assert config.find.inference.to_model() == InferenceConfig(score_threshold=0.3, tile_size=64)
    loaded = ResidualDetectionConfig()
    loaded.loadFromString(config.saveToString())
    assert loaded.find.inference.to_model() == config.find.inference.to_model()
    overrides = ConfigOverrides()
    overrides.addValueOverride("find.inference.scoreThreshold", "1.5")
    overrides.applyTo(config)
    with pytest.raises(ConfigError, match="score_threshold: Input should be less than or equal to 1"):
        config.validate()


def _cli_argv(values: dict[str, Any]) -> list[str]:
    argv = []
    for field, value in values.items():
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_options_parse_and_refuse_the_same_values(case):
    parser = argparse.ArgumentParser()
    add_model_options(parser, case.model)
    assert model_from_args(case.model, parser.parse_args([])) == case.model()
    assert model_from_args(case.model, parser.parse_args(_cli_argv(case.values))) == case.model(**case.values)
    with pytest.raises(ConfigError) as caught:
        model_from_args(case.model, parser.parse_args(_cli_argv(case.bad)), "options")
    assert str(caught.value) == f"options: {_model_message(case)}"
    assert case.message in str(caught.value)


def test_cli_help_types_and_choices_come_from_the_model():
    parser = argparse.ArgumentParser()
    add_model_options(parser, DeblendConfig, exclude=["show_progress"])
    actions = {action.dest: action for action in parser._actions}
    assert "show_progress" not in actions
    assert actions["max_iter"].type is int and actions["max_iter"].default is None
    assert actions["isolated"].choices == ("fit", "footprint")
    assert actions["max_iter"].help.startswith("Maximum number of optimizer iterations per blend")
    assert actions["max_iter"].help.endswith("(default: 300)")
    parser.format_help()  # help strings are valid %-format strings
    with pytest.raises(SystemExit):
        parser.parse_args(["--isolated", "skip"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-iter", "ten"])


def test_inference_options_keep_their_spellings():
    parser = argparse.ArgumentParser()
    add_inference_options(parser, figure="run.png")
    for overlap in ("--overlap", "--tile-overlap"):
        args = parser.parse_args(
            ["--tile-size", "64", overlap, "16", "--batch-size", "2", "--score-threshold", "0.4"]
        )
        assert inference_config_from_args(args) == InferenceConfig(
            tile_size=64, tile_overlap=16, batch_size=2, score_threshold=0.4
        )
    args = parser.parse_args(["--device", "cpu", "--no-plot", "--overwrite"])
    assert (args.device, args.no_plot, args.overwrite) == ("cpu", True, True)
    assert inference_config_from_args(args) == InferenceConfig()
    with pytest.raises(ConfigError, match=r"^inference options: score_threshold: .* \(got 1\.5\)$"):
        inference_config_from_args(parser.parse_args(["--score-threshold", "1.5"]))
    with pytest.raises(ConfigError, match="tile_overlap .* must be smaller than tile_size"):
        inference_config_from_args(parser.parse_args(["--tile-size", "32", "--overlap", "32"]))


def test_generator_refuses_what_pex_config_cannot_hold():
    class Undocumented(StrictModel):
        size: int = 3

    class WithDict(StrictModel):
        table: dict[str, int] = pydantic.Field(default_factory=dict)
        """A mapping."""

    with pytest.raises(TypeError, match="no description"):
        model_fields_config(Undocumented, "UndocumentedConfig")
    with pytest.raises(TypeError, match="cannot make a pex_config field"):
        model_fields_config(WithDict, "WithDictConfig")
    with pytest.raises(ValueError, match="no field"):
        model_fields_config(DetectionConfig, "X", names={"thresold": "thresh"})


def test_core_configs_are_strict_frozen_models():
    options = {"max_iter": 20, "isolated": "footprint", "show_progress": False}
    config = DeblendConfig(**options)  # training passes option dicts
    assert config.replace(max_iter=5).max_iter == 5 and config.max_iter == 20
    with pytest.raises(pydantic.ValidationError):
        config.max_iter = 5
    with pytest.raises(ValueError, match="max_iters"):
        DeblendConfig(max_iters=5)
    with pytest.raises(ConfigError, match="min_pixels"):
        DetectionConfig().replace(min_pixels=0)
