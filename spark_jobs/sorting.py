"""Writing one Spark task's rows as sorted partition files, in bounded memory.

:func:`write_task` is what the data source's Arrow writer runs on an executor. Rows arrive in
the DataFrame's order. While they arrive in key order (``kvio.spark.write_store`` sorts them,
and so does reading a kvio store) they stream straight into the partition writer and nothing is
buffered. At the first row out of order the task switches to an external sort: what it already
wrote becomes the first sorted run (read back from its partition files), the rest is sorted in
memory-bounded chunks spilled to local disk as Arrow IPC files, and all runs are merged into a
fresh task attempt. Ties keep arrival order throughout, which is what ``duplicates=first|last``
refer to.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from kvio import layout
from kvio.committer import JobContext, TaskAttempt
from kvio.errors import KeyOrderError, KvioError
from kvio.format.partition_reader import SCHEMA
from kvio.writer import SortedPairWriter

from .scan import open_partition

DUPLICATES = ("error", "first", "last")
_SPILL_BATCH_BYTES = 1 << 20   # batches of a spilled run (one per run is in memory while merging)
_MEMORY_BATCH_BYTES = 16 << 20  # batches of the in-memory run (fewer, bigger writer calls)


# ---- input -------------------------------------------------------------------------------------
def normalize_batch(batch: pa.RecordBatch, key_column: str, value_column: str,
                    store: str) -> pa.RecordBatch:
    """The key and value columns as large_binary (a zero-copy cast from binary or string),
    failing clearly on a null."""
    columns = []
    for what, name in (("key", key_column), ("value", value_column)):
        col = batch.column(name)
        if col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            hint = ("filter them out first, e.g. df.where(df[{0!r}].isNotNull())" if what == "key"
                    else "use an empty value instead, e.g. F.coalesce(df[{0!r}], F.lit(b''))")
            raise KvioError(f"{what} column {name!r} is null in {col.null_count} row(s) of this "
                            f"task (first at row {row} of a batch); kvio {what}s cannot be null: "
                            + hint.format(name), store=store)
        if col.type != pa.large_binary():
            col = pc.cast(col, pa.large_binary())
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _last_key(batch: pa.RecordBatch) -> bytes:
    return batch.column(0)[batch.num_rows - 1].as_py()


def _in_order(keys: pa.Array) -> bool:
    """Non-decreasing (ties allowed: duplicates are dealt with after sorting)."""
    n = len(keys)
    return n < 2 or pc.all(pc.less_equal(keys.slice(0, n - 1), keys.slice(1))).as_py()


# ---- duplicates --------------------------------------------------------------------------------
class Deduper:
    """Sorted batches in, batches with strictly increasing keys out. Equal keys are resolved
    by ``mode``: ``error`` raises naming the key, ``first``/``last`` keep the earliest/latest
    in arrival order. A run of equal keys may cross batch boundaries, so for ``last`` the final
    row of each batch is held back until the next batch shows whether the run continues."""

    def __init__(self, mode: str, store: str):
        if mode not in DUPLICATES:
            raise KvioError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {mode!r}",
                            store=store)
        self.mode = mode
        self.store = store
        self.last_key: bytes | None = None
        self.held: pa.RecordBatch | None = None

    def _error(self, key: bytes) -> KeyOrderError:
        return KeyOrderError("duplicate key in the input (the default duplicates=error; set the "
                             "option duplicates=first or duplicates=last to keep one value)",
                             store=self.store, key=key)

    def push(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """The rows that are final after ``batch``; None when there are none."""
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
        """The row held back (``last`` only): at the end of the input it is final."""
        held, self.held = self.held, None
        return held


# ---- external sort -------------------------------------------------------------------------------
def spill_root(configured: str | None = None) -> str:
    """Where sort runs go: the option, else Spark's local dirs (set for Python workers), else
    the system temp dir. Runs are scratch data, never part of the store."""
    if configured:
        return configured
    local_dirs = os.environ.get("SPARK_LOCAL_DIRS")
    if local_dirs:
        return local_dirs.split(",")[0]
    return tempfile.gettempdir()


class ExternalSorter:
    """Collects batches; each time ``memory`` bytes are buffered they are sorted (stably, so
    ties keep arrival order) and spilled as one run. :meth:`merged` yields everything sorted."""

    def __init__(self, memory: int, spill_dir: str):
        self.memory = max(1, memory)
        self.spill_dir = spill_dir
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.runs: list[str] = []

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.buffer.append(batch)
        self.buffered += batch.nbytes
        if self.buffered >= self.memory:
            self._spill()

    def _sorted_buffer(self) -> pa.Table:
        table = pa.Table.from_batches(self.buffer, SCHEMA).combine_chunks()
        self.buffer, self.buffered = [], 0
        keys = table.column(0).chunk(0) if table.num_rows else None
        if keys is None or _in_order(keys):
            return table
        return table.take(pc.sort_indices(keys))  # Arrow's sort is stable

    def _spill(self) -> None:
        table = self._sorted_buffer()
        path = os.path.join(self.spill_dir, f"run-{len(self.runs):05d}.arrow")
        rows = max(1, int(_SPILL_BATCH_BYTES * table.num_rows / max(table.nbytes, 1)))
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as out:
            for batch in table.to_batches(max_chunksize=rows):
                out.write_batch(batch)
        self.runs.append(path)

    def _run(self, path: str) -> Iterator[pa.RecordBatch]:
        with pa.memory_map(path, "r") as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def merged(self, before: Sequence[Iterable[pa.RecordBatch]] = ()) -> Iterator[pa.RecordBatch]:
        """All rows in key order; ``before`` are sorted runs that arrived before anything
        added here (they win ties in arrival order)."""
        last: list[Iterable[pa.RecordBatch]] = []
        if self.buffer:
            table = self._sorted_buffer()
            rows = max(1, int(_MEMORY_BATCH_BYTES * table.num_rows / max(table.nbytes, 1)))
            last = [table.to_batches(max_chunksize=rows)]
        runs = [*before, *(self._run(p) for p in self.runs), *last]
        yield from merge_runs(runs)


class _Cursor:
    def __init__(self, run: Iterable[pa.RecordBatch]):
        self.it = iter(run)
        self.batch: pa.RecordBatch | None = None
        self._advance()

    def _advance(self) -> None:
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
            self._advance()
        return taken


def merge_runs(runs: Sequence[Iterable[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """K-way merge of sorted runs, vectorised: each round takes, from every run, the rows up to
    the smallest "last key of the current batch" among the runs (so no later row can sort
    before them), and sorts that slice stably with earlier runs first, which keeps ties in
    arrival order. Memory: one batch per run plus one round's output."""
    cursors = [c for c in (_Cursor(r) for r in runs) if c.batch is not None]
    while cursors:
        if len(cursors) == 1:
            cursor = cursors[0]
            while cursor.batch is not None:
                yield cursor.batch
                cursor._advance()
            return
        bound = min(_last_key(c.batch) for c in cursors)
        parts: list[pa.RecordBatch] = []
        for cursor in cursors:
            parts.extend(cursor.take_through(bound))
        table = pa.Table.from_batches(parts, SCHEMA).combine_chunks()
        keys = table.column(0).chunk(0)
        if not _in_order(keys):
            table = table.take(pc.sort_indices(keys))
        yield from table.to_batches()
        cursors = [c for c in cursors if c.batch is not None]


# ---- one task ----------------------------------------------------------------------------------
def _read_back(attempt: TaskAttempt, message: dict) -> tuple[list, Iterator[pa.RecordBatch]]:
    """The partition files an attempt wrote, as one sorted run (and the readers to close)."""
    readers = []
    for p in message["partitions"]:
        rel = posixpath.join(layout.staging_dir(attempt.ctx.job_id), p["path"])
        readers.append(open_partition(attempt.io, rel, p, attempt.conf))

    def run() -> Iterator[pa.RecordBatch]:
        for reader in readers:
            yield from reader.iter_batches()
    return readers, run()


def write_task(ctx: JobContext, task_id: int, batches: Iterable[pa.RecordBatch], *,
               key_column: str = "key", value_column: str = "value", duplicates: str = "error",
               sort_memory: int = 256 << 20, spill_dir: str | None = None) -> tuple[dict, int]:
    """Write one task's rows as sorted partition files of a new attempt of ``task_id``.
    Returns (the task's commit message, rows written). Any failure removes the attempt's
    files before re-raising."""
    store = ctx.uri
    dedupe = Deduper(duplicates, store)
    attempt = TaskAttempt(ctx, task_id)
    rows = (normalize_batch(b, key_column, value_column, store) for b in batches if b.num_rows)
    if ctx.skip:  # mode=ignore and the store exists: write nothing
        for _ in rows:
            pass
        return attempt.commit(), 0
    writer = SortedPairWriter(attempt)
    try:
        last: bytes | None = None
        for batch in rows:
            keys = batch.column(0)
            if (last is None or last <= keys[0].as_py()) and _in_order(keys):
                out = dedupe.push(batch)
                if out is not None:
                    writer.put_many(out)
                last = _last_key(batch)
                continue
            return _sort_rest(ctx, task_id, attempt, writer, dedupe, batch, rows,
                              sort_memory, spill_root(spill_dir))
        tail = dedupe.take_held()
        if tail is not None:
            writer.put_many(tail)
        return writer.close(), writer.count
    except BaseException:
        writer.discard()
        raise


def _sort_rest(ctx: JobContext, task_id: int, attempt: TaskAttempt, writer: SortedPairWriter,
               dedupe: Deduper, first_unsorted: pa.RecordBatch, rest: Iterator[pa.RecordBatch],
               sort_memory: int, spill_base: str) -> tuple[dict, int]:
    """The input stopped being sorted: finish the sorted prefix as run 0, sort the rest with
    spilling, merge everything into a new attempt and drop the first one."""
    held = dedupe.take_held()  # arrived before ``first_unsorted``, not written yet
    prefix_message = writer.close()
    os.makedirs(spill_base, exist_ok=True)
    spill_dir = tempfile.mkdtemp(prefix="kvio-sort-", dir=spill_base)
    readers: list = []
    final = SortedPairWriter(TaskAttempt(ctx, task_id))
    try:
        sorter = ExternalSorter(sort_memory, spill_dir)
        if held is not None:
            sorter.add(held)
        sorter.add(first_unsorted)
        for batch in rest:
            sorter.add(batch)
        readers, run0 = _read_back(attempt, prefix_message)
        merged_dedupe = Deduper(dedupe.mode, ctx.uri)
        for chunk in sorter.merged(before=[run0]):
            out = merged_dedupe.push(chunk)
            if out is not None:
                final.put_many(out)
        tail = merged_dedupe.take_held()
        if tail is not None:
            final.put_many(tail)
        message = final.close()
    except BaseException:
        final.discard()
        raise
    finally:
        for reader in readers:
            reader.close()
        shutil.rmtree(spill_dir, ignore_errors=True)
        attempt.abort()
    return message, final.count

