"""Reading a store in parallel: key ranges, input splits and the Arrow batches a split yields.

Only pyarrow and kvio are needed here; :mod:`spark_jobs.datasource` wraps this for Spark.

* **Key ranges** are sorted, disjoint half-open intervals ``[start, stop)`` of keys in unsigned
  byte order, ``None`` meaning unbounded. Pushed-down filters become key ranges, so pruning is
  exact: a scan limited to the ranges returns exactly the rows the filters accept.
* **Pieces** are the unit of reading: one partition (optionally a range of its blocks), or a
  group of partitions whose key ranges overlap (a merged or appended store), read over a key
  range and merged so that each key appears once, with the value of the highest-priority
  partition. Pieces come out in key order and never share a key, so split *i* holds only keys
  below those of split *i + 1*.
* **Splits** pack consecutive pieces up to a byte budget; each becomes one Spark task.
"""
from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kvio import layout
from kvio.config import Config
from kvio.errors import KvioError
from kvio.format.partition_reader import SCHEMA, PartitionReader
from kvio.fs import FileIO
from kvio.reader import open_partition_file, prefix_successor

Range = tuple["bytes | None", "bytes | None"]
ALL: list[Range] = [(None, None)]
NOTHING: list[Range] = []


# ---- key ranges ------------------------------------------------------------------------------
def _max_start(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _min_stop(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _nonempty(start: bytes | None, stop: bytes | None) -> bool:
    return start is None or stop is None or start < stop


def normalize(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-empty ranges covering the same keys (adjacent ones joined)."""
    items = [(s or None, e) for s, e in ranges if _nonempty(s or None, e)]
    items.sort(key=lambda r: (r[0] is not None, r[0] or b""))
    out: list[Range] = []
    for start, stop in items:
        if out:
            prev_start, prev_stop = out[-1]
            if prev_stop is None:
                break  # the previous range already runs to the end
            if start is None or start <= prev_stop:
                out[-1] = (prev_start, None if stop is None else max(prev_stop, stop))
                continue
        out.append((start, stop))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Keys in both (both arguments normalized)."""
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, stop = _max_start(a[i][0], b[j][0]), _min_stop(a[i][1], b[j][1])
        if _nonempty(start, stop):
            out.append((start, stop))
        a_stop, b_stop = a[i][1], b[j][1]
        if b_stop is None or (a_stop is not None and a_stop <= b_stop):
            i += 1
        else:
            j += 1
    return out


def union(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    return normalize(list(a) + list(b))


def complement(ranges: Sequence[Range]) -> list[Range]:
    """Keys not in ``ranges`` (normalized)."""
    out: list[Range] = []
    previous: bytes | None = None
    for start, stop in ranges:
        if start is not None and (previous is None or previous < start):
            out.append((previous, start))
        if stop is None:
            return out
        previous = stop
    out.append((previous, None))
    return out


def point(key: bytes) -> list[Range]:
    """Just ``key``: the next key in byte order is ``key + b"\\x00"``."""
    return [(key or None, key + b"\x00")]


def prefix(pre: bytes) -> list[Range]:
    return normalize([(pre, prefix_successor(pre))])


def at_least(key: bytes, inclusive: bool) -> list[Range]:
    return normalize([(key if inclusive else key + b"\x00", None)])


def below(key: bytes, inclusive: bool) -> list[Range]:
    return normalize([(None, key + b"\x00" if inclusive else key)])


def touches(ranges: Sequence[Range], low: bytes, high: bytes) -> bool:
    """Whether any range holds a key in the closed interval [low, high]."""
    lo, hi = 0, len(ranges)
    while lo < hi:  # first range whose stop is above ``low``
        mid = (lo + hi) // 2
        stop = ranges[mid][1]
        if stop is not None and stop <= low:
            lo = mid + 1
        else:
            hi = mid
    return lo < len(ranges) and (ranges[lo][0] is None or ranges[lo][0] <= high)


# ---- opening partitions -------------------------------------------------------------------
def open_partition(io: FileIO, rel: str, entry: dict, conf: Config) -> PartitionReader:
    """A reader of the partition file at ``rel`` (relative to the store root), checked against
    its manifest ``entry`` (kvio.reader.open_partition_file)."""
    return open_partition_file(io, rel, entry, conf)


def version_file(version: str, entry: dict) -> str:
    return posixpath.join(layout.version_dir(version), entry["path"])


# ---- planning ----------------------------------------------------------------------------------
@dataclass
class Piece:
    """Part of a store one task reads. ``entries`` are manifest entries, lowest priority
    first; with one entry ``blocks`` may restrict the read to a block range, with several the
    read covers keys in [start, stop) of all of them, merged."""
    entries: list[dict]
    blocks: tuple[int, int] | None = None
    start: bytes | None = None
    stop: bytes | None = None
    weight: int = 0


@dataclass
class Split:
    pieces: list[Piece] = field(default_factory=list)
    weight: int = 0


def _min_max(entry: dict) -> tuple[bytes, bytes]:
    return bytes.fromhex(entry["min_key"]), bytes.fromhex(entry["max_key"])


def overlapping_groups(entries: Sequence[dict]) -> list[list[dict]]:
    """Partitions (with rows) grouped so that key ranges overlap within a group and never
    across groups; groups in key order."""
    groups: list[list[dict]] = []
    high = b""
    for e in sorted(entries, key=lambda e: _min_max(e)[0]):
        low, top = _min_max(e)
        if groups and low <= high:
            groups[-1].append(e)
            high = max(high, top)
        else:
            groups.append([e])
            high = top
    return groups


def plan_splits(manifest: dict, ranges: Sequence[Range], split_bytes: int,
                open_entry: Callable[[dict], PartitionReader], min_splits: int = 1) -> list[Split]:
    """Splits covering every key of ``manifest`` inside ``ranges``, in key order.

    ``open_entry`` is only called for partitions that need their block index: a partition
    bigger than a split (cut into block ranges) or partitions that overlap (cut by key)."""
    live = [e for e in manifest["partitions"] if e["count"]]
    priority = {id(e): i for i, e in enumerate(live)}
    kept = [e for e in live if touches(ranges, *_min_max(e))]
    if not kept:
        return []
    total = sum(e["size"] for e in kept)
    if min_splits > 1:
        split_bytes = max(1, min(split_bytes, math.ceil(total / min_splits)))
    components = overlapping_groups(kept)
    pieces: list[Piece] = []
    for comp in components:
        comp.sort(key=lambda e: priority[id(e)])
        if len(comp) == 1:
            pieces.extend(_cut_partition(comp[0], ranges, split_bytes, open_entry))
        else:
            pieces.extend(cut_overlapping(comp, split_bytes, open_entry))
    splits: list[Split] = []
    for piece in pieces:
        if not splits or (splits[-1].pieces and splits[-1].weight + piece.weight > split_bytes):
            splits.append(Split())
        splits[-1].pieces.append(piece)
        splits[-1].weight += piece.weight
    return splits


def _cut_partition(entry: dict, ranges: Sequence[Range], split_bytes: int,
                   open_entry: Callable[[dict], PartitionReader]) -> list[Piece]:
    size = entry["size"]
    if size <= split_bytes:
        return [Piece([entry], weight=size)]
    reader = open_entry(entry)
    nb = reader.block_count
    first = reader.block_range(ranges[0][0], None)[0] if ranges else 0
    last = reader.block_range(None, ranges[-1][1])[1] if ranges else nb
    span = last - first
    parts = min(span, math.ceil(size * span / max(nb, 1) / split_bytes))
    if parts <= 1:
        return [Piece([entry], blocks=(first, last), weight=size * span // max(nb, 1))]
    bounds = [first + span * i // parts for i in range(parts + 1)]
    return [Piece([entry], blocks=(a, b), weight=size * (b - a) // nb)
            for a, b in zip(bounds, bounds[1:]) if b > a]


def cut_overlapping(entries: list[dict], split_bytes: int,
                     open_entry: Callable[[dict], PartitionReader]) -> list[Piece]:
    """Overlapping partitions cut into key ranges of about ``split_bytes`` each, using the
    first keys of their blocks as candidate cut points (each stands for one block's bytes)."""
    total = sum(e["size"] for e in entries)
    parts = math.ceil(total / split_bytes)
    if parts <= 1:
        return [Piece(entries, weight=total)]
    marks: list[tuple[bytes, float]] = []
    for e in entries:
        reader = open_entry(e)
        per_block = e["size"] / max(reader.block_count, 1)
        marks.extend((k, per_block) for k in reader.first_keys)
    marks.sort(key=lambda m: m[0])
    low = min(_min_max(e)[0] for e in entries)
    cuts: list[bytes] = []
    done, target = 0.0, total / parts
    for key, weight in marks:
        if done >= target and key > low and (not cuts or key > cuts[-1]):
            cuts.append(key)
            target += total / parts
        done += weight
    bounds: list[bytes | None] = [None, *cuts, None]
    share = total // (len(cuts) + 1)
    return [Piece(entries, start=a, stop=b, weight=share) for a, b in zip(bounds, bounds[1:])]


# ---- reading -----------------------------------------------------------------------------------
def read_piece(readers: Sequence[PartitionReader], piece: Piece,
               ranges: Sequence[Range]) -> Iterator[pa.RecordBatch]:
    """Large-binary key/value batches of ``piece`` limited to ``ranges``, in key order."""
    low = min(bytes.fromhex(e["min_key"]) for e in piece.entries)
    high = max(bytes.fromhex(e["max_key"]) for e in piece.entries)
    held = normalize([(_max_start(piece.start, low), _min_stop(piece.stop, high + b"\x00"))])
    wanted = intersect(ranges, held)  # e.g. of a long IN list, only the keys this piece can hold
    if len(readers) == 1:
        for start, stop in wanted:
            yield from readers[0].iter_batches(start, stop, blocks=piece.blocks)
        return
    for start, stop in wanted:
        yield from merge_by_priority([list(r.iter_batches(start, stop)) for r in readers])


def merge_by_priority(runs: Sequence[Sequence[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """Sorted runs (lowest priority first) merged into one sorted run holding each key once,
    with the value from the highest-priority run that has it."""
    tables = []
    for prio, batches in enumerate(runs):
        if batches:
            t = pa.Table.from_batches(batches, SCHEMA)
            tables.append(t.append_column("prio", pa.array(np.full(t.num_rows, prio, np.int32))))
    if not tables:
        return
    if len(tables) == 1:
        yield from tables[0].drop_columns(["prio"]).to_batches()
        return
    table = pa.concat_tables(tables).combine_chunks()
    table = table.take(pc.sort_indices(table, sort_keys=[("key", "ascending"), ("prio", "descending")]))
    keys = table.column("key").combine_chunks()
    if len(keys) > 1:
        changed = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
        table = table.filter(pa.concat_arrays([pa.array([True]), changed]))
    yield from table.drop_columns(["prio"]).combine_chunks().to_batches()


class OutputBatches:
    """Turns large-binary key/value batches into batches of exactly ``schema`` (the Arrow form
    of the Spark schema: binary or string columns), joining small ones to about ``batch_bytes``.
    Casting large_binary to binary rewrites only the offsets; to string it also checks UTF-8."""

    def __init__(self, schema: pa.Schema, store: str, batch_bytes: int = 4 << 20):
        self.schema = schema
        self.store = store
        self.batch_bytes = batch_bytes

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        group: list[pa.RecordBatch] = []
        size = 0
        for batch in batches:
            group.append(batch)
            size += batch.nbytes
            if size >= self.batch_bytes:
                yield self._convert(group)
                group, size = [], 0
        if group:
            yield self._convert(group)

    def _convert(self, group: list[pa.RecordBatch]) -> pa.RecordBatch:
        columns = []
        for i, target in enumerate(self.schema):
            chunks = [b.column(i) for b in group]
            col = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
            try:
                columns.append(pc.cast(col, target.type))
            except pa.ArrowInvalid as exc:
                what = "key" if i == 0 else "value"
                raise KvioError(f"a {what} is not valid UTF-8, so it cannot be read as "
                                f"{target.type} ({exc}); read with {what}Type=binary and decode "
                                "in Spark", store=self.store) from None
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)
