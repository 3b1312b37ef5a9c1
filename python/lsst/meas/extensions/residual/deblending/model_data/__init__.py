"""Scarlet model data: LSST's persisted form of deblender models.

These classes follow the JSON schema written and read by lsst/scarlet_lite
(``io/``) and lsst/meas_extensions_scarlet (``io/``, model type ``"lsst"``,
schema ``1.0.1``), so files written here are read by LSST's code and LSST's
files are read here. The layout, as JSON-compatible dicts:

model data (``"version": "1.0.1"``, ``"model_type": "lsst"``)
    ``blends`` {id: blend}, ``isolated`` {id: isolated source}, ``metadata``
    (``model_psf`` (k, k), ``psf`` (bands, K, K), ``bands``; arrays are
    encoded as a flat list plus ``<key>_shape``/``<key>_dtype`` and listed in
    ``array_keys``).
hierarchical blend (``"blend_type": "hierarchical"``)
    ``children`` {id: blend}; ``metadata`` {``spans``: footprint mask,
    ``origin``: its (y0, x0)}.
blend (``"blend_type": "blend"``)
    ``origin`` (y0, x0), ``shape`` (h, w) of the model box, ``sources``
    {id: source}; optional ``metadata`` (per-blend ``psf``/``bands`` in
    older files).
source (``"source_type": "source"``)
    ``components`` [component]; ``metadata`` {``peak_id``, ``id``}.
factorized component (``"component_type": "factorized"``)
    ``origin``, ``shape``, ``peak`` (y, x), ``spectrum`` (bands),
    ``morph`` (h·w, row-major). Its model is ``spectrum ⊗ morph`` in the
    model frame (model PSF), placed at ``origin``.
cube component (``"component_type": "component"``)
    ``origin``, ``shape`` (bands, h, w), ``peak``, ``model`` (flattened).
isolated source (``"source_type": "isolated"``)
    ``origin``, ``shape``, ``peak``, ``span_array``: a footprint whose model
    is the image itself (LSST does not deblend single-peak parents).

Coordinates are (y, x) pixel indices in the patch.

Modules, as in scarlet_lite's ``io/``: `registries` (the type registries that
map ``component_type``/``source_type``/``blend_type`` to a class, and the
migration registry of per-version upgrade steps), `encoding` (arrays and
metadata to JSON), `components`, `sources`, `blends` and `container`. Older
files (a lower ``version``, or none: the pre-schema layout, e.g. LSST release
v29) are migrated step by step on reading, as LSST does; a version or type
nobody registered is an error naming it.
"""

from __future__ import annotations

__all__ = [
    "ScarletModelDataError",
    "FactorizedComponentData",
    "CubeComponentData",
    "SourceData",
    "IsolatedSourceData",
    "BlendData",
    "HierarchicalBlendData",
    "ScarletModelData",
    "MODEL_DATA_VERSION",
    "OBJECT_VERSION",
    "MODEL_TYPE",
]

from .blends import BlendData, HierarchicalBlendData
from .components import CubeComponentData, FactorizedComponentData
from .container import MODEL_DATA_VERSION, MODEL_TYPE, ScarletModelData
from .encoding import decode_metadata, encode_metadata  # noqa: F401 (public helpers, not star-exported)
from .registries import OBJECT_VERSION, ScarletModelDataError
from .sources import IsolatedSourceData, SourceData
