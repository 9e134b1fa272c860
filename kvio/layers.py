"""Delta layers of a version, and the key index that keeps gets cheap while they pile up.

An update (:mod:`kvio.update`) publishes the current partitions plus a small delta partition
and a tombstone file at higher priority. Without help, a get in an overlapping version asks
every partition whose key range holds the key, highest priority first, so each update makes
every later get slower (a store after 10 updates answered gets 9x slower than compacted).

A version is seen as a **base** and **delta layers**: the base is the longest run of its
lowest-priority partitions that are disjoint and hold no tombstones (what a build or a
compaction wrote, plus carried copies of it); every partition above is a delta layer. When the
layers hold few keys (``kvio.read.overlay.keys``), :class:`LayerIndex` reads their keys once
into a dict that names, for each of those keys, the one partition holding its newest value or
tombstone. A get then costs one dict probe plus one lookup in one partition, like a compacted
store; a version whose layers hold more keys is read by asking every candidate partition, as
before, until compaction (:mod:`kvio.compact`, the policy in :func:`compaction_due`) folds
them into the base.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .format.manifest import Manifest, PartitionEntry

__all__ = ["Layers", "LayerIndex", "split_layers", "compaction_due"]


@dataclass(frozen=True)
class Layers:
    """A version's partitions split into base and delta layers.

    Attributes:
        base: the lowest-priority live partitions that are pairwise disjoint and hold no
            tombstones, as (priority, entry), ordered by key.
        deltas: every other live partition, as (priority, entry), lowest priority first.
    """

    base: tuple[tuple[int, PartitionEntry], ...]
    deltas: tuple[tuple[int, PartitionEntry], ...]

    @property
    def delta_keys(self) -> int:
        """Rows in the delta layers (values and tombstones)."""
        return sum(e.count for _, e in self.deltas)

    @property
    def base_keys(self) -> int:
        """Pairs in the base."""
        return sum(e.count for _, e in self.base)


def split_layers(manifest: Manifest) -> Layers:
    """Split a version into its disjoint base and the delta layers above it.

    Args:
        manifest: the version.

    Returns:
        The layers. A disjoint version without tombstones is all base.
    """
    live = manifest.live()
    starts: list[bytes] = []   # key ranges of the base so far, sorted by start
    ends: list[bytes] = []
    cut = len(live)
    for n, (_, entry) in enumerate(live):
        lo, hi = entry.key_range()
        i = bisect_right(starts, lo)
        overlaps = (i > 0 and ends[i - 1] >= lo) or (i < len(starts) and starts[i] <= hi)
        if entry.tombstones or overlaps:
            cut = n
            break
        starts.insert(i, lo)
        ends.insert(i, hi)
    base = sorted(live[:cut], key=lambda pe: pe[1].key_range()[0])
    return Layers(base=tuple(base), deltas=tuple(live[cut:]))


def compaction_due(manifest: Manifest, max_layers: int, size_ratio: float,
                   max_bytes: int) -> str | None:
    """Whether the compaction policy asks to compact a version after an update.

    Args:
        manifest: the version just published.
        max_layers: compact when more delta partitions than this sit above the base
            (``kvio.compact.max.layers``; 0 turns the policy off).
        size_ratio: compact when the delta layers hold more rows than this fraction of the
            base's pairs (``kvio.compact.size.ratio``; 0 turns this test off).
        max_bytes: never compact a version larger than this automatically
            (``kvio.compact.auto.max.bytes``): a huge store is compacted by an explicit
            ``kvio compact`` or ``spark_jobs/compact_store.py`` at a time of the user's choosing.

    Returns:
        Why compaction is due (for the log), or None when it is not.
    """
    if max_layers <= 0:
        return None
    layers = split_layers(manifest)
    if not layers.deltas or manifest.size > max_bytes:
        return None
    if len(layers.deltas) > max_layers:
        return f"{len(layers.deltas)} delta partitions above the base (kvio.compact.max.layers={max_layers})"
    if size_ratio > 0 and layers.delta_keys > size_ratio * max(layers.base_keys, 1):
        return (f"delta layers hold {layers.delta_keys} rows, more than {size_ratio:g} of the "
                f"base's {layers.base_keys} (kvio.compact.size.ratio)")
    return None


class LayerIndex:
    """Which partition answers a key in a version with delta layers (see the module doc).

    Args:
        layers: the version's layers.
        slot_of: the caller's slot number of each partition, by path.
        key_batches: yields the key column batches of the partition in a slot (called once
            per delta partition, when the index is first used).
    """

    def __init__(self, layers: Layers, slot_of: dict[str, int],
                 key_batches: Callable[[int], Iterable[pa.Array]]):
        self._delta_slots = [slot_of[e.path] for _, e in layers.deltas]
        self._base_slots = [slot_of[e.path] for _, e in layers.base]
        self._base_mins = [e.key_range()[0] for _, e in layers.base]
        self._base_maxs = [e.key_range()[1] for _, e in layers.base]
        self._key_batches = key_batches
        self._index: dict[bytes, int] | None = None
        self._lock = threading.Lock()

    def _build(self) -> dict[bytes, int]:
        with self._lock:
            if self._index is None:
                index: dict[bytes, int] = {}
                # Lowest priority first: a key in several layers ends on the newest one.
                for slot in self._delta_slots:
                    for keys in self._key_batches(slot):
                        index.update(dict.fromkeys(keys.to_pylist(), slot))
                self._index = index
            return self._index

    def slot(self, key: bytes) -> int | None:
        """The slot of the partition that holds ``key``'s newest value or tombstone.

        Args:
            key: the key.

        Returns:
            A delta partition's slot when a layer holds the key, else the base partition whose
            range covers it; None when no partition can hold it.
        """
        index = self._index if self._index is not None else self._build()
        slot = index.get(key)
        if slot is not None:
            return slot
        i = bisect_right(self._base_mins, key) - 1
        if i < 0 or key > self._base_maxs[i]:
            return None
        return self._base_slots[i]

    def make_get(self, gets: list[Any], open_get: Callable[[int], Callable[..., Any]],
                 as_key: Callable[[Any], bytes], tombstone: object) -> Callable[..., Any]:
        """A get function for the version (the reader installs it as its ``get``: one dict
        probe and one partition lookup per call, no method dispatch in between).

        Args:
            gets: the reader's lookup function of each slot (None while the partition is not
                open); read at every call, so an evicted partition is opened again.
            open_get: opens the partition in a slot and returns its lookup function.
            as_key: turns a non-bytes key into bytes (raising for what is not a key).
            tombstone: the value a tombstone file's lookup returns for a deleted key.

        Returns:
            ``get(key, default=None)``.
        """
        index = self._index if self._index is not None else self._build()
        mins, maxs, base = self._base_mins, self._base_maxs, self._base_slots
        single = len(base) == 1
        lo, hi, first = (mins[0], maxs[0], base[0]) if single else (b"", b"", -1)

        def get(key: Any, default: Any = None) -> Any:
            if type(key) is not bytes:
                key = as_key(key)
            slot = index.get(key)
            if slot is not None:
                value = (gets[slot] or open_get(slot))(key, default)
                return default if value is tombstone else value
            if single:
                if key < lo or key > hi:
                    return default
                slot = first
            else:
                i = bisect_right(mins, key) - 1
                if i < 0 or key > maxs[i]:
                    return default
                slot = base[i]
            return (gets[slot] or open_get(slot))(key, default)  # the base holds no tombstones
        return get

    def slots(self, keys: Sequence[bytes]) -> list[int | None]:
        """:meth:`slot` of many keys."""
        index = self._index if self._index is not None else self._build()
        mins, maxs, base = self._base_mins, self._base_maxs, self._base_slots
        out: list[int | None] = []
        for key in keys:
            slot = index.get(key)
            if slot is None:
                i = bisect_right(mins, key) - 1
                slot = base[i] if i >= 0 and key <= maxs[i] else None
            out.append(slot)
        return out
