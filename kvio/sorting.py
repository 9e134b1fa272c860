"""Sorting and de-duplicating key/value batches in bounded memory.

Every writer that accepts pairs in any order uses this module (``kvio import``, the Spark data
source through :mod:`kvio.task_writer`):

* :class:`ExternalSorter` buffers batches up to a memory budget, sorts each full buffer and
  spills it to a local scratch directory as one sorted run (an Arrow IPC stream), then merges
  the runs (:func:`merge_runs`), a bounded number at a time.
* :class:`Deduper` turns a sorted stream into strictly increasing keys by the ``duplicates``
  policy: ``error``, ``first`` or ``last``.

Ties keep arrival order throughout (stable sorts; earlier runs win merge ties), which is what
``first`` and ``last`` refer to. Only pyarrow: no engine and no store filesystem; runs are
scratch data on local disk, read back sequentially (not memory-mapped), so the resident memory
of a sort stays near its budget whatever the input size.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidArgumentError, KeyOrderError, KvioError
from .format.partition_reader import SCHEMA

__all__ = ["DUPLICATES", "SCHEMA", "Deduper", "ExternalSorter", "in_order", "merge_runs",
           "normalize_batch", "spill_root"]

DUPLICATES = ("error", "first", "last")
_MAX_BATCH_BYTES = 1 << 20  # batches of sorted runs; one per run is in memory while merging
_MIN_BATCH_BYTES = 64 << 10
_DEFAULT_ADVICE = "set duplicates=first or duplicates=last to keep one value"


# ---- input -------------------------------------------------------------------------------------
def normalize_batch(batch: pa.RecordBatch, key_column: str, value_column: str,
                    store: str | None) -> pa.RecordBatch:
    """The key and value columns of ``batch`` as one large_binary batch.

    Args:
        batch: input rows; the two columns must be binary or string (of any offset width).
        key_column: name of the key column.
        value_column: name of the value column.
        store: the store being written, for error messages.

    Returns:
        A batch of :data:`SCHEMA` (a zero-copy cast where the layout allows).

    Raises:
        KvioError: a key or value is null (names the column and the first row).
    """
    columns = []
    for what, name in (("key", key_column), ("value", value_column)):
        col = batch.column(name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            hint = ("filter those rows out first (in Spark: df.where(df[{0!r}].isNotNull()))"
                    if what == "key" else
                    "use an empty value instead (in Spark: F.coalesce(df[{0!r}], F.lit(b'')))")
            raise KvioError(f"{what} column {name!r} is null in {col.null_count} row(s) of the "
                            f"input (first at row {row} of a batch); kvio {what}s cannot be null: "
                            + hint.format(name), store=store)
        if col.type != pa.large_binary():
            col = pc.cast(col, pa.large_binary())
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def in_order(keys: pa.Array) -> bool:
    """Whether ``keys`` never decrease (unsigned byte order; equal neighbours allowed).

    Args:
        keys: a binary array.

    Returns:
        True when sorted.
    """
    n = len(keys)
    return n < 2 or bool(pc.all(pc.less_equal(keys.slice(0, n - 1), keys.slice(1))).as_py())


def _last_key(batch: pa.RecordBatch) -> bytes:
    return batch.column(0)[batch.num_rows - 1].as_py()


# ---- duplicates --------------------------------------------------------------------------------
class Deduper:
    """Sorted batches in, batches with strictly increasing keys out.

    Equal keys are resolved by ``mode``: ``error`` raises naming the key, ``first``/``last``
    keep the earliest/latest in arrival order. A run of equal keys may cross batch
    boundaries, so for ``last`` the final row of each batch is held back until the next batch
    shows whether the run continues (:meth:`take_held` releases it at the end).

    Args:
        mode: one of :data:`DUPLICATES`.
        store: the store being written, for error messages.
        advice: what the duplicate-key error tells the user to do (the option's spelling
            differs between the CLI and the engines).

    Raises:
        InvalidArgumentError: an unknown ``mode``.
    """

    def __init__(self, mode: str, store: str | None, advice: str = _DEFAULT_ADVICE):
        if mode not in DUPLICATES:
            raise InvalidArgumentError(f"duplicates must be one of {', '.join(DUPLICATES)}, "
                                       f"got {mode!r}", store=store)
        self.mode = mode
        self.store = store
        self.advice = advice
        self.last_key: bytes | None = None
        self.held: pa.RecordBatch | None = None

    def _error(self, key: bytes) -> KeyOrderError:
        return KeyOrderError(f"duplicate key in the input (duplicates=error; {self.advice})",
                             store=self.store, key=key)

    def push(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """Add the next sorted batch.

        Args:
            batch: rows of :data:`SCHEMA`, sorted, none before the previous batch's keys.

        Returns:
            The rows that are final after ``batch``; None when there are none.

        Raises:
            KeyOrderError: a duplicate key with ``mode="error"``.
        """
        if batch.num_rows == 0:
            return None
        keys = batch.column(0)
        if self.last_key is not None and keys[0].as_py() == self.last_key:
            if self.mode == "error":
                raise self._error(self.last_key)
            if self.mode == "first":  # equal keys are contiguous at the head: drop them
                repeats = pc.sum(pc.equal(keys, pa.scalar(self.last_key, keys.type))).as_py()
                batch = batch.slice(repeats)
                if batch.num_rows == 0:
                    return None
                keys = batch.column(0)
            else:
                self.held = None  # superseded by a later value of the same key
        n = batch.num_rows
        if n > 1:
            same = pc.equal(keys.slice(1), keys.slice(0, n - 1))
            if pc.any(same).as_py():
                if self.mode == "error":
                    raise self._error(keys[pc.index(same, True).as_py()].as_py())
                edge, different = pa.array([True]), pc.invert(same)
                batch = batch.filter(pa.concat_arrays([edge, different]) if self.mode == "first"
                                     else pa.concat_arrays([different, edge]))
                n = batch.num_rows
        self.last_key = _last_key(batch)
        if self.mode != "last":
            return batch
        out, held, self.held = batch.slice(0, n - 1), self.held, batch.slice(n - 1)
        if held is not None:
            out = pa.Table.from_batches([held, out]).combine_chunks().to_batches()[0]
        return out if out.num_rows else None

    def take_held(self) -> pa.RecordBatch | None:
        """The row held back (``last`` only): at the end of the input it is final.

        Returns:
            A one-row batch, or None.
        """
        held, self.held = self.held, None
        return held


# ---- external sort -------------------------------------------------------------------------------
def spill_root(configured: str | None = None) -> str:
    """Where sort runs go.

    Args:
        configured: an explicit directory (an option or ``kvio.sort.spill.dir``).

    Returns:
        ``configured``, else the first of ``$SPARK_LOCAL_DIRS`` (the scratch disks a Spark
        executor is given), else the system temp dir. Runs are scratch data, never part of
        a store.
    """
    if configured:
        return configured
    local_dirs = os.environ.get("SPARK_LOCAL_DIRS")
    if local_dirs:
        return local_dirs.split(",")[0]
    return tempfile.gettempdir()


def _rebatch(batches: Iterable[pa.RecordBatch], batch_bytes: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of at most about ``batch_bytes`` (slices, not copies)."""
    for batch in batches:
        if batch.nbytes <= batch_bytes:
            yield batch
            continue
        rows = max(1, int(batch_bytes * batch.num_rows / batch.nbytes))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


def _write_run(path: str, batches: Iterable[pa.RecordBatch], batch_bytes: int) -> None:
    # Small batches: merging reads one batch of every run at a time.
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as out:
        for batch in _rebatch(batches, batch_bytes):
            out.write_batch(batch)


def _read_run(path: str) -> Iterator[pa.RecordBatch]:
    # Read, not memory-mapped: mapped pages would count as resident memory until the whole
    # run had been touched, so the merge would look as big as the input.
    with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
        yield from reader


def _chunks_in_order(keys: pa.ChunkedArray) -> bool:
    previous: bytes | None = None
    for chunk in keys.chunks:
        if not len(chunk):
            continue
        if (previous is not None and previous > chunk[0].as_py()) or not in_order(chunk):
            return False
        previous = chunk[len(chunk) - 1].as_py()
    return True


def _sorted(table: pa.Table) -> pa.Table:
    keys = table.column(0)
    if _chunks_in_order(keys):
        return table
    return table.take(pc.sort_indices(keys))  # Arrow's sort is stable


class ExternalSorter:
    """Sorts batches of any size in about ``memory`` bytes of buffer.

    :meth:`add` buffers batches. They are sorted a chunk at a time (a sixteenth of the
    budget), and each time ``memory`` bytes are buffered the sorted chunks are merged into one
    run spilled to ``spill_dir``, so no step copies the whole buffer. :meth:`merged` yields
    every row in key order. Sorts are stable and merges prefer earlier runs, so ties keep
    arrival order. Use it as a context manager (or call :meth:`close`): that removes the
    spilled runs.

    Args:
        memory: bytes of input buffered before a run is spilled; peak memory is about one and
            a half times this.
        spill_dir: a local directory; the runs go into a fresh ``kvio-sort-*`` directory in it
            (created on the first spill).
    """

    def __init__(self, memory: int, spill_dir: str):
        self.memory = max(1, int(memory))
        self.spill_root = spill_dir
        self.spill_dir: str | None = None
        self.batch_bytes = min(_MAX_BATCH_BYTES, max(_MIN_BATCH_BYTES, self.memory // 64))
        self.chunk_bytes = max(self.batch_bytes, self.memory // 16)
        self.pending: list[pa.RecordBatch] = []  # not sorted yet
        self.pending_bytes = 0
        self.chunks: list[pa.Table] = []         # sorted, in arrival order
        self.buffered = 0
        self.runs: list[str] = []
        self._made = 0

    def __enter__(self) -> ExternalSorter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fan_in(self) -> int:
        """Runs merged at once. A merge round holds a batch of each run, and sorting the round
        copies it twice, so this keeps a round well within the budget."""
        return max(2, self.memory // (4 * self.batch_bytes))

    def add(self, batch: pa.RecordBatch) -> None:
        """Buffer a batch of :data:`SCHEMA`; spills a sorted run when the buffer is full.

        Args:
            batch: rows in any order.
        """
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_bytes += batch.nbytes
        self.buffered += batch.nbytes
        if self.pending_bytes >= self.chunk_bytes:
            self._sort_pending()
        if self.buffered >= self.memory:
            self._spill()

    def _sort_pending(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending, SCHEMA).combine_chunks()
            self.pending, self.pending_bytes = [], 0
            self.chunks.append(_sorted(table))

    def _memory_runs(self) -> list[list[pa.RecordBatch]]:
        """The buffer as sorted runs in small batches (slices: merging them takes rounds of a
        few batches, not the whole buffer), and empty it."""
        self._sort_pending()
        runs = [list(_rebatch(chunk.to_batches(), self.batch_bytes)) for chunk in self.chunks]
        self.chunks, self.buffered = [], 0
        return runs

    def _new_run_path(self) -> str:
        if self.spill_dir is None:
            os.makedirs(self.spill_root, exist_ok=True)
            self.spill_dir = tempfile.mkdtemp(prefix="kvio-sort-", dir=self.spill_root)
        self._made += 1
        return os.path.join(self.spill_dir, f"run-{self._made:05d}.arrows")

    def _spill(self) -> None:
        path = self._new_run_path()
        _write_run(path, merge_runs(self._memory_runs()), self.batch_bytes)
        self.runs.append(path)

    def _reduce_runs(self) -> None:
        """Merge runs into bigger ones until at most :attr:`fan_in` are left. The first runs
        are merged into one that takes their place, so earlier runs still win ties."""
        while len(self.runs) > self.fan_in:
            group, rest = self.runs[:self.fan_in], self.runs[self.fan_in:]
            path = self._new_run_path()
            _write_run(path, merge_runs([_read_run(p) for p in group]), self.batch_bytes)
            for p in group:
                os.remove(p)
            self.runs = [path, *rest]

    def merged(self, before: Sequence[Iterable[pa.RecordBatch]] = ()) -> Iterator[pa.RecordBatch]:
        """Every row added, in key order.

        Args:
            before: sorted runs that arrived before anything added here (they win ties).

        Returns:
            An iterator of batches of :data:`SCHEMA`, sorted; ties in arrival order.
        """
        in_memory = self._memory_runs()
        self._reduce_runs()
        return merge_runs([*before, *(_read_run(p) for p in self.runs), *in_memory])

    def close(self) -> None:
        """Remove the spilled runs (idempotent)."""
        self.pending, self.pending_bytes, self.chunks, self.buffered = [], 0, [], 0
        self.runs = []
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self.spill_dir = None


class _Cursor:
    def __init__(self, run: Iterable[pa.RecordBatch]):
        self.it = iter(run)
        self.batch: pa.RecordBatch | None = None
        self.advance()

    def advance(self) -> None:
        self.batch = None
        for batch in self.it:
            if batch.num_rows:
                self.batch = batch
                return

    def take_through(self, bound: bytes) -> list[pa.RecordBatch]:
        """Every row with key <= bound, possibly spanning several batches of this run."""
        taken = []
        while self.batch is not None:
            keys = self.batch.column(0)
            n = pc.sum(pc.less_equal(keys, pa.scalar(bound, pa.large_binary()))).as_py() or 0
            if n == 0:
                break
            if n < self.batch.num_rows:
                taken.append(self.batch.slice(0, n))
                self.batch = self.batch.slice(n)
                break
            taken.append(self.batch)
            self.advance()
        return taken


def merge_runs(runs: Sequence[Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """K-way merge of sorted runs, vectorised.

    Each round takes, from every run, the rows up to the smallest "last key of the current
    batch" among the runs (no later row can sort before them) and sorts that slice stably with
    earlier runs first, which keeps ties in arrival order. Memory: one batch per run plus one
    round's output.

    Args:
        runs: sorted runs of batches of :data:`SCHEMA`, in arrival order.

    Yields:
        Batches of every row, in key order.
    """
    cursors = [c for c in (_Cursor(r) for r in runs) if c.batch is not None]
    while cursors:
        if len(cursors) == 1:
            cursor = cursors[0]
            while cursor.batch is not None:
                yield cursor.batch
                cursor.advance()
            return
        bound = min(_last_key(c.batch) for c in cursors if c.batch is not None)
        parts: list[pa.RecordBatch] = []
        for cursor in cursors:
            parts.extend(cursor.take_through(bound))
        table = pa.Table.from_batches(parts, SCHEMA).combine_chunks()
        keys = table.column(0).chunk(0)
        if not in_order(keys):
            table = table.take(pc.sort_indices(keys))
        yield from table.to_batches()
        cursors = [c for c in cursors if c.batch is not None]
