"""pex_config classes generated from the core's parameter models.

Each parameter set is defined once, as a `~lsst.meas.extensions.residual.configs.StrictModel`
in the core. `model_fields_config` turns such a model into a
`lsst.pex.config.Config` with one field per model field: the name in LSST's
camelCase (``tile_size`` → ``tileSize``, or LSST's own spelling where it
has one, e.g. ``minSNR``), the model's default and its description as the
``doc``. `ModelFieldsConfig.to_model` builds the model from the fields and
`~ModelFieldsConfig.validate` calls it, so ``pipetask`` refuses exactly the
values the core refuses, with the core's message.

The generated classes are module-level names here (`DeblendFieldsConfig`,
`DetectionFieldsConfig`, `InferenceFieldsConfig`) because pex_config
persists a config as Python that imports its class by module and name.
"""

from __future__ import annotations

__all__ = [
    "DeblendFieldsConfig",
    "DetectionFieldsConfig",
    "InferenceFieldsConfig",
    "ModelFieldsConfig",
    "camel_case",
    "model_fields_config",
]

import enum
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

import pydantic
from pydantic_core import PydanticUndefined

import lsst.pex.config as pexConfig

from ..configs import StrictModel, make_config
from ..deblending import DeblendConfig
from ..detection import DetectionConfig
from ..network.inference_config import InferenceConfig

_SCALAR_TYPES = (bool, int, float, str)


def camel_case(name: str) -> str:
    """LSST's spelling of a snake_case name: ``max_number_of_peaks`` → ``maxNumberOfPeaks``."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class ModelFieldsConfig(pexConfig.Config):
    """Base of the pex_config classes made by `model_fields_config`.

    Subclasses hold one pex field per field of ``model`` (except those in
    ``exclude``); ``field_names`` maps model field names to pex field names.
    """

    model: ClassVar[type[StrictModel]]
    field_names: ClassVar[Mapping[str, str]]
    exclude: ClassVar[Mapping[str, Any]]

    def to_model(self) -> StrictModel:
        """The core's parameter model with these values.

        Raises
        ------
        lsst.meas.extensions.residual.errors.ConfigError
            If a value is out of the model's range, naming the (model) field
            and the value.
        """
        values = {}
        for model_name, pex_name in self.field_names.items():
            value = getattr(self, pex_name)
            values[model_name] = list(value) if isinstance(value, pexConfig.listField.List) else value
        what = f"{self._name or type(self).__name__} ({self.model.__name__})"
        return make_config(self.model, what, **values, **self.exclude)

    def validate(self) -> None:
        """pex_config's own checks, then the model's (`to_model`)."""
        super().validate()
        self.to_model()


def _choices(annotation: Any) -> tuple | None:
    """Allowed values of a `typing.Literal` or `enum.Enum` annotation, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return None


def _pex_field(model: type[StrictModel], name: str, info: pydantic.fields.FieldInfo) -> pexConfig.Field:
    """The pex_config field for one model field."""
    where = f"{model.__name__}.{name}"
    if not info.description:
        raise TypeError(f"{where} has no description (an attribute docstring) to use as its doc.")
    doc = " ".join(info.description.split())
    if info.default is not PydanticUndefined:
        default = info.default
    elif info.default_factory is not None:
        default = info.default_factory()
    else:
        raise TypeError(f"{where} has no default; a pex_config field needs one.")

    annotation = info.annotation
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [arg for arg in args if arg is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{where}: cannot make a pex_config field for {annotation}.")
        annotation, optional = inner[0], True

    choices = _choices(annotation)
    if choices is not None:
        dtype = type(choices[0])
        if not all(type(choice) is dtype and dtype in _SCALAR_TYPES for choice in choices):
            raise TypeError(f"{where}: choices {choices!r} are not all of one scalar type.")
        if isinstance(default, enum.Enum):
            default = default.value
        allowed = {choice: f"{choice!r} (see the field's doc)" for choice in choices}
        return pexConfig.ChoiceField(doc, dtype=dtype, allowed=allowed, default=default, optional=optional)
    if typing.get_origin(annotation) in (list, tuple):
        item_types = {arg for arg in typing.get_args(annotation) if arg is not Ellipsis}
        if item_types != {str}:
            raise TypeError(f"{where}: only lists of str become pex_config fields, not {annotation}.")
        return pexConfig.ListField(
            doc, dtype=str, default=None if default is None else list(default), optional=optional
        )
    if annotation in _SCALAR_TYPES:
        return pexConfig.Field(doc, dtype=annotation, default=default, optional=optional)
    raise TypeError(f"{where}: cannot make a pex_config field for {annotation}.")


def model_fields_config(
    model: type[StrictModel],
    name: str,
    *,
    names: Mapping[str, str] | None = None,
    exclude: Mapping[str, Any] | None = None,
    doc: str | None = None,
    module: str = __name__,
) -> type[ModelFieldsConfig]:
    """A `lsst.pex.config.Config` subclass with one field per field of ``model``.

    Parameters
    ----------
    model : `type` [`StrictModel`]
        The parameter model. Its fields must have a default and a
        description and be ``bool``, ``int``, ``float``, ``str``, a
        `typing.Literal` or `enum.Enum` of those (a ``ChoiceField``), or a
        list/tuple of ``str`` (a ``ListField``); ``X | None`` gives an
        optional field.
    name : `str`
        Name of the class. Bind it to this name in ``module`` so that
        pex_config can import it when it loads a saved config.
    names : mapping [`str`, `str`], optional
        pex field name of the model fields whose LSST spelling is not
        `camel_case` (e.g. ``{"min_snr": "minSNR"}``).
    exclude : mapping [`str`, `object`], optional
        Model fields that get no pex field, each with the value `to_model`
        gives it (e.g. ``{"show_progress": False}``: tasks never show
        progress bars).
    doc : `str`, optional
        Class docstring (default: the model's first docstring line).
    module : `str`, optional
        Module the class is bound in (``__module__``).

    Returns
    -------
    config_class : `type` [`ModelFieldsConfig`]
        With ``model``, ``field_names`` (model field → pex field) and
        ``exclude`` as class attributes.

    Raises
    ------
    TypeError
        If a field has no default, no description, a type pex_config
        cannot hold, or a name that clashes with `lsst.pex.config.Config`'s.
    ValueError
        If ``names`` or ``exclude`` names a field the model does not have.
    """
    names = dict(names or {})
    exclude = dict(exclude or {})
    unknown = sorted((set(names) | set(exclude)) - set(model.model_fields))
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {', '.join(unknown)}.")
    field_names = {
        field: names.get(field, camel_case(field)) for field in model.model_fields if field not in exclude
    }
    namespace: dict[str, Any] = {
        "__module__": module,
        "__qualname__": name,
        "__doc__": doc or (model.__doc__ or model.__name__).strip().splitlines()[0],
        "model": model,
        "field_names": field_names,
        "exclude": exclude,
    }
    for field, pex_name in field_names.items():
        if hasattr(ModelFieldsConfig, pex_name):
            raise TypeError(
                f"{model.__name__}.{field}: pex name {pex_name!r} clashes with a Config attribute."
            )
        namespace[pex_name] = _pex_field(model, field, model.model_fields[field])
    return types.new_class(name, (ModelFieldsConfig,), exec_body=lambda ns: ns.update(namespace))


DeblendFieldsConfig = model_fields_config(
    DeblendConfig,
    "DeblendFieldsConfig",
    names={"min_snr": "minSNR", "spectrum_init": "setSpectra"},
    exclude={"show_progress": False},
    doc="The deblender's parameters (`DeblendConfig`; LSST ``ScarletDeblendConfig`` names where shared).",
)
DetectionFieldsConfig = model_fields_config(
    DetectionConfig, "DetectionFieldsConfig", doc="First-pass detection parameters (`DetectionConfig`)."
)
InferenceFieldsConfig = model_fields_config(
    InferenceConfig,
    "InferenceFieldsConfig",
    doc="How the network runs on a patch (`InferenceConfig`; None: the model package's value).",
)
