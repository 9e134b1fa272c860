"""The one read planner: what to read for a version and key ranges, and how pieces merge.

Every engine reads through this module: :class:`kvio.reader.StoreReader` (iteration, ranges,
``batches``), the Spark source (one task per split), mrjob map tasks (one per split) and the
CLI's ``scan``/``export``/``diff``/``verify``.

* A **piece** is the unit of reading: one partition (optionally a range of its blocks), or a
  group of partitions whose key ranges overlap (a merged or appended store), read over a key
  range ``[start, stop)`` and merged so that each key appears once, with the value of the
  highest-priority partition (the latest in the manifest). Pieces come out in key order and
  never share a key, so the splits of a plan can be read independently and concatenated.
* A **split** packs consecutive pieces up to a byte budget; engines make one task of each.
* Overlapping partitions are cut into key ranges of about the budget each (by the first keys of
  their blocks), so no piece, and no task's memory, grows with the store.

Plans are plain frozen dataclasses that pickle (Spark) and round-trip through JSON (mrjob split
files): a task needs only the store URI, the version and its split.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import keyranges
from .config import Config
from .errors import InvalidArgumentError
from .format.manifest import Manifest, PartitionEntry
from .format.partition_reader import SCHEMA, PartitionReader
from .fs import FileIO
from .keyranges import Range
from .partitions import PartitionCache

#: opens (or returns the open) reader of a partition entry of the planned version
OpenEntry = Callable[[PartitionEntry], PartitionReader]


def _hex(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


def _unhex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


@dataclass(frozen=True)
class Piece:
    """Part of a version one reader reads in one go.

    Attributes:
        entries: the partitions read, lowest priority first. With one entry, ``blocks`` may
            restrict the read to a block range; with several, the read covers keys in
            ``[start, stop)`` of all of them, merged by priority.
        blocks: ``(first, end)`` block numbers of a single partition, or None for all.
        start: lowest key of the piece (None: unbounded).
        stop: the piece holds keys below this (None: unbounded).
        weight: estimated bytes read.
    """

    entries: tuple[PartitionEntry, ...]
    blocks: tuple[int, int] | None = None
    start: bytes | None = None
    stop: bytes | None = None
    weight: int = 0

    @property
    def merged(self) -> bool:
        """True when the piece merges overlapping partitions."""
        return len(self.entries) > 1

    def to_json(self) -> dict[str, Any]:
        """JSON form (keys as hex)."""
        return {"entries": [e.to_json() for e in self.entries],
                "blocks": list(self.blocks) if self.blocks else None,
                "start": _hex(self.start), "stop": _hex(self.stop), "weight": self.weight}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Piece:
        """Inverse of :meth:`to_json`."""
        blocks = doc.get("blocks")
        return cls(tuple(PartitionEntry.from_json(e) for e in doc["entries"]),
                   (int(blocks[0]), int(blocks[1])) if blocks else None,
                   _unhex(doc.get("start")), _unhex(doc.get("stop")), int(doc.get("weight", 0)))


@dataclass(frozen=True)
class Split:
    """Consecutive pieces one task reads; splits of a plan never share a key.

    Attributes:
        pieces: the pieces, in key order.
        weight: estimated bytes read.
    """

    pieces: tuple[Piece, ...]
    weight: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"pieces": [p.to_json() for p in self.pieces], "weight": self.weight}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Split:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(Piece.from_json(p) for p in doc["pieces"]), int(doc["weight"]))


def ranges_to_json(ranges: Sequence[Range]) -> list[list[str | None]]:
    """Key ranges as JSON (hex)."""
    return [[_hex(a), _hex(b)] for a, b in ranges]


def ranges_from_json(doc: Sequence[Sequence[str | None]]) -> list[Range]:
    """Inverse of :func:`ranges_to_json`."""
    return [(_unhex(a), _unhex(b)) for a, b in doc]


@dataclass(frozen=True)
class _Group:
    """Partitions whose key ranges overlap (transitively), lowest priority first."""
    entries: tuple[PartitionEntry, ...]
    low: bytes
    high: bytes
    size: int


class ReadPlanner:
    """Plans reads of one manifest. Build once per version (the grouping of overlapping
    partitions is computed here), then ask for splits of any key ranges.

    Args:
        manifest: the version's manifest.
    """

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        live = manifest.live()
        groups: list[list[tuple[int, PartitionEntry]]] = []
        high = b""
        for prio, entry in sorted(live, key=lambda pe: pe[1].key_range()[0]):
            low_key, high_key = entry.key_range()
            if groups and low_key <= high:
                groups[-1].append((prio, entry))
                high = max(high, high_key)
            else:
                groups.append([(prio, entry)])
                high = high_key
        self.groups = [
            _Group(tuple(e for _, e in sorted(g, key=lambda pe: pe[0])),
                   min(e.key_range()[0] for _, e in g), max(e.key_range()[1] for _, e in g),
                   sum(e.size for _, e in g))
            for g in groups]
        self._lows = [g.low for g in self.groups]
        #: True when no two partitions overlap: every piece is a single partition
        self.disjoint = all(len(g.entries) == 1 for g in self.groups)

    def groups_in(self, ranges: Sequence[Range]) -> list[_Group]:
        """The groups holding keys inside ``ranges`` (normalized), in key order."""
        if not ranges or not self.groups:
            return []
        first_start = ranges[0][0]
        # Groups are disjoint and sorted: skip those entirely below the first range.
        i = 0 if first_start is None else max(0, bisect_left(self._lows, first_start) - 1)
        out = []
        last_stop = ranges[-1][1]
        for g in self.groups[i:]:
            if last_stop is not None and g.low >= last_stop:
                break
            if keyranges.touches(ranges, g.low, g.high):
                out.append(g)
        return out

    def splits(self, ranges: Sequence[Range], split_bytes: int, open_entry: OpenEntry,
               min_splits: int = 1) -> list[Split]:
        """Splits covering every key of the version inside ``ranges``, in key order.

        Args:
            ranges: normalized key ranges (:data:`kvio.keyranges.ALL` for everything).
            split_bytes: target bytes per split (a single piece may exceed it by one block).
            open_entry: opens a partition; called only for partitions whose block index is
                needed (a partition bigger than a split, or overlapping partitions).
            min_splits: cut into at least about this many splits when the data allows.

        Returns:
            The splits, in key order.

        Raises:
            InvalidArgumentError: ``split_bytes`` or ``min_splits`` is below 1.
        """
        if split_bytes < 1 or min_splits < 1:
            raise InvalidArgumentError(f"split size ({split_bytes}) and minimum number of splits "
                                       f"({min_splits}) must be at least 1")
        groups = self.groups_in(ranges)
        if not groups:
            return []
        if min_splits > 1:
            total = sum(g.size for g in groups)
            split_bytes = max(1, min(split_bytes, math.ceil(total / min_splits)))
        pieces: list[Piece] = []
        for g in groups:
            if len(g.entries) == 1:
                if g.entries[0].tombstones:
                    continue  # tombstones that hide nothing: the range reads as empty
                pieces.extend(_cut_partition(g.entries[0], ranges, split_bytes, open_entry))
            else:
                pieces.extend(p for p in _cut_overlapping(g, split_bytes, open_entry)
                              if keyranges.clip(ranges, p.start, None, None, p.stop))
        splits: list[list[Piece]] = []
        weights: list[int] = []
        for piece in pieces:
            if not splits or weights[-1] + piece.weight > split_bytes:
                splits.append([])
                weights.append(0)
            splits[-1].append(piece)
            weights[-1] += piece.weight
        return [Split(tuple(p), w) for p, w in zip(splits, weights, strict=True)]


def _cut_partition(entry: PartitionEntry, ranges: Sequence[Range], split_bytes: int,
                   open_entry: OpenEntry) -> list[Piece]:
    size = entry.size
    if size <= split_bytes:
        return [Piece((entry,), weight=size)]
    reader = open_entry(entry)
    nb = reader.block_count
    first = reader.block_range(ranges[0][0], None)[0] if ranges else 0
    last = reader.block_range(None, ranges[-1][1])[1] if ranges else nb
    span = last - first
    if span <= 0:
        return []
    parts = min(span, math.ceil(size * span / max(nb, 1) / split_bytes))
    if parts <= 1:
        return [Piece((entry,), blocks=(first, last), weight=size * span // max(nb, 1))]
    bounds = [first + span * i // parts for i in range(parts + 1)]
    return [Piece((entry,), blocks=(a, b), weight=size * (b - a) // nb)
            for a, b in pairwise(bounds) if b > a]


def _cut_overlapping(group: _Group, split_bytes: int, open_entry: OpenEntry) -> list[Piece]:
    """Overlapping partitions cut into key ranges of about ``split_bytes`` each, using the first
    keys of their blocks as cut points (each stands for one block's bytes)."""
    total = group.size
    parts = math.ceil(total / split_bytes)
    if parts <= 1:
        return [Piece(group.entries, weight=total)]
    marks: list[tuple[bytes, float]] = []
    for e in group.entries:
        reader = open_entry(e)
        per_block = e.size / max(reader.block_count, 1)
        marks.extend((k, per_block) for k in reader.first_keys)
    marks.sort(key=lambda m: m[0])
    cuts: list[bytes] = []
    done, target = 0.0, total / parts
    for key, weight in marks:
        if done >= target and key > group.low and (not cuts or key > cuts[-1]):
            cuts.append(key)
            target += total / parts
        done += weight
    bounds: list[bytes | None] = [None, *cuts, None]
    share = total // (len(cuts) + 1)
    return [Piece(group.entries, start=a, stop=b, weight=share) for a, b in pairwise(bounds)]


# ---- reading ---------------------------------------------------------------------------------
def read_piece(open_entry: OpenEntry, piece: Piece,
               ranges: Sequence[Range] = keyranges.ALL) -> Iterator[pa.RecordBatch]:
    """Key/value batches (large_binary, :data:`SCHEMA`) of ``piece`` inside ``ranges``, in key
    order, each key once with its winning value.

    Args:
        open_entry: opens a partition of the planned version.
        piece: what to read.
        ranges: normalized key ranges to keep.

    Yields:
        Record batches.

    Raises:
        CorruptStoreError: a file is missing or fails its checksums.
    """
    low = min(e.key_range()[0] for e in piece.entries)
    high = max(e.key_range()[1] for e in piece.entries)
    wanted = keyranges.clip(ranges, low, high, piece.start, piece.stop)
    if len(piece.entries) == 1:
        if piece.entries[0].tombstones:
            return
        reader = open_entry(piece.entries[0])
        for start, stop in wanted:
            yield from reader.iter_batches(start, stop, blocks=piece.blocks)
        return
    for start, stop in wanted:
        runs = [list(open_entry(e).iter_batches(start, stop)) if e.overlaps(start, stop) else []
                for e in piece.entries]
        yield from merge_by_priority(runs, [e.tombstones for e in piece.entries])


def read_split(open_entry: OpenEntry, split: Split,
               ranges: Sequence[Range] = keyranges.ALL) -> Iterator[pa.RecordBatch]:
    """Batches of every piece of ``split`` (see :func:`read_piece`), in key order."""
    for piece in split.pieces:
        yield from read_piece(open_entry, piece, ranges)


def read_version_split(io: FileIO, version: str, split: Split, conf: Config,
                       ranges: Sequence[Range] = keyranges.ALL) -> Iterator[pa.RecordBatch]:
    """What a task on another machine runs: open the partitions ``split`` needs (at most
    ``kvio.read.open.partitions`` at once), yield its batches, close them.

    Args:
        io: the store's file I/O.
        version: the planned version.
        split: the split to read.
        conf: settings (verification, caching).
        ranges: normalized key ranges to keep.

    Yields:
        Record batches in key order, each key once with its winning value.

    Raises:
        CorruptStoreError: a file is missing (e.g. the version was garbage-collected while the
            job ran) or fails its checksums.
    """
    cache = PartitionCache(io, version, conf)
    try:
        yield from read_split(cache.get, split, ranges)
    finally:
        cache.close()


def _winners(runs: Sequence[Sequence[pa.RecordBatch]], first_prio: int = 0) -> pa.Table | None:
    """Sorted runs merged into one table holding each key once with its highest-priority row
    and that row's ``prio`` (tombstone rows kept: the caller decides what they hide)."""
    tables = []
    for prio, batches in enumerate(runs, start=first_prio):
        if batches:
            t = pa.Table.from_batches(batches, SCHEMA)
            if t.num_rows:
                tables.append(t.append_column("prio", pa.array(np.full(t.num_rows, prio, np.int32))))
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0].combine_chunks()
    table = pa.concat_tables(tables).combine_chunks()
    table = table.take(pc.sort_indices(table, sort_keys=[("key", "ascending"), ("prio", "descending")]))
    keys = table.column("key").combine_chunks()
    if len(keys) > 1:
        changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
        table = table.filter(pa.concat_arrays([pa.array([True]), changed]))
    return table


def _live(table: pa.Table, deleting: list[int]) -> pa.Table:
    """Rows of a winners table that are not tombstones, without the ``prio`` column."""
    if deleting:
        table = table.filter(pc.invert(pc.is_in(table.column("prio"), pa.array(deleting, pa.int32()))))
    return table.drop_columns(["prio"])


def _patch(base: Sequence[pa.RecordBatch], top: pa.Table,
           deleting: list[int]) -> Iterator[pa.RecordBatch]:
    """A big base run patched with the small table of winners above it: base batches that no
    winner falls into pass through untouched (no copy, no sort); consecutive touched batches
    are patched together, up to :data:`_PATCH_ROWS` rows at a time (so Arrow's per-call cost
    is spread over many rows): they lose the keys the winners replace or delete and get the
    live winners sorted in."""
    top_keys = top.column("key").to_pylist()
    done = 0  # winners emitted so far
    group: list[pa.RecordBatch] = []  # touched base batches waiting to be patched
    group_rows = 0

    def flush(upto: int) -> Iterator[pa.RecordBatch]:
        # winners [done, upto) fall into the group's batches or the gaps between them
        nonlocal group, group_rows, done
        if not group:
            return
        table = pa.Table.from_batches(group, SCHEMA)
        piece = top.slice(done, upto - done)
        kept = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=piece.column("key"))))
        live = _live(piece, deleting).cast(SCHEMA)
        # Both sides are sorted and share no key: put each of the few live rows at its place
        # (binary search in the kept keys) instead of sorting every row of the group again.
        kept_keys = kept.column("key").combine_chunks()
        places = [_search(kept_keys, k) for k in live.column("key").to_pylist()]
        order = np.insert(np.arange(kept.num_rows), places, kept.num_rows + np.arange(len(places)))
        merged = pa.concat_tables([kept, live]).take(pa.array(order))
        yield from merged.combine_chunks().to_batches()
        group, group_rows, done = [], 0, upto

    for batch in base:
        if not batch.num_rows:
            continue
        keys = batch.column(0)
        first, last = keys[0].as_py(), keys[-1].as_py()
        if not group:
            before = bisect_left(top_keys, first, lo=done)
            if before > done:  # winners between the previous base batch and this one
                yield from _live(top.slice(done, before - done), deleting).to_batches()
                done = before
        inside = bisect_right(top_keys, last, lo=done)
        if inside == done and not group:
            yield batch  # no winner falls here: pass it through
            continue
        group.append(batch)
        group_rows += batch.num_rows
        if group_rows >= _PATCH_ROWS:
            yield from flush(inside)
    yield from flush(bisect_right(top_keys, last, lo=done) if group else done)
    if done < len(top_keys):
        yield from _live(top.slice(done), deleting).to_batches()


def _search(keys: pa.Array, key: bytes) -> int:
    """How many of the sorted ``keys`` are smaller than ``key`` (bisect_left on an Arrow array)."""
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid].as_py() < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


#: rows of touched base batches patched together (see :func:`_patch`)
_PATCH_ROWS = 1 << 16


#: the base run is patched instead of sorted with the rest when it holds at least this many
#: times the rows of the runs above it (a store with a few small updates on top)
_PATCH_RATIO = 8


def merge_by_priority(runs: Sequence[Sequence[pa.RecordBatch]],
                      tombstones: Sequence[bool] | None = None) -> Iterator[pa.RecordBatch]:
    """Sorted runs (lowest priority first) merged into one sorted run holding each key once,
    with the value from the highest-priority run that has it. A key whose highest-priority
    row is in a tombstone run is dropped (deleted).

    Args:
        runs: each a key-sorted list of :data:`SCHEMA` batches without duplicate keys.
        tombstones: for each run, whether it is a tombstone run (default: none is).

    Yields:
        Record batches of the merged run.
    """
    deleting = [p for p, t in enumerate(tombstones or ()) if t]
    if len(runs) > 1 and 0 not in deleting:
        base_rows = sum(b.num_rows for b in runs[0])
        above = sum(b.num_rows for run in runs[1:] for b in run)
        if base_rows >= _PATCH_RATIO * above:
            top = _winners(runs[1:], first_prio=1)
            if top is None:
                yield from (b for b in runs[0] if b.num_rows)
            else:
                yield from _patch(runs[0], top, deleting)
            return
    table = _winners(runs)
    if table is not None:
        yield from _live(table, deleting).combine_chunks().to_batches()
