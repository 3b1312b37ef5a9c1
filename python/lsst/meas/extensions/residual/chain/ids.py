"""Object ids unique across a tract's patches, and their mapping to the core's ids.

The core numbers peaks (= sources) and footprints (= parents, blends) from 1
within a patch, in two separate sequences. Butler catalogs need ids that stay
unique when patches are combined and when parents and sources share a table
or a model-data file, so the tasks pack the tract, the patch and the kind into
the high bits (in the spirit of LSST's ``IdGenerator``, without lsst.skymap's
packer)::

    source id = tract << 48 | patch << 32 | local
    parent id = tract << 48 | patch << 32 | 2**31 | local

with ``tract < 2**15``, ``patch < 2**16`` and ``0 < local < 2**31``; ids are
positive int64. Id 0 means "none" (e.g. no parent).

Catalogs written by other code (DRP's) use other packings; `IdMap` maps any
set of global ids onto the small local ids the core works with, and back.
"""

from __future__ import annotations

__all__ = ["patch_id_offset", "source_ids", "parent_ids", "unpack_ids", "IdMap", "PARENT_BIT"]

from collections.abc import Iterable

import numpy as np

_LOCAL_BITS = 32
_PATCH_BITS = 16
_TRACT_BITS = 15
#: Bit that marks a parent (footprint/blend) id.
PARENT_BIT = 1 << 31
_LOCAL_MAX = PARENT_BIT - 1


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


def _pack(local: np.ndarray, offset: int, kind_bit: int) -> np.ndarray:
    local = np.asarray(local, dtype=np.int64)
    if local.size and (local.min() < 0 or local.max() > _LOCAL_MAX):
        raise ValueError(f"Local ids must be in [0, 2**31); got {local.min()}..{local.max()}.")
    return np.where(local == 0, np.int64(0), local + np.int64(offset | kind_bit))


def source_ids(local: np.ndarray, tract: int, patch: int) -> np.ndarray:
    """Global source ids of local peak/source ids (0 stays 0)."""
    return _pack(local, patch_id_offset(tract, patch), 0)


def parent_ids(local: np.ndarray, tract: int, patch: int) -> np.ndarray:
    """Global parent ids of local footprint/blend ids (0 stays 0)."""
    return _pack(local, patch_id_offset(tract, patch), PARENT_BIT)


def unpack_ids(ids: np.ndarray, tract: int, patch: int, kind: str) -> np.ndarray:
    """Local ids of ids packed for this patch (the inverse of `source_ids`/`parent_ids`).

    Raises
    ------
    ValueError
        If an id is not a ``kind`` id of this tract and patch.
    """
    if kind not in ("source", "parent"):
        raise ValueError(f"kind must be 'source' or 'parent', not {kind!r}.")
    ids = np.asarray(ids, dtype=np.int64)
    base = np.int64(patch_id_offset(tract, patch) | (PARENT_BIT if kind == "parent" else 0))
    local = np.where(ids == 0, np.int64(0), ids - base)
    bad = (ids != 0) & ((local <= 0) | (local > _LOCAL_MAX))
    if np.any(bad):
        raise ValueError(
            f"{int(bad.sum())} id(s) (e.g. {int(ids[bad][0])}) are not {kind} ids "
            f"of tract {tract} patch {patch}."
        )
    return local


class IdMap:
    """Two-way map between global ids of one patch and the core's local ids.

    Ids packed for this patch (`source_ids`, `parent_ids`) map to their local
    part. Foreign ids (another packing, e.g. DRP's) get fresh local ids after
    the largest local id in use, in sorted order. Local ids the map has never
    seen (new sources of a second pass) map to this patch's packing.

    Parameters
    ----------
    tract, patch : `int`
        The patch.
    sources, parents : iterable of `int`
        Global source and parent ids known so far.

    Raises
    ------
    ValueError
        If an id appears as both a source and a parent.
    """

    def __init__(self, tract: int, patch: int, sources: Iterable[int] = (), parents: Iterable[int] = ()):
        self.tract, self.patch = int(tract), int(patch)
        self.offset = patch_id_offset(tract, patch)
        self._to_local: dict[tuple[str, int], int] = {}
        self._to_global: dict[tuple[str, int], int] = {}
        source_set = {int(s) for s in sources if int(s) != 0}
        parent_set = {int(p) for p in parents if int(p) != 0}
        both = source_set & parent_set
        if both:
            raise ValueError(f"Id(s) {sorted(both)[:5]} are used both as a source and as a parent.")
        foreign = {"source": [], "parent": []}
        for kind, ids in (("source", source_set), ("parent", parent_set)):
            bit = PARENT_BIT if kind == "parent" else 0
            for gid in sorted(ids):
                local = gid - self.offset - bit
                if 0 < local <= _LOCAL_MAX:
                    self._add(kind, gid, local)
                else:
                    foreign[kind].append(gid)
        for kind, ids in foreign.items():
            used = [loc for (k, loc) in self._to_global if k == kind]
            next_local = max(used, default=0) + 1
            for gid in ids:
                self._add(kind, gid, next_local)
                next_local += 1

    def _add(self, kind: str, gid: int, local: int) -> None:
        self._to_local[(kind, gid)] = local
        self._to_global[(kind, local)] = gid

    def _local(self, kind: str, ids: Iterable[int]) -> np.ndarray:
        out = []
        for gid in np.asarray(ids, dtype=np.int64).ravel():
            gid = int(gid)
            if gid == 0:
                out.append(0)
                continue
            try:
                out.append(self._to_local[(kind, gid)])
            except KeyError:
                raise KeyError(f"{kind} id {gid} is not known to the id map of patch {self.patch}.") from None
        return np.asarray(out, dtype=np.int64)

    def _global(self, kind: str, local: Iterable[int]) -> np.ndarray:
        bit = PARENT_BIT if kind == "parent" else 0
        known_globals = {g for (k, g) in self._to_local if k == kind}
        out = []
        for loc in np.asarray(local, dtype=np.int64).ravel():
            loc = int(loc)
            if loc == 0:
                out.append(0)
            elif (kind, loc) in self._to_global:
                out.append(self._to_global[(kind, loc)])
            else:
                gid = int(_pack(np.array([loc]), self.offset, bit)[0])
                if gid in known_globals:
                    raise ValueError(
                        f"New {kind} id {gid} collides with an existing id of patch {self.patch}."
                    )
                out.append(gid)
        return np.asarray(out, dtype=np.int64)

    def local_sources(self, ids: Iterable[int]) -> np.ndarray:
        return self._local("source", ids)

    def local_parents(self, ids: Iterable[int]) -> np.ndarray:
        return self._local("parent", ids)

    def global_sources(self, local: Iterable[int]) -> np.ndarray:
        return self._global("source", local)

    def global_parents(self, local: Iterable[int]) -> np.ndarray:
        return self._global("parent", local)

    @property
    def max_local_source(self) -> int:
        return max((loc for (k, loc) in self._to_global if k == "source"), default=0)
