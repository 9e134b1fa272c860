"""Writing sorted pairs into partition files, and the single-process store writer.

:class:`SortedPairWriter` is what every writer shares (the Python API, Spark tasks, MapReduce
reducers): it checks types and key order, cuts blocks at ``kvio.block.size`` and rolls over to
a new partition file past ``kvio.partition.size.max``, inside one committer task attempt.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .byteslike import as_bytes as _as_bytes
from .committer import Job, TaskAttempt
from .config import Config
from .errors import ArgumentTypeError, KeyOrderError, PairTooLargeError, WriterClosedError
from .format import xxh3
from .format.partition_writer import PartitionWriter, key_hashes

_PAIR_OVERHEAD = 16 + 24  # two int64 offsets + about 1/0.7 of a 16-byte index slot
_CHUNK_PAIRS = 1 << 15  # pairs checked and cut into blocks at a time by put_many
_HASH_WINDOW = 1 << 16  # rows of an Arrow input hashed at a time
_BYTES = {bytes}
_first, _second = itemgetter(0), itemgetter(1)
_lt = operator.lt
_TWO = {2}


def _types(items) -> set:
    return set(map(type, items))


def _binary_column(col: pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    """The column as binary or large_binary, without copying data where the layout allows
    (strings are reinterpreted as bytes; only view types are cast)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.type == pa.string():
        col = col.view(pa.binary())
    elif col.type == pa.large_string():
        col = col.view(pa.large_binary())
    elif pa.types.is_binary_view(col.type) or pa.types.is_string_view(col.type):
        col = pc.cast(col, pa.large_binary())
    elif col.type not in (pa.binary(), pa.large_binary()):
        raise ArgumentTypeError(f"column {name!r} has type {col.type}; kvio stores bytes: cast it to "
                        "binary or string first")
    if col.null_count:
        row = pc.index(pc.is_null(col), True).as_py()
        raise ArgumentTypeError(f"column {name!r} has a null at row {row}; keys and values cannot be null "
                        "(use b'' for an empty value)")
    return col


def _column_buffers(col: pa.Array) -> tuple[np.ndarray, pa.Buffer | bytes]:
    """(offsets starting at 0 as int64, data buffer) of a binary or large_binary array; the
    data is not copied."""
    width = "<i4" if col.type == pa.binary() else "<i8"
    offsets = np.frombuffer(col.buffers()[1], dtype=width, count=len(col) + 1,
                            offset=col.offset * (4 if width == "<i4" else 8)).astype(np.int64, copy=False)
    base, end = int(offsets[0]), int(offsets[-1])
    return offsets - base, col.buffers()[2].slice(base, end - base) if end > base else b""


class SortedPairWriter:
    def __init__(self, attempt: TaskAttempt, conf: Config | None = None, *,
                 tombstones: bool = False):
        self.attempt = attempt
        #: writes tombstone files (docs/FORMAT.md §3.8): every key put is deleted, values empty
        self.tombstones = tombstones
        self.conf = conf or attempt.conf
        self.store = attempt.ctx.uri
        self._last: bytes | None = None
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._buffered = 0
        self._part: PartitionWriter | None = None
        self._part_file: IO[bytes] | None = None
        self._part_rel: str | None = None
        # Remote stores get small blocks: a cold get there reads one index page and one block,
        # while scans read many consecutive blocks per request (docs/FORMAT.md §3.3).
        self._block_size = self.conf.block_size_for(attempt.io.is_local)
        self._room = 0  # bytes put() may add before _make_room has anything to decide
        self.count = 0
        self.bytes = 0
        self.closed = False
        self._update_room()

    # ---- partitions --------------------------------------------------------------------
    def _open_partition(self) -> PartitionWriter:
        rel, handle = self.attempt.new_partition_file(direct=self.conf.write_direct == "true")
        self._part_rel, self._part_file = rel, handle
        self._part = PartitionWriter(handle, codec=self.conf.compression,
                                     level=self.conf.compression_level,
                                     load_factor=self.conf.index_load_factor,
                                     tombstones=self.tombstones)
        return self._part

    def _finish_partition(self) -> None:
        self._flush_block()
        if self._part is None:
            return
        # _open_partition sets the file and its path together with the partition writer.
        assert self._part_file is not None and self._part_rel is not None
        info = self._part.finish()
        self.attempt.io.sync_file(self._part_file)
        self._part_file.close()
        self.attempt.add_partition(self._part_rel, info)
        self.bytes += info["size"]
        self._part = self._part_file = None
        self._update_room()

    def _flush_block(self) -> None:
        if self._keys:
            (self._part or self._open_partition()).write_pairs(self._keys, self._values)
            self._keys, self._values, self._buffered = [], [], 0
            self._update_room()

    def _update_room(self) -> None:
        """How many more bytes fit before ``_make_room`` would act: while a pair's size is
        within it, put() can skip the call (the check below would pass)."""
        current = (self._part.estimated_size if self._part else 4096) + self._buffered
        self._room = self.conf.partition_size_max - current

    def _make_room(self, incoming: int, first_key: bytes) -> None:
        """Roll to a new partition if ``incoming`` more bytes would pass the size limit."""
        limit = self.conf.partition_size_max
        if incoming > limit:
            raise PairTooLargeError(f"pair of {incoming} bytes (with overhead) is larger than the "
                                    f"partition limit kvio.partition.size.max={limit} bytes",
                                    store=self.store, key=first_key)
        # Before the first block is flushed, count ~4 KiB for the file's header, index and
        # footer here, not in ``incoming``: a pair's own size decides whether it is too large.
        current = (self._part.estimated_size if self._part else 4096) + self._buffered
        has_rows = self._keys or (self._part is not None and self._part.count)
        if has_rows and current + incoming > limit:
            self._finish_partition()

    # ---- public ------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes) -> None:
        if self.closed:
            raise WriterClosedError("writer is closed", store=self.store)
        if type(key) is not bytes:
            key = _as_bytes(key, "key")
        if type(value) is not bytes:
            value = _as_bytes(value, "value")
        last = self._last
        if last is not None and not last < key:
            raise self._order_error(last, key)
        size = len(key) + len(value) + _PAIR_OVERHEAD
        if size > self._room:
            self._make_room(size, key)
        self._keys.append(key)
        self._values.append(value)
        self._buffered += size
        self._room -= size
        self._last = key
        self.count += 1
        if self._buffered >= self._block_size:
            self._flush_block()

    def _order_error(self, previous: bytes, key: bytes) -> KeyOrderError:
        what = "duplicate key" if previous == key else \
            f"keys must be strictly increasing (unsigned byte order); previous key {previous!r}"
        return KeyOrderError(what, store=self.store, key=key)

    def put_many(self, pairs: Iterable[tuple[bytes, bytes]] | pa.Table | pa.RecordBatch,
                 key_column: str = "key", value_column: str = "value") -> None:
        """Many pairs at once: an iterable of (key, value), or an Arrow Table/RecordBatch
        with binary or string ``key``/``value`` columns, already sorted by key.

        Pairs are taken in chunks that are checked (types, order) with a few C-level passes
        and cut into blocks in bulk; a chunk that fails a check is replayed through put(), so
        errors and what was written before them are exactly as with a loop of put()."""
        if isinstance(pairs, (pa.Table, pa.RecordBatch)):
            self._put_arrow(pairs, key_column, value_column)
            return
        if self.closed:
            raise WriterClosedError("writer is closed", store=self.store)
        chunks: Iterator[Sequence[Any]]
        if isinstance(pairs, (list, tuple)):
            chunks = (pairs[i:i + _CHUNK_PAIRS] for i in range(0, len(pairs), _CHUNK_PAIRS))
        else:
            it = iter(pairs)
            chunks = iter(lambda: list(islice(it, _CHUNK_PAIRS)), [])
        for chunk in chunks:
            keys = self._checked_chunk(chunk)
            if keys is None:
                put = self.put
                for key, value in chunk:
                    put(key, value)
            else:
                self._put_sorted(keys, list(map(_second, chunk)))

    def _checked_chunk(self, chunk: Sequence[Any]) -> list[bytes] | None:
        """The chunk's keys if every pair is a 2-sequence of bytes and keys strictly increase
        (after the last key put); None sends the chunk down the one-by-one path."""
        try:
            if set(map(len, chunk)) != _TWO:
                return None
        except TypeError:  # pairs without len(): let put() unpack them
            return None
        keys = list(map(_first, chunk))
        if _types(keys) != _BYTES or _types(map(_second, chunk)) != _BYTES:
            return None
        if self._last is not None and not self._last < keys[0]:
            return None
        if not all(map(_lt, keys, islice(keys, 1, None))):
            return None
        return keys

    def _put_sorted(self, keys: list[bytes], values: list[bytes]) -> None:
        """Checked lists of bytes: moved into Arrow buffers in one C pass each (no per-block
        joins) and cut into blocks in bulk."""
        self._write_arrays(pa.array(keys, pa.large_binary()), pa.array(values, pa.large_binary()),
                           keys, values)

    def _write_arrays(self, keys: pa.Array, values: pa.Array, key_list: list[bytes] | None = None,
                      value_list: list[bytes] | None = None) -> None:
        """Sorted, checked binary arrays (and, if at hand, the same keys and values as Python
        lists): blocks are zero-copy slices of the arrays' buffers; key hashes are computed a
        window of rows at a time, not per block."""
        koffs, kdata = _column_buffers(keys)
        voffs, vdata = _column_buffers(values)
        key_bytes = np.frombuffer(kdata, np.uint8)
        n = len(keys)
        window: list = [0, 0, None]  # rows [lo, hi) and their hashes

        def hashes(start: int, end: int) -> np.ndarray:
            lo, hi, h = window
            if start < lo or end > hi:
                lo, hi = start, min(n, max(end, start + _HASH_WINDOW))
                # Keys of 9-128 bytes are hashed in numpy passes (kvio/format/xxh3.py), others
                # one xxhash call each.
                h = xxh3.hash_keys(koffs[lo:hi + 1], key_bytes)
                if h is None:
                    rows = key_list[lo:hi] if key_list is not None \
                        else keys.slice(lo, hi - lo).to_pylist()
                    h = key_hashes(rows)
                window[:] = lo, hi, h
            return h[start - lo:end - lo]

        def key_at(i: int) -> bytes:
            return key_list[i] if key_list is not None else keys[i].as_py()

        def write(part: PartitionWriter, start: int, end: int) -> None:
            k0, k1, v0, v1 = int(koffs[start]), int(koffs[end]), int(voffs[start]), int(voffs[end])
            part.write_block(koffs[start:end + 1] - k0, kdata[k0:k1], voffs[start:end + 1] - v0,
                                   vdata[v0:v1], hashes(start, end), key_at(start), key_at(end - 1))

        def rows(start: int, end: int):
            if key_list is not None and value_list is not None:
                return key_list[start:end], value_list[start:end]
            return (keys.slice(start, end - start).to_pylist(), values.slice(start, end - start).to_pylist())

        self._cut_blocks(np.diff(koffs) + np.diff(voffs) + _PAIR_OVERHEAD, write, rows)

    def _cut_blocks(self, pair_sizes: np.ndarray, write, rows) -> None:
        """Write rows in blocks (a block ends with the pair that reaches ``kvio.block.size``,
        as with put()) through ``write(start, end)``. Pairs go through put() one by one
        (``rows(start, end)`` gives them) where bulk cutting could differ from a loop of put():
        while put() has pairs buffered, for a block that would cross the partition limit, and
        for the partly filled last block (which stays buffered). So blocks and partitions end
        exactly where a loop of put() ends them."""
        n = len(pair_sizes)
        cum = np.cumsum(pair_sizes)
        block = self._block_size
        start = 0
        while start < n:
            base = int(cum[start - 1]) if start else 0
            # (pairs already buffered by put() open the first block)
            end = int(np.searchsorted(cum, base + block - self._buffered, side="left")) + 1
            if self._buffered or end > n or int(cum[end - 1]) - base > self._room:
                end = min(end, n)
                put = self.put
                if start:
                    first_keys, _ = rows(start - 1, start)
                    self._last = first_keys[0]
                for key, value in zip(*rows(start, end), strict=True):
                    put(key, value)
            else:
                write(self._part or self._open_partition(), start, end)
                self.count += end - start
                self._update_room()
            start = end
        if n:
            last_keys, _ = rows(n - 1, n)
            self._last = last_keys[0]

    def _put_arrow(self, table, key_column: str, value_column: str) -> None:
        if self.closed:
            raise WriterClosedError("writer is closed", store=self.store)
        names = table.schema.names
        for col in (key_column, value_column):
            if col not in names:
                raise ArgumentTypeError(f"Arrow input has no column {col!r} (columns: {names})")
        keys = _binary_column(table.column(key_column), key_column)
        values = _binary_column(table.column(value_column), value_column)
        n = len(keys)
        if n == 0:
            return
        if n > 1:
            in_order = pc.less(keys.slice(0, n - 1), keys.slice(1))
            if not pc.all(in_order).as_py():
                bad = pc.index(in_order, False).as_py()
                raise self._order_error(keys[bad].as_py(), keys[bad + 1].as_py())
        first = keys[0].as_py()
        if self._last is not None and not self._last < first:
            raise self._order_error(self._last, first)
        self._write_arrays(keys, values)

    def close(self) -> dict[str, Any]:
        """Finish the last partition; returns the task's commit message."""
        if not self.closed:
            self._finish_partition()
            self.closed = True
        return self.attempt.commit()

    def discard(self) -> None:
        """Abort: close any open file and remove the attempt's files."""
        self.closed = True
        if self._part_file is not None:
            self._part_file.close()
            self._part = self._part_file = None
        self.attempt.abort()


class StoreWriter:
    """``with kvs.create_store(uri) as w: w.put(...)``: a one-task job committed on exit.
    An exception inside the block aborts the job: nothing is published.

    Lifecycle: :meth:`commit` (or :meth:`close`, or leaving the block) publishes once; calling
    them again returns the same record. :meth:`abort` publishes nothing. After either, ``put``
    raises :class:`WriterClosedError`; ``commit`` after ``abort`` does too.
    """

    def __init__(self, uri: str, mode: str = "error", conf: dict[str, Any] | None = None,
                 storage_options: dict[str, Any] | None = None):
        self.uri = uri
        self.job = Job.setup(uri, mode=mode, conf=conf, storage_options=storage_options)
        self.skipped = self.job.ctx.skip
        try:
            self._writer = SortedPairWriter(self.job.task(0)) if not self.skipped else None
        except BaseException:
            self.job.abort()
            raise
        self.record: dict[str, Any] | None = None
        self.committed = False
        self.aborted = False

    def _check_open(self) -> None:
        if self.committed or self.aborted:
            state = "committed" if self.committed else "aborted"
            raise WriterClosedError(f"writer was already {state}", store=self.uri)

    def put(self, key: bytes, value: bytes) -> None:
        """Add one pair; keys must strictly increase (unsigned byte order).

        Raises:
            WriterClosedError: the writer was committed or aborted.
            KeyOrderError: ``key`` is not greater than the previous key.
            PairTooLargeError: the pair exceeds ``kvio.partition.size.max``.
        """
        self._check_open()
        if self._writer is not None:
            self._writer.put(key, value)

    def put_many(self, pairs, key_column: str = "key", value_column: str = "value") -> None:
        """Add pairs sorted by key: an iterable of (key, value) or an Arrow Table/RecordBatch.

        Raises:
            WriterClosedError: the writer was committed or aborted.
            KeyOrderError, PairTooLargeError: as :meth:`put`.
        """
        self._check_open()
        if self._writer is not None:
            self._writer.put_many(pairs, key_column, value_column)

    @property
    def count(self) -> int:
        return self._writer.count if self._writer else 0

    def commit(self) -> dict[str, Any] | None:
        """Publish what was put. Idempotent: a second call returns the same record.

        Returns:
            The commit record as a JSON object, or None when nothing was published on purpose
            (mode ignore and the store exists).

        Raises:
            WriterClosedError: the writer was aborted.
            CommitError: publishing failed (``landed`` says whether it happened).
        """
        if self.committed:
            return self.record
        if self.aborted:
            raise WriterClosedError("writer was aborted: nothing was published", store=self.uri)
        if self._writer is None:
            self.committed = True
            return None
        try:
            message = self._writer.close()
            record = self.job.commit([message], num_tasks=1)
        except BaseException:
            if not self.job.committed:
                self.aborted = True
                self.job.abort()
            raise
        self.record = record.to_json() if record is not None else None
        self.committed = True
        return self.record

    def close(self) -> dict[str, Any] | None:
        """Publish unless already committed or aborted (like leaving the ``with`` block).
        Closing twice is fine.

        Returns:
            The commit record as a JSON object; None when nothing was published.
        """
        if self.aborted:
            return None
        return self.commit()

    def abort(self) -> None:
        """Publish nothing and remove what the job wrote (and the store directory, if this
        writer created it and nothing else uses it). Idempotent; after a commit it does
        nothing."""
        if self.committed or self.aborted:
            return
        self.aborted = True
        if self._writer is not None:
            self._writer.discard()
            self.job.abort()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
