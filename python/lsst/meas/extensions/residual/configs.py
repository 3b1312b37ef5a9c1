"""The base of every parameter set: strict pydantic v2 models.

A parameter set is defined once, as a `StrictModel` whose fields carry their
documentation as attribute docstrings. Command-line options
(`lsst.meas.extensions.residual.cli.options`) and pex_config fields
(`lsst.meas.extensions.residual.tasks.config_fields`) are generated from the
same model, so that names, defaults, documentation and checks cannot drift.
"""

from __future__ import annotations

__all__ = ["StrictModel", "make_config"]

from typing import Any, Self

import pydantic

from .errors import ConfigError

# A value longer than this is shortened in messages (model-level errors carry the whole mapping).
_SHOWN_INPUT = 80


class StrictModel(pydantic.BaseModel):
    """A frozen pydantic model that refuses unknown keys and documents its fields.

    Attribute docstrings become the fields' descriptions (used as help text
    and pex_config ``doc``).
    """

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, validate_default=True
    )

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied.

        Raises
        ------
        ConfigError
            If a changed value is invalid.
        """
        return make_config(type(self), **{**self.model_dump(), **changes})


def _describe(err: pydantic.ValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "value"
        message = item["msg"]
        if "input" in item and item["type"] != "missing":
            shown = repr(item["input"])
            if len(shown) > _SHOWN_INPUT:
                shown = shown[: _SHOWN_INPUT - 3] + "..."
            message += f" (got {shown})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def make_config[M: StrictModel](model: type[M], what: str | None = None, /, **values: Any) -> M:
    """Build ``model(**values)``, turning pydantic's error into a one-line `ConfigError`.

    Parameters
    ----------
    model : `type`
        The `StrictModel` subclass.
    what : `str`, optional
        Prefix of the message (default: the model's name).
    **values
        The fields (``model`` and ``what`` are positional-only, so fields of
        those names pass through).

    Raises
    ------
    ConfigError
        Naming each invalid field, the problem and the value given.
    """
    try:
        return model(**values)
    except pydantic.ValidationError as err:
        raise ConfigError(f"{what or model.__name__}: {_describe(err)}") from None


def validate_config[M: StrictModel](model: type[M], data: Any, what: str | None = None) -> M:
    """`make_config` for a mapping (e.g. a YAML or JSON section)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what or model.__name__}: expected a mapping, not {type(data).__name__}.")
    return make_config(model, what, **data)


__all__ += ["validate_config"]
