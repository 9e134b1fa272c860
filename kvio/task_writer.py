"""Writing one task's pairs, in any order, as sorted partition files in bounded memory.

This is what ``kvio import`` and each task of the Spark data source run. Pairs arrive in the
input's order. While they arrive in key order they stream straight into the partition writer
and nothing is buffered. At the first row out of order the task switches to an external sort
(:mod:`kvio.sorting`): what it already wrote becomes the first sorted run (read back from its
partition files), the rest is sorted in runs of ``kvio.sort.memory`` spilled to local disk,
and everything is merged into a fresh attempt of the task; the first attempt is removed.
Duplicate keys are resolved in arrival order (``duplicates=error|first|last``).
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .committer import JobContext, TaskAttempt
from .config import Config
from .format.manifest import PartitionEntry
from .format.partition_reader import PartitionReader
from .partitions import open_partition
from .sorting import DUPLICATES, Deduper, ExternalSorter, in_order, normalize_batch, spill_root
from .writer import SortedPairWriter

__all__ = ["DUPLICATES", "TaskResult", "write_any_order", "write_task"]


@dataclass(frozen=True)
class TaskResult:
    """What one task wrote.

    Attributes:
        message: the task's commit message (hand it to ``Job.commit``).
        rows_in: pairs that arrived.
        rows_written: pairs written (``rows_in`` minus dropped duplicates).
        input_sorted: True when the pairs arrived in key order (no external sort ran).
    """
    message: dict[str, Any]
    rows_in: int
    rows_written: int
    input_sorted: bool

    @property
    def dropped(self) -> int:
        """Pairs dropped as duplicates (``duplicates=first|last``)."""
        return self.rows_in - self.rows_written


def write_task(ctx: JobContext, task_id: int, batches: Iterable[pa.RecordBatch], *,
               key_column: str = "key", value_column: str = "value", duplicates: str = "error",
               sort_memory: int | None = None, spill_dir: str | None = None) -> tuple[dict, int]:
    """:func:`write_any_order` returning ``(commit message, rows written)``.

    Args:
        ctx: the job's context (from the driver).
        task_id: this task's id.
        batches: the task's rows, in any order.
        key_column: name of the key column (binary or string).
        value_column: name of the value column (binary or string).
        duplicates: ``error``, ``first`` or ``last``.
        sort_memory: bytes buffered before a sorted run is spilled (default:
            ``kvio.sort.memory``).
        spill_dir: where runs go (default: ``kvio.sort.spill.dir``, Spark's local dirs, or the
            temp dir).

    Returns:
        The task's commit message and the number of pairs written.

    Raises:
        KeyOrderError: a duplicate key with ``duplicates="error"``.
        KvioError: a null key or value, or a write failure (the attempt's files are removed).
    """
    result = write_any_order(ctx, task_id, batches, key_column=key_column,
                             value_column=value_column, duplicates=duplicates,
                             sort_memory=sort_memory, spill_dir=spill_dir)
    return result.message, result.rows_written


def write_any_order(ctx: JobContext, task_id: int, batches: Iterable[pa.RecordBatch], *,
                    key_column: str = "key", value_column: str = "value",
                    duplicates: str = "error", sort_memory: int | None = None,
                    spill_dir: str | None = None, advice: str | None = None,
                    on_written: Callable[[int], Any] | None = None) -> TaskResult:
    """Write one task's rows as sorted partition files of a new attempt of ``task_id``.

    Args:
        ctx: the job's context (from the driver).
        task_id: this task's id.
        batches: the task's rows, in any order.
        key_column: name of the key column (binary or string).
        value_column: name of the value column (binary or string).
        duplicates: ``error``, ``first`` or ``last``: which of equal keys to keep, in arrival
            order.
        sort_memory: bytes buffered before a sorted run is spilled (default:
            ``kvio.sort.memory``); peak memory of the sort is about twice this.
        spill_dir: where runs go (default: ``kvio.sort.spill.dir``, Spark's local dirs, or the
            temp dir).
        advice: what a duplicate-key error tells the user to do, in the caller's terms.
        on_written: called with a number of pairs each time the final output grows, once the
            input turned out to be unsorted (a sorted input streams as it is read).

    Returns:
        The commit message and counts.

    Raises:
        InvalidArgumentError: an unknown ``duplicates`` policy.
        KeyOrderError: a duplicate key with ``duplicates="error"``.
        KvioError: a null key or value, or a write failure. Any failure removes the files of
            the task's attempts before it is raised.
    """
    store = ctx.uri
    conf = Config(ctx.conf)
    dedupe = Deduper(duplicates, store) if advice is None else Deduper(duplicates, store, advice)
    memory = conf.sort_memory if sort_memory is None else sort_memory
    scratch = spill_root(spill_dir or conf.sort_spill_dir)
    counter = _Counter(batches, key_column, value_column, store)
    attempt = TaskAttempt(ctx, task_id)
    if ctx.skip:  # mode=ignore and the store exists: write nothing
        for _ in counter:
            pass
        return TaskResult(attempt.commit(), counter.rows, 0, True)
    # Progress counts the final output only: a sorted prefix may be written twice.
    writer = _Output(SortedPairWriter(attempt), None)
    try:
        last: bytes | None = None
        for batch in counter:
            keys = batch.column(0)
            if (last is None or last <= keys[0].as_py()) and in_order(keys):
                writer.put(dedupe.push(batch))
                last = keys[batch.num_rows - 1].as_py()
                continue
            message, written = _sort_rest(ctx, task_id, attempt, writer, dedupe, batch, counter,
                                          memory, scratch, on_written)
            return TaskResult(message, counter.rows, written, False)
        writer.put(dedupe.take_held())
        return TaskResult(writer.close(), counter.rows, writer.count, True)
    except BaseException:
        writer.discard()
        raise


class _Counter:
    """The input as normalized batches, counting rows. One pass: iterating it again continues
    where the last loop stopped (the sorting path takes over the rest of the input)."""

    def __init__(self, batches: Iterable[pa.RecordBatch], key_column: str, value_column: str,
                 store: str):
        self._batches = iter(batches)
        self._columns = (key_column, value_column)
        self._store = store
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        batch = next(self._batches)
        while not batch.num_rows:
            batch = next(self._batches)
        self.rows += batch.num_rows
        return normalize_batch(batch, *self._columns, self._store)


class _Output:
    """A partition writer fed with optional batches, reporting progress."""

    def __init__(self, writer: SortedPairWriter, on_written: Callable[[int], Any] | None):
        self.writer = writer
        self.on_written = on_written

    @property
    def count(self) -> int:
        return self.writer.count

    def put(self, batch: pa.RecordBatch | None) -> None:
        if batch is None or not batch.num_rows:
            return
        self.writer.put_many(batch)
        if self.on_written is not None:
            self.on_written(batch.num_rows)

    def close(self) -> dict[str, Any]:
        return self.writer.close()

    def discard(self) -> None:
        self.writer.discard()


def _read_back(attempt: TaskAttempt, message: dict) -> tuple[list[PartitionReader],
                                                                Iterator[pa.RecordBatch]]:
    """The partition files an attempt wrote, as one sorted run (and the readers to close)."""
    readers = []
    for doc in message["partitions"]:
        rel = posixpath.join(attempt.job_dir, doc["path"])
        readers.append(open_partition(attempt.io, rel, PartitionEntry.from_json(doc), attempt.conf))

    def run() -> Iterator[pa.RecordBatch]:
        for reader in readers:
            yield from reader.iter_batches()
    return readers, run()


def _sort_rest(ctx: JobContext, task_id: int, attempt: TaskAttempt, writer: _Output,
               dedupe: Deduper, first_unsorted: pa.RecordBatch, rest: Iterable[pa.RecordBatch],
               sort_memory: int, scratch: str,
               on_written: Callable[[int], Any] | None) -> tuple[dict, int]:
    """The input stopped being sorted: finish the sorted prefix as run 0, sort the rest with
    spilling, merge everything into a new attempt and remove the first one."""
    held = dedupe.take_held()  # arrived before ``first_unsorted``, not written yet
    prefix_message = writer.close()
    readers: list[PartitionReader] = []
    final = _Output(SortedPairWriter(TaskAttempt(ctx, task_id)), on_written)
    try:
        with ExternalSorter(sort_memory, scratch) as sorter:
            if held is not None:
                sorter.add(held)
            sorter.add(first_unsorted)
            for batch in rest:
                sorter.add(batch)
            readers, run0 = _read_back(attempt, prefix_message)
            merged_dedupe = Deduper(dedupe.mode, ctx.uri, dedupe.advice)
            for chunk in sorter.merged(before=[run0]):
                final.put(merged_dedupe.push(chunk))
            final.put(merged_dedupe.take_held())
        message = final.close()
    except BaseException:
        final.discard()
        raise
    finally:
        for reader in readers:
            reader.close()
        attempt.abort()
    return message, final.count
