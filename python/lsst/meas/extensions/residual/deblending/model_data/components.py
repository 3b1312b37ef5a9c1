"""Components: the pieces a source's model is the sum of."""

from __future__ import annotations

__all__ = ["FactorizedComponentData", "CubeComponentData"]

import dataclasses
from typing import Any

import numpy as np

from .encoding import float_pair, int_pair, read_array, require
from .registries import COMPONENT_TYPES, MIGRATIONS, OBJECT_VERSION, PRE_SCHEMA, same_layout


@COMPONENT_TYPES.register
@dataclasses.dataclass
class FactorizedComponentData:
    """A component whose model is ``spectrum[:, None, None] * morph`` at ``origin``."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    spectrum: np.ndarray
    morph: np.ndarray

    component_type = "factorized"
    kind = "factorized component"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.morph.shape)

    def model(self) -> np.ndarray:
        """(bands, h, w) model-frame image."""
        return self.spectrum[:, None, None] * self.morph[None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.morph.shape],
            "peak": [int(round(p)) for p in self.peak],
            "spectrum": np.asarray(self.spectrum, dtype=np.float64).tolist(),
            "morph": np.asarray(self.morph, dtype=np.float64).ravel().tolist(),
            "component_type": self.component_type,
            "version": OBJECT_VERSION,
        }

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> FactorizedComponentData:
        data = MIGRATIONS.migrate(cls.kind, data)
        require(data, ("origin", "shape", "peak", "spectrum", "morph"), "Factorized component")
        shape = tuple(int(s) for s in data["shape"])
        return cls(
            origin=int_pair(data["origin"]),
            peak=float_pair(data["peak"]),
            spectrum=read_array(data["spectrum"], (-1,), dtype, "spectrum"),
            morph=read_array(data["morph"], shape, dtype, "morph"),
        )


@COMPONENT_TYPES.register
@dataclasses.dataclass
class CubeComponentData:
    """A component stored as a full (bands, h, w) model-frame cube."""

    origin: tuple[int, int]
    peak: tuple[float, float]
    cube: np.ndarray

    component_type = "component"
    # scarlet_lite registers this type as "cube" but writes "component".
    type_aliases = ("cube",)
    kind = "cube component"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.cube.shape[-2:])

    def model(self) -> np.ndarray:
        return self.cube

    def as_dict(self) -> dict[str, Any]:
        return {
            "origin": [int(o) for o in self.origin],
            "shape": [int(s) for s in self.cube.shape],
            "peak": [float(p) for p in self.peak],
            "model": np.asarray(self.cube, dtype=np.float64).ravel().tolist(),
            "component_type": self.component_type,
            "version": OBJECT_VERSION,
        }

    @classmethod
    def from_dict(cls, data: dict, dtype=np.float32) -> CubeComponentData:
        data = MIGRATIONS.migrate(cls.kind, data)
        require(data, ("origin", "shape", "peak", "model"), "Cube component")
        return cls(
            origin=int_pair(data["origin"]),
            peak=float_pair(data["peak"]),
            cube=read_array(
                data["model"], tuple(int(s) for s in data["shape"]), dtype, "cube component model"
            ),
        )


for _component in (FactorizedComponentData, CubeComponentData):
    MIGRATIONS.set_current(_component.kind, OBJECT_VERSION)
    # Components kept their pre-schema layout in 1.0.0.
    MIGRATIONS.register(_component.kind, PRE_SCHEMA, OBJECT_VERSION, same_layout)
