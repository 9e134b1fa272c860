"""Reading a published store version: a read-only Mapping[bytes, bytes] over its partitions."""
from __future__ import annotations

import heapq
import posixpath
from bisect import bisect_right
from collections.abc import ItemsView, KeysView, Mapping
from itertools import repeat
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from . import layout
from .config import Config
from .byteslike import as_bytes
from .errors import CorruptStoreError
from .format.partition_reader import SCHEMA, PartitionReader
from .format.source import BufferSource, RangeSource
from .fs import FileIO

_MISSING = object()
MERGE_BATCH_ROWS = 8192


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def open_partition_file(io: FileIO, rel: str, entry: dict[str, Any], conf: Config) -> PartitionReader:
    """A reader of the partition file at ``rel`` (relative to the store root), checked against
    its manifest ``entry``: memory-mapped on local disk, small ranged reads elsewhere."""
    try:  # a remote file is first read (and found missing) when the reader opens it
        if io.is_local:
            source = BufferSource.map_file(io.local_path(rel))
        else:
            source = RangeSource(lambda o, n: io.read_range(rel, o, n), entry["size"], io.path(rel))
        return PartitionReader(source, store=io.uri, expected=entry,
                               verify=conf.verify_checksums, cache_blocks=conf.cache_blocks)
    except FileNotFoundError:
        raise CorruptStoreError("partition file listed in the manifest is missing (was the "
                                "version garbage-collected while it was read?)", store=io.uri,
                                file=io.path(rel)) from None


def _key(obj: Any) -> bytes:
    return as_bytes(obj, "key")


def _bounds(start, stop, prefix) -> tuple[bytes | None, bytes | None]:
    start = None if start is None else _key(start)
    stop = None if stop is None else _key(stop)
    if prefix is not None:
        prefix = _key(prefix)
        start = prefix if start is None or start < prefix else start
        succ = prefix_successor(prefix)
        if succ is not None and (stop is None or succ < stop):
            stop = succ
    return start, stop


class _Items(ItemsView):
    def __iter__(self):
        return self._mapping.items_range()


class _Keys(KeysView):
    def __iter__(self):
        return iter(self._mapping)


class StoreReader(Mapping):
    """A published version of a store. Partition files are opened on first use; on local disk
    they are memory-mapped, elsewhere each lookup issues small ranged reads."""

    def __init__(self, io: FileIO, manifest: dict[str, Any], commit: dict[str, Any], conf: Config):
        self.uri = io.uri
        self.io = io
        self.manifest = manifest
        self.commit = commit
        self.version = manifest["version"]
        self.conf = conf
        parts = manifest["partitions"]
        self._entries = parts
        self._readers: list[PartitionReader | None] = [None] * len(parts)
        live = [i for i, p in enumerate(parts) if p["count"]]
        self._disjoint = manifest["disjoint"]
        # Disjoint: partitions ordered by min key for one bisect. Otherwise: all candidates,
        # highest priority (latest in the manifest) first.
        order = sorted(live, key=lambda i: bytes.fromhex(parts[i]["min_key"])) if self._disjoint \
            else sorted(live, reverse=True)
        self._order = order
        self._mins = [bytes.fromhex(parts[i]["min_key"]) for i in order]
        self._maxs = [bytes.fromhex(parts[i]["max_key"]) for i in order]
        self._count = manifest.get("count")
        # Lookup functions of the partitions in ``order`` (None until opened).
        self._gets: list = [None] * len(order)
        if io.is_local:  # open everything now so a later GC of this version cannot break us
            for i in live:
                self._partition(i)

    # ---- partitions ---------------------------------------------------------------------
    def _partition(self, i: int) -> PartitionReader:
        reader = self._readers[i]
        if reader is None:
            entry = self._entries[i]
            rel = posixpath.join(layout.version_dir(self.version), entry["path"])
            reader = open_partition_file(self.io, rel, entry, self.conf)
            self._readers[i] = reader
            if i in self._order:
                self._gets[self._order.index(i)] = reader.get
            if len(self._order) == 1 and self._order[0] == i:
                # One live partition: its own lookup is the store's (one call per get; the
                # partition's index answers out-of-range keys as misses).
                self.__dict__["get"] = reader.get  # (shadows the method below)
        return reader

    def _open_get(self, j: int):
        self._partition(self._order[j])
        return self._gets[j]

    def partition_readers(self) -> list[PartitionReader]:
        return [self._partition(i) for i in range(len(self._entries))]

    # ---- point lookups -----------------------------------------------------------------
    def get(self, key, default=None):
        if type(key) is not bytes:
            key = _key(key)
        if self._disjoint:
            j = bisect_right(self._mins, key) - 1
            if j < 0 or key > self._maxs[j]:
                return default
            return (self._gets[j] or self._open_get(j))(key, default)
        for j, get in enumerate(self._gets):
            if self._mins[j] <= key <= self._maxs[j]:
                value = (get or self._open_get(j))(key, _MISSING)
                if value is not _MISSING:
                    return value
        return default

    def get_many(self, keys, default=None) -> list:
        """Values (or ``default``) for many keys, in input order: keys are grouped by
        partition and each group is looked up in one vectorised pass."""
        if type(keys) is not list or set(map(type, keys)) != {bytes}:
            keys = [k if type(k) is bytes else _key(k) for k in keys]
        order = self._order
        if not order:
            return [default] * len(keys)
        if len(order) == 1:
            return self._partition(order[0]).get_many(keys, default)
        out = [default] * len(keys)
        if self._disjoint:
            where = np.fromiter(map(bisect_right, repeat(self._mins), keys), dtype=np.int64,
                                count=len(keys)) - 1
            by_part = np.argsort(where, kind="stable")
            bounds = np.searchsorted(where[by_part], np.arange(len(order) + 1))
            for j in range(len(order)):
                idx = by_part[bounds[j]:bounds[j + 1]].tolist()
                if idx:
                    values = self._partition(order[j]).get_many([keys[i] for i in idx], default)
                    for i, v in zip(idx, values):
                        out[i] = v
            return out
        # Overlapping ranges: highest priority first; later partitions see only the misses.
        pending = list(range(len(keys)))
        for j, i in enumerate(order):
            lo, hi = self._mins[j], self._maxs[j]
            ask = [p for p in pending if lo <= keys[p] <= hi]
            if not ask:
                continue
            values = self._partition(i).get_many([keys[p] for p in ask], _MISSING)
            found = set()
            for p, v in zip(ask, values):
                if v is not _MISSING:
                    out[p] = v
                    found.add(p)
            pending = [p for p in pending if p not in found]
        return out

    def __getitem__(self, key) -> bytes:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(b.num_rows for b in self.batches())
        return self._count

    # ---- ordered access ------------------------------------------------------------------
    def batches(self, start=None, stop=None, prefix=None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches (key, value: large_binary) of [start, stop) in key order."""
        start, stop = _bounds(start, stop, prefix)
        if start is not None and stop is not None and start >= stop:
            return
        if self._disjoint:
            for j, i in enumerate(self._order):
                if (stop is not None and self._mins[j] >= stop) :
                    break
                if start is not None and self._maxs[j] < start:
                    continue
                yield from self._partition(i).iter_batches(start, stop)
            return
        yield from self._merged_batches(start, stop)

    def _merged_batches(self, start, stop) -> Iterator[pa.RecordBatch]:
        # Overlapping partitions: k-way merge; on equal keys the highest priority wins.
        def rows(i: int):
            for batch in self._partition(i).iter_batches(start, stop):
                for k, v in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                    yield k, -i, v
        merged = heapq.merge(*(rows(i) for i in self._order))
        keys: list[bytes] = []
        values: list[bytes] = []
        last = None
        for k, _, v in merged:
            if k == last:
                continue
            last = k
            keys.append(k)
            values.append(v)
            if len(keys) >= MERGE_BATCH_ROWS:
                yield pa.RecordBatch.from_arrays([pa.array(keys, pa.large_binary()),
                                                  pa.array(values, pa.large_binary())], schema=SCHEMA)
                keys, values = [], []
        if keys:
            yield pa.RecordBatch.from_arrays([pa.array(keys, pa.large_binary()),
                                              pa.array(values, pa.large_binary())], schema=SCHEMA)

    def items_range(self, start=None, stop=None, prefix=None) -> Iterator[tuple[bytes, bytes]]:
        for batch in self.batches(start, stop, prefix):
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())

    def items(self, start=None, stop=None, prefix=None):
        """All pairs in key order; with start/stop (half-open) or prefix, only that range."""
        if start is None and stop is None and prefix is None:
            return _Items(self)
        return self.items_range(start, stop, prefix)

    def keys(self, start=None, stop=None, prefix=None):
        if start is None and stop is None and prefix is None:
            return _Keys(self)
        return (k for b in self.batches(start, stop, prefix) for k in b.column(0).to_pylist())

    def __iter__(self) -> Iterator[bytes]:
        for batch in self.batches():
            yield from batch.column(0).to_pylist()

    def to_table(self, start=None, stop=None, prefix=None) -> pa.Table:
        return pa.Table.from_batches(list(self.batches(start, stop, prefix)), schema=SCHEMA)

    # ---- description -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        parts = []
        for i, p in enumerate(self._entries):
            parts.append({"path": p["path"], "count": p["count"], "bytes": p["size"],
                          "min_key": p["min_key"], "max_key": p["max_key"], "priority": i})
        return {
            "uri": self.uri,
            "version": self.version,
            "commit_seq": self.commit["seq"],
            "format_version": self.manifest["format_version"],
            "routing": self.manifest["routing"],
            "disjoint": self._disjoint,
            "count": len(self),
            "bytes": sum(p["size"] for p in self._entries),
            "partitions": parts,
            "options": self.manifest.get("options", {}),
        }

    def verify(self, progress=None) -> None:
        """Check every checksum and key order; raises CorruptStoreError on the first bad file."""
        for i in range(len(self._entries)):
            self._partition(i).verify_all()
            if progress:
                progress(self._entries[i])

    def close(self) -> None:
        for r in self._readers:
            if r is not None:
                r.close()
        self._readers = [None] * len(self._entries)
        self._gets = [None] * len(self._order)
        self.__dict__.pop("get", None)

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StoreReader {self.uri} version={self.version} partitions={len(self._entries)}>"
