"""Object ids unique across a tract's patches.

The core numbers footprints, peaks and sources from 1 within a patch. Butler
catalogs need ids that stay unique when patches are combined, so the tasks
pack the tract and patch into the high bits (in the spirit of LSST's
``IdGenerator``, without lsst.skymap's packer):

``id = tract << 48 | patch << 32 | local``

with ``tract < 2**15``, ``patch < 2**16`` and ``local < 2**32``; the result is
a positive int64. Local id 0 stays 0 (meaning "no parent").
"""

from __future__ import annotations

__all__ = ["patch_id_offset", "to_global_ids", "to_local_ids"]

import numpy as np

_LOCAL_BITS = 32
_PATCH_BITS = 16
_TRACT_BITS = 15


def patch_id_offset(tract: int, patch: int) -> int:
    """The value added to local ids of ``patch`` in ``tract``.

    Raises
    ------
    ValueError
        If ``tract`` or ``patch`` do not fit their bits.
    """
    tract, patch = int(tract), int(patch)
    if not 0 <= tract < 2**_TRACT_BITS:
        raise ValueError(f"tract {tract} does not fit the id packing (0 <= tract < {2**_TRACT_BITS}).")
    if not 0 <= patch < 2**_PATCH_BITS:
        raise ValueError(f"patch {patch} does not fit the id packing (0 <= patch < {2**_PATCH_BITS}).")
    return (tract << (_PATCH_BITS + _LOCAL_BITS)) | (patch << _LOCAL_BITS)


def to_global_ids(local: np.ndarray, tract: int, patch: int) -> np.ndarray:
    """Global ids of local ids (0 stays 0).

    Raises
    ------
    ValueError
        If a local id is negative or does not fit 32 bits.
    """
    local = np.asarray(local, dtype=np.int64)
    if local.size and (local.min() < 0 or local.max() >= 2**_LOCAL_BITS):
        raise ValueError(f"Local ids must be in [0, 2**{_LOCAL_BITS}); got {local.min()}..{local.max()}.")
    offset = np.int64(patch_id_offset(tract, patch))
    return np.where(local == 0, np.int64(0), local + offset)


def to_local_ids(global_ids: np.ndarray) -> np.ndarray:
    """Local ids (low 32 bits) of global ids."""
    return np.asarray(global_ids, dtype=np.int64) & np.int64(2**_LOCAL_BITS - 1)
