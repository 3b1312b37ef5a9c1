"""The two registries that reading scarlet model data goes through.

`TypeRegistry`: the data classes of one kind (component, source, blend), by
the type string stored in each dict (``component_type``, ``source_type``,
``blend_type``). Each data class registers itself with the decorator, so a
new type needs no change to the code that reads its container.

`MigrationRegistry`: per kind of object, the steps that upgrade a dict of one
schema version to the next, and the current version. Every ``from_dict``
first migrates its dict to the current version, so it only ever reads the
current layout. A dict without ``version`` is `PRE_SCHEMA` (LSST's
pre-schema layout, e.g. release v29).
"""

from __future__ import annotations

__all__ = [
    "ScarletModelDataError",
    "TypeRegistry",
    "MigrationRegistry",
    "COMPONENT_TYPES",
    "SOURCE_TYPES",
    "BLEND_TYPES",
    "MIGRATIONS",
    "migration",
    "same_layout",
    "PRE_SCHEMA",
    "OBJECT_VERSION",
]

from collections.abc import Callable
from typing import Any

from ...errors import InputError

#: Version of a dict written before the schema was versioned.
PRE_SCHEMA = "0.0.0"
#: Schema version of blends, sources and components (scarlet_lite's ``CURRENT_SCHEMA``).
OBJECT_VERSION = "1.0.0"

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""One upgrade step: takes a dict of one version, returns it in the next layout."""


class ScarletModelDataError(InputError):
    """Scarlet model data that cannot be read or is inconsistent."""


class TypeRegistry:
    """Data classes of one kind, looked up by the type string in their dicts.

    Parameters
    ----------
    kind : `str`
        What the classes are (``"component"``), for messages.
    key : `str`
        The dict key and class attribute holding the type string
        (``"component_type"``).
    default : `str`
        The type of a dict without ``key`` (older files omit it).
    """

    def __init__(self, kind: str, key: str, default: str):
        self.kind = kind
        self.key = key
        self.default = default
        self.classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: register ``cls`` under its ``<key>`` attribute and its ``type_aliases``."""
        for name in (getattr(cls, self.key), *getattr(cls, "type_aliases", ())):
            if self.classes.setdefault(name, cls) is not cls:
                raise ValueError(f"{self.kind} type {name!r} is already registered to {self.classes[name]}.")
        return cls

    def lookup(self, data: Any) -> type:
        """The class that reads ``data``.

        Raises
        ------
        ScarletModelDataError
            If ``data`` is not a dict or names a type nobody registered.
        """
        if not isinstance(data, dict):
            raise ScarletModelDataError(f"A {self.kind} must be a JSON object, not {type(data).__name__}.")
        name = data.get(self.key, self.default)
        if name not in self.classes:
            known = ", ".join(repr(k) for k in sorted(self.classes))
            raise ScarletModelDataError(f"Unknown {self.kind} type {name!r}; known types: {known}.")
        return self.classes[name]

    def from_dict(self, data: Any, dtype) -> Any:
        """Read ``data`` with the class its type string names."""
        return self.lookup(data).from_dict(data, dtype)


class MigrationRegistry:
    """Upgrade steps per (kind, from-version) and the current version per kind.

    Attributes
    ----------
    current : `dict` [`str`, `str`]
        The version each kind's ``from_dict`` reads.
    steps : `dict` [(`str`, `str`), (`str`, callable)]
        ``(kind, from_version)`` → ``(to_version, step)``.
    """

    def __init__(self):
        self.current: dict[str, str] = {}
        self.steps: dict[tuple[str, str], tuple[str, Migration]] = {}

    def set_current(self, kind: str, version: str) -> None:
        """Declare the version that ``kind``'s reader reads."""
        self.current[kind] = version

    def register(self, kind: str, from_version: str, to_version: str, step: Migration) -> Migration:
        """Register ``step``, which upgrades a ``kind`` dict from ``from_version`` to ``to_version``.

        ``step`` gets a shallow copy of the dict: it may set or remove keys,
        but must not change nested values in place. The registry sets
        ``version`` to ``to_version`` afterwards.
        """
        if from_version == to_version:
            raise ValueError(f"A {kind} migration must change the version, not keep {from_version!r}.")
        if self.steps.setdefault((kind, from_version), (to_version, step)) != (to_version, step):
            raise ValueError(f"A {kind} migration from version {from_version!r} is already registered.")
        return step

    def known_versions(self, kind: str) -> list[str]:
        """The versions of ``kind`` that can be read, pre-schema excluded."""
        versions = {v for (k, v) in self.steps if k == kind} | {self.current[kind]}
        return sorted(versions - {PRE_SCHEMA})

    def migrate(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` upgraded step by step to the current version of ``kind`` (``data`` is not changed).

        Raises
        ------
        ScarletModelDataError
            If the version of ``data`` is neither current nor has a step
            towards it.
        """
        version = str(data.get("version", PRE_SCHEMA))
        seen = {version}
        while version != self.current[kind]:
            if (kind, version) not in self.steps:
                raise ScarletModelDataError(
                    f"Unknown {kind} schema version {version!r}; this reader knows "
                    f"{', '.join(self.known_versions(kind))} and the pre-schema layout."
                )
            version, step = self.steps[(kind, version)]
            if version in seen:
                raise ScarletModelDataError(f"The {kind} migrations loop back to version {version!r}.")
            seen.add(version)
            data = step(dict(data))
            data["version"] = version
        return data


#: Component classes by ``component_type`` (factorized when absent, as in pre-schema files).
COMPONENT_TYPES = TypeRegistry("component", "component_type", default="factorized")
#: Source classes by ``source_type`` (a blend's source when absent).
SOURCE_TYPES = TypeRegistry("source", "source_type", default="source")
#: Blend classes by ``blend_type`` (a plain blend when absent).
BLEND_TYPES = TypeRegistry("blend", "blend_type", default="blend")
#: The upgrade steps of every kind of object in the model data.
MIGRATIONS = MigrationRegistry()


def migration(kind: str, from_version: str, to_version: str) -> Callable[[Migration], Migration]:
    """Decorator: register a function as the ``kind`` step from ``from_version`` to ``to_version``."""
    return lambda step: MIGRATIONS.register(kind, from_version, to_version, step)


def same_layout(data: dict[str, Any]) -> dict[str, Any]:
    """The step between two versions whose layouts are the same (only ``version`` changes)."""
    return data
