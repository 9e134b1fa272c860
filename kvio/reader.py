"""Reading a published store version: a read-only ``Mapping[bytes, bytes]`` over its partitions.

Point lookups route by key range (highest priority first); everything ordered (iteration,
ranges, ``batches``, ``len`` of overlapping versions) goes through the one read planner,
:mod:`kvio.plan`, exactly as the Spark source, mrjob and the CLI do.
"""
from __future__ import annotations

import resource
import sys
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from . import keyranges, layout, partitions
from .byteslike import as_bytes
from .config import Config
from .errors import CorruptStoreError, ReaderClosedError
from .format import marker
from .format.commit_record import CommitRecord
from .format.manifest import Manifest, PartitionEntry
from .format.partition_reader import SCHEMA, TOMBSTONE, PartitionReader
from .fs import FileIO
from .keyranges import Range, prefix_successor
from .layers import LayerIndex, split_layers
from .mapping import GetMapping
from .pins import Pin
from .plan import ReadPlanner, Split, read_split

__all__ = ["StoreReader", "prefix_successor"]

_MISSING = object()
#: pair counts of overlapping versions (which need a merged scan to count), by (uri, version);
#: versions are immutable, so a count never goes stale
_COUNTS: OrderedDict[tuple[str, str], int] = OrderedDict()
_COUNTS_MAX = 1024
_COUNTS_LOCK = threading.Lock()


def _key(obj: Any) -> bytes:
    return as_bytes(obj, "key")


def _open_limit(conf: Config) -> int:
    """Partitions a reader keeps open. Before Python 3.13 every mapping holds a file
    descriptor, so stay well inside the process's descriptor limit."""
    limit = conf.open_partitions
    if sys.version_info < (3, 13):
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, max(8, soft // 4))
    return limit


def _ranges(start: Any, stop: Any, prefix: Any) -> list[Range]:
    return keyranges.bounded(None if start is None else _key(start),
                             None if stop is None else _key(stop),
                             None if prefix is None else _key(prefix))


class _RangeView:
    """A re-iterable view of a key range of a reader (what items/keys/values return with
    ``start``/``stop``/``prefix``); each iteration scans the range again."""

    def __init__(self, reader: StoreReader, ranges: list[Range], column: int | None):
        self._reader, self._ranges, self._column = reader, ranges, column

    def __iter__(self) -> Iterator[Any]:
        return self._reader._iter_column(self._ranges, self._column)

    def __len__(self) -> int:
        return sum(b.num_rows for b in self._reader._batches(self._ranges))

    def __repr__(self) -> str:
        what = {None: "items", 0: "keys", 1: "values"}[self._column]
        return f"<{what} of {self._reader!r} in {self._ranges}>"


class _Items(ItemsView):
    _mapping: StoreReader

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._mapping._iter_column(keyranges.ALL, None)


class _Keys(KeysView):
    _mapping: StoreReader

    def __iter__(self) -> Iterator[bytes]:
        return self._mapping._iter_column(keyranges.ALL, 0)


class _Values(ValuesView):
    _mapping: StoreReader

    def __iter__(self) -> Iterator[bytes]:  # one scan, no lookup per key
        return self._mapping._iter_column(keyranges.ALL, 1)

    def __contains__(self, value: object) -> bool:
        return any(v == value for v in self)


class StoreReader(GetMapping):
    """A published version of a store as a read-only ``Mapping[bytes, bytes]``.

    Partition files are opened on first use (memory-mapped on local disk, small ranged reads
    elsewhere); at most ``kvio.read.open.partitions`` stay open. After :meth:`close` every
    method raises :class:`~kvio.errors.ReaderClosedError`.

    Args:
        io: the store's file I/O.
        manifest: the version's parsed manifest.
        commit: the commit record that published the version.
        conf: settings.
        pin: the pin on the version (kvio/pins.py) that the reader removes when it closes;
            :meth:`KeyValueSystem.open_store` takes it before the reader opens.
    """

    def __init__(self, io: FileIO, manifest: Manifest, commit: CommitRecord, conf: Config,
                 pin: Pin | None = None):
        self.pin = pin
        if pin is not None:
            pin.bind(self)  # a reader that is never closed releases it when collected
        self.uri = io.uri
        self.io = io
        self.manifest = manifest
        self.commit = commit
        self.version = manifest.version
        self.conf = conf
        self.closed = False
        self.planner = ReadPlanner(manifest)
        live = manifest.live()
        self._disjoint = manifest.disjoint
        # Disjoint: partitions ordered by min key for one bisect. Otherwise every candidate,
        # highest priority (latest in the manifest) first.
        ordered = sorted(live, key=lambda pe: pe[1].key_range()[0]) if self._disjoint \
            else sorted(live, key=lambda pe: -pe[0])
        self._order: list[PartitionEntry] = [e for _, e in ordered]
        self._slot = {e.path: j for j, e in enumerate(self._order)}
        self._mins = [e.key_range()[0] for e in self._order]
        self._maxs = [e.key_range()[1] for e in self._order]
        self._count = manifest.count if manifest.count is not None else _COUNTS.get((self.uri, self.version))
        # Lookup functions of the partitions in ``_order`` (None until opened, and again after
        # the cache closed the partition to stay within its limit).
        self._gets: list[Any] = [None] * len(self._order)
        self._cache = partitions.PartitionCache(io, self.version, conf, _open_limit(conf),
                                                on_evict=self._evicted)
        # Delta layers with few keys: one dict says which partition answers a key, so a get
        # asks one partition however many updates are stacked (kvio/layers.py).
        self._layers: LayerIndex | None = None
        if not self._disjoint and live:
            layers = split_layers(manifest)
            if layers.deltas and layers.delta_keys <= conf.overlay_keys:
                self._layers = LayerIndex(layers, self._slot, self._slot_keys)
        if io.is_local:  # open now (within the limit) so that a later GC cannot break us
            for entry in self._order[:self._cache.capacity]:
                self._partition(entry)

    # ---- partitions ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ReaderClosedError("the store reader is closed (open the store again)",
                                    store=self.uri)

    def _partition(self, entry: PartitionEntry) -> PartitionReader:
        self._check_open()
        reader = self._cache.get(entry)
        j = self._slot.get(entry.path)
        if j is not None:
            self._gets[j] = reader.get
            if len(self._order) == 1 and not reader.tombstones:
                # One live partition: its own lookup is the store's (one call per get; the
                # partition's index answers out-of-range keys as misses).
                self.__dict__["get"] = reader.get  # (shadows the method below)
        return reader

    def _evicted(self, entry: PartitionEntry) -> None:
        j = self._slot.get(entry.path)
        if j is not None:
            self._gets[j] = None
        self.__dict__.pop("get", None)

    def _open_get(self, j: int):
        return self._partition(self._order[j]).get

    def _slot_keys(self, j: int) -> Iterator[pa.Array]:
        for batch in self._partition(self._order[j]).iter_batches():
            yield batch.column(0)

    def partition_readers(self) -> list[PartitionReader]:
        """Open readers of every non-empty partition, in manifest (priority) order. For tools
        that inspect files; more partitions than the open limit are not all kept open."""
        return [self._partition(e) for _, e in self.manifest.live()]

    # ---- point lookups -----------------------------------------------------------------
    def get(self, key, default=None):
        """The value of ``key``, or ``default`` when it is absent.

        Raises:
            InvalidArgumentError: ``key`` is not bytes-like.
            ReaderClosedError: the reader was closed.
            CorruptStoreError: a checksum failed on the way.
        """
        if type(key) is not bytes:
            key = _key(key)
        if self._disjoint:
            j = bisect_right(self._mins, key) - 1
            if j < 0 or key > self._maxs[j]:
                self._check_open()
                return default
            return (self._gets[j] or self._open_get(j))(key, default)
        if self._layers is not None:
            # Install the layered lookup as this reader's get (until a partition is evicted or
            # the reader closes, which remove it again).
            self._check_open()
            get = self._layers.make_get(self._gets, self._open_get, _key, TOMBSTONE)
            self.__dict__["get"] = get
            return get(key, default)
        for j, get in enumerate(self._gets):
            if self._mins[j] <= key <= self._maxs[j]:
                value = (get or self._open_get(j))(key, _MISSING)
                if value is not _MISSING:
                    # A tombstone hides the key from every lower-priority partition.
                    return default if value is TOMBSTONE else value
        self._check_open()
        return default

    def get_many(self, keys, default=None) -> list:
        """Values (or ``default``) for many keys, in input order: keys are grouped by
        partition and each group is looked up in one vectorised pass.

        Raises:
            InvalidArgumentError: a key is not bytes-like.
            ReaderClosedError: the reader was closed.
        """
        self._check_open()
        if type(keys) is not list or set(map(type, keys)) != {bytes}:
            keys = [k if type(k) is bytes else _key(k) for k in keys]
        order = self._order
        if not order:
            return [default] * len(keys)
        if len(order) == 1:
            only = self._partition(order[0])
            values = only.get_many(keys, default)
            return [default if v is TOMBSTONE else v for v in values] if only.tombstones else values
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
                    for i, v in zip(idx, values, strict=True):
                        out[i] = v
            return out
        if self._layers is not None:
            slots = self._layers.slots(keys)
            groups: dict[int, list[int]] = {}
            for i, slot in enumerate(slots):
                if slot is not None:
                    groups.setdefault(slot, []).append(i)
            for slot, idx in groups.items():
                values = self._partition(order[slot]).get_many([keys[i] for i in idx], default)
                for i, v in zip(idx, values, strict=True):
                    out[i] = default if v is TOMBSTONE else v
            return out
        # Overlapping ranges: highest priority first; later partitions see only the misses.
        pending = list(range(len(keys)))
        for j, entry in enumerate(order):
            lo, hi = self._mins[j], self._maxs[j]
            ask = [p for p in pending if lo <= keys[p] <= hi]
            if not ask:
                continue
            values = self._partition(entry).get_many([keys[p] for p in ask], _MISSING)
            found = set()
            for p, v in zip(ask, values, strict=True):
                if v is not _MISSING:
                    out[p] = default if v is TOMBSTONE else v
                    found.add(p)
            pending = [p for p in pending if p not in found]
        return out

    def get_many_array(self, keys: list[bytes], key_array: pa.Array | None = None) -> pa.Array:
        """:meth:`get_many` as one ``large_binary`` Arrow array, null for an absent key (what
        ``kvio serve`` answers in Arrow): a store of one partition without tombstones, the
        common case, gathers the values from the map without a Python object per value.

        Args:
            keys: the keys, a list of ``bytes``.
            key_array: the same keys as a ``large_binary`` Arrow array, if the caller has one.

        Raises:
            InvalidArgumentError: a key is not bytes-like.
            ReaderClosedError: the reader was closed.
        """
        self._check_open()
        order = self._order
        if len(order) == 1:
            only = self._partition(order[0])
            if not only.tombstones:
                return only.get_many_array(keys, key_array)
        return pa.array(self.get_many(keys), type=pa.large_binary())

    def __len__(self) -> int:
        self._check_open()
        if self._count is None:
            self._count = sum(b.num_rows for b in self._batches(keyranges.ALL))
            with _COUNTS_LOCK:
                _COUNTS[(self.uri, self.version)] = self._count
                while len(_COUNTS) > _COUNTS_MAX:
                    _COUNTS.popitem(last=False)
        return self._count

    # ---- ordered access ------------------------------------------------------------------
    def _batches(self, ranges: list[Range]) -> Iterator[pa.RecordBatch]:
        self._check_open()
        for split in self.planner.splits(ranges, self.conf.merge_bytes, self._partition):
            yield from read_split(self._partition, split, ranges)

    def plan(self, ranges: list[Range] | None = None, split_bytes: int | None = None,
             min_splits: int = 1) -> list[Split]:
        """Splits of this version for parallel readers (Spark tasks, mrjob map tasks), read
        with :func:`kvio.plan.read_version_split`.

        Args:
            ranges: normalized key ranges (default: every key).
            split_bytes: target bytes per split (default ``kvio.read.merge.bytes``).
            min_splits: cut into at least about this many splits when the data allows.

        Returns:
            The splits, in key order; they never share a key.

        Raises:
            InvalidArgumentError: ``split_bytes`` or ``min_splits`` is below 1.
            ReaderClosedError: the reader was closed.
        """
        self._check_open()
        return self.planner.splits(keyranges.ALL if ranges is None else ranges,
                                   self.conf.merge_bytes if split_bytes is None else split_bytes,
                                   self._partition, min_splits)

    def batches(self, start=None, stop=None, prefix=None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches (``key``, ``value``: large_binary) of the pairs in key order.

        Args:
            start: lowest key (inclusive); None for no bound.
            stop: keys below this only (exclusive); None for no bound.
            prefix: only keys starting with this; combines with start/stop.

        Returns:
            An iterator of record batches; overlapping partitions are merged so that each
            key appears once with the value of the latest partition.

        Raises:
            InvalidArgumentError: a bound is not bytes-like.
            ReaderClosedError: the reader was closed.
        """
        return self._batches(_ranges(start, stop, prefix))

    def _iter_column(self, ranges: list[Range], column: int | None) -> Iterator[Any]:
        for batch in self._batches(ranges):
            if column is None:
                yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
            else:
                yield from batch.column(column).to_pylist()

    def items_range(self, start=None, stop=None, prefix=None) -> Iterator[tuple[bytes, bytes]]:
        """An iterator of the (key, value) pairs of a range in key order (see :meth:`batches`)."""
        return self._iter_column(_ranges(start, stop, prefix), None)

    def items(self, start=None, stop=None, prefix=None):
        """A view of the (key, value) pairs in key order; with ``start``/``stop`` (half-open)
        or ``prefix``, of that range only. Views are re-iterable."""
        if start is None and stop is None and prefix is None:
            return _Items(self)
        return _RangeView(self, _ranges(start, stop, prefix), None)

    def keys(self, start=None, stop=None, prefix=None):
        """A view of the keys in order (of a range, as :meth:`items`)."""
        if start is None and stop is None and prefix is None:
            return _Keys(self)
        return _RangeView(self, _ranges(start, stop, prefix), 0)

    def values(self, start=None, stop=None, prefix=None):
        """A view of the values in key order (of a range, as :meth:`items`): one scan, no
        lookup per key."""
        if start is None and stop is None and prefix is None:
            return _Values(self)
        return _RangeView(self, _ranges(start, stop, prefix), 1)

    def __iter__(self) -> Iterator[bytes]:
        return self._iter_column(keyranges.ALL, 0)

    def to_table(self, start=None, stop=None, prefix=None) -> pa.Table:
        """The pairs of a range as one Arrow table (see :meth:`batches`)."""
        return pa.Table.from_batches(list(self.batches(start, stop, prefix)), schema=SCHEMA)

    # ---- description -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """A description: version, commit, format, pair count, bytes and every partition with
        its priority, key range (hex) and whether it is a tombstone file (its rows delete).
        The count of an overlapping version is computed once per version and cached."""
        parts = []
        for i, p in enumerate(self.manifest.partitions):
            parts.append({"path": p.path, "count": p.count, "bytes": p.size,
                          "min_key": None if p.min_key is None else p.min_key.hex(),
                          "max_key": None if p.max_key is None else p.max_key.hex(),
                          "priority": i, "tombstones": p.tombstones})
        return {
            "uri": self.uri,
            "version": self.version,
            "commit_seq": self.commit.seq,
            "format_version": self.manifest.format_version,
            "routing": self.manifest.routing,
            "disjoint": self._disjoint,
            "count": len(self),
            "bytes": self.manifest.size,
            "partitions": parts,
            "options": dict(self.manifest.options),
        }

    def verify(self, progress=None) -> None:
        """Check every checksum and the key order of every partition file, one file at a time.

        Args:
            progress: called with each partition's entry after it was checked.

        Raises:
            CorruptStoreError: on the first bad file (named in the error).
            ReaderClosedError: the reader was closed.
        """
        self._check_open()
        # The marker is the one store file that opening does not read (docs/FORMAT.md §1.2).
        marker_file = self.io.path(layout.MARKER)
        try:
            blob = self.io.read_bytes(layout.MARKER)
        except FileNotFoundError:
            raise CorruptStoreError("store marker is missing", store=self.uri,
                                    file=marker_file) from None
        marker.check(blob, store=self.uri, file=marker_file)
        for entry in self.manifest.partitions:
            # Through the cache: files already open stay readable even if this version was
            # garbage-collected since, and at most the open limit stays open.
            self._partition(entry).verify_all()
            if progress:
                progress(entry)

    def close(self) -> None:
        """Close every open partition file and remove the reader's pin. Idempotent; later
        use raises ReaderClosedError."""
        self.closed = True
        self._cache.close()
        self._gets = [None] * len(self._order)
        self.__dict__.pop("get", None)
        if self.pin is not None:
            self.pin.release()

    def __enter__(self) -> StoreReader:
        self._check_open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return (f"<StoreReader {self.uri} version={self.version} "
                f"partitions={len(self.manifest.partitions)}{state}>")
