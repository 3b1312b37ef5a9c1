"""Command-line options generated from the core's parameter models.

`add_model_options` gives one option per field of a
`~lsst.meas.extensions.residual.configs.StrictModel` (``tile_size`` →
``--tile-size``), with the field's description as help and its type;
every option defaults to None, meaning "the model's default", so that the
model stays the one place where defaults live. `model_from_args` builds the
model from the parsed options and refuses bad values with the model's
one-line `~lsst.meas.extensions.residual.errors.ConfigError`.
"""

from __future__ import annotations

__all__ = [
    "add_inference_options",
    "add_model_options",
    "add_workers_option",
    "at_least",
    "inference_config_from_args",
    "model_from_args",
    "option_flags",
]

import argparse
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_core import PydanticUndefined

from ..configs import StrictModel, make_config
from ..network.inference_config import InferenceConfig

#: Help of the ``--model`` options (`lsst.meas.extensions.residual.network.model_path`).
MODEL_HELP = (
    "model package (.zip), or a shipped one's name: residual_ugrizy (the default), residual_v2 (any band "
    'subset of ugrizy, 0.17-0.27" pixels: real images)'
)

#: Option spellings of InferenceConfig fields kept from earlier releases.
_INFERENCE_FLAGS: Mapping[str, tuple[str, ...]] = {"tile_overlap": ("--tile-overlap", "--overlap")}


def at_least(minimum: float, kind: type = int):
    """An argparse ``type``: a ``kind`` (int or float) of at least ``minimum``, else a one-line
    usage error."""

    def number(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a {'whole number' if kind is int else 'number'}: {text!r}"
            ) from None
        if not value >= minimum:  # also NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {text}")
        return value

    return number


def add_workers_option(
    parser: argparse.ArgumentParser, jobs: str, results: str = "the results do not depend on it"
) -> None:
    """``--workers N``: processes that do ``jobs`` (`~lsst.meas.extensions.residual.workers.ordered_map`);
    ``results`` says how the outputs depend on N."""
    parser.add_argument(
        "--workers",
        type=at_least(1),
        default=1,
        help=f"processes that {jobs}: one per core of a cluster node, say (default 1; {results})",
    )


def option_flags(field: str) -> tuple[str, ...]:
    """The option of a model field: ``tile_size`` → ``("--tile-size",)``."""
    return ("--" + field.replace("_", "-"),)


def _help(description: str | None, default: Any) -> str:
    text = " ".join((description or "").split())
    if default is not None and default is not PydanticUndefined:
        text += f" (default: {default.value if isinstance(default, enum.Enum) else default})"
    return text.replace("%", "%%")  # argparse formats help with %


def _argument(annotation: Any, where: str) -> dict[str, Any]:
    """`argparse.ArgumentParser.add_argument` keywords for a field of type ``annotation``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{where}: cannot make an option for {annotation}.")
        annotation = inner[0]
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        return {"type": type(choices[0]), "choices": choices}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = tuple(member.value for member in annotation)
        return {"type": type(choices[0]), "choices": choices}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float, str):
        return {"type": annotation}
    if typing.get_origin(annotation) in (list, tuple):
        item_types = {arg for arg in typing.get_args(annotation) if arg is not Ellipsis}
        if len(item_types) == 1 and next(iter(item_types)) in (int, float, str):
            return {"type": next(iter(item_types)), "nargs": "+"}
    raise TypeError(f"{where}: cannot make an option for {annotation}.")


def add_model_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[StrictModel],
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """Add one option per field of ``model``.

    Parameters
    ----------
    parser : `argparse.ArgumentParser` or argument group
        Where the options go.
    model : `type` [`StrictModel`]
        The parameter model.
    flags : mapping [`str`, sequence [`str`]], optional
        Option strings of fields not spelt `option_flags` (the first is the
        one shown in the help).
    exclude : sequence [`str`], optional
        Fields that get no option.

    Notes
    -----
    Each option's ``dest`` is the field name and its default None ("the
    model's default"); booleans get ``--name`` / ``--no-name``. Fields of
    two models added to one parser must not share a name.

    Raises
    ------
    TypeError
        If a field's type has no option form.
    ValueError
        If ``flags`` or ``exclude`` names a field ``model`` does not have.
    """
    flags = dict(flags or {})
    unknown = sorted((set(flags) | set(exclude)) - set(model.model_fields))
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {', '.join(unknown)}.")
    for field, info in model.model_fields.items():
        if field in exclude:
            continue
        parser.add_argument(
            *flags.get(field, option_flags(field)),
            dest=field,
            default=None,
            help=_help(info.description, info.default),
            **_argument(info.annotation, f"{model.__name__}.{field}"),
        )


def model_from_args[ModelT: StrictModel](
    model: type[ModelT], args: argparse.Namespace, what: str | None = None, **fixed: Any
) -> ModelT:
    """``model`` with the options given on the command line (the model's defaults elsewhere).

    Parameters
    ----------
    model : `type` [`StrictModel`]
        The parameter model whose options `add_model_options` added.
    args : `argparse.Namespace`
        Parsed arguments; an attribute that is None or absent leaves the
        field at the model's default.
    what : `str`, optional
        Start of the error message (default: the model's name).
    **fixed
        Field values the command sets itself (e.g. ``show_progress=True``).

    Raises
    ------
    lsst.meas.extensions.residual.errors.ConfigError
        One line naming each invalid field and the value given.
    """
    given = {
        field: value
        for field in model.model_fields
        if field not in fixed and (value := getattr(args, field, None)) is not None
    }
    return make_config(model, what, **given, **fixed)


def add_inference_options(parser: argparse.ArgumentParser, figure: str) -> None:
    """Add the network-inference (`InferenceConfig`), device, plotting and overwrite options.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        The subcommand's parser.
    figure : `str`
        Name of the figure ``--no-plot`` skips, for its help text.

    Notes
    -----
    Read the inference options back with `inference_config_from_args`.
    """
    group = parser.add_argument_group("network inference (default: the model package's values)")
    add_model_options(group, InferenceConfig, flags=_INFERENCE_FLAGS)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--no-plot", action="store_true", help=f"skip {figure}")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def inference_config_from_args(args: argparse.Namespace) -> InferenceConfig:
    """The `InferenceConfig` of the options `add_inference_options` added (None: the package's).

    Raises
    ------
    lsst.meas.extensions.residual.errors.ConfigError
        If an option is out of range (e.g. ``--score-threshold 1.5``).
    """
    return model_from_args(InferenceConfig, args, "inference options")
