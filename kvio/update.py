"""SET and DEL on a write-once store: an update publishes one delta version.

``with kvs.update_store(uri) as u: u.set(k, v); u.delete(k)`` collects operations in any key
order. Leaving the block sorts them with bounded memory (:mod:`kvio.sorting`; the last
operation on a key wins) and publishes one new version through the committer's append mode:
the current partitions, carried and not copied, plus a delta at higher priority made of a
value partition (the keys set) and a tombstone partition (the keys deleted,
docs/FORMAT.md §3.8). An exception inside the block publishes nothing.

An update that loses the race to another publish re-applies its operations on top of the new
version and tries again, at most ``retries`` times, then raises ConcurrentCommitError: no
update is lost silently (docs/COMMIT.md, "Updates").
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .byteslike import as_bytes
from .committer import Job, JobContext, TaskAttempt
from .config import Config
from .errors import ConcurrentCommitError, KvioError, WriterClosedError
from .format.partition_reader import SCHEMA
from .format.txn_record import TxnRef
from .sorting import Deduper, ExternalSorter, spill_root
from .writer import SortedPairWriter

log = logging.getLogger(__name__)

__all__ = ["StoreUpdate", "encode_ops", "write_op_batches", "write_ops_task"]

#: Operations travel through the sorter as (key, op byte + value).
_SET, _DEL = b"\x01", b"\x00"
_BATCH_BYTES = 1 << 20


def encode_ops(keys: pa.Array, values: pa.Array, deleted: pa.Array, store: str | None = None
               ) -> pa.RecordBatch:
    """Rows of keys, values and a delete flag as operations (:data:`SCHEMA` batches whose value
    is an op byte and the value), the form :func:`write_op_batches` reads once sorted.

    Args:
        keys: binary or string keys (no nulls).
        values: binary or string values; may be null where ``deleted`` is true.
        deleted: booleans; true deletes the key (null counts as false).
        store: the store, for error messages.

    Returns:
        The operations, in the rows' order.

    Raises:
        KvioError: a null key, or a null value in a row that does not delete.
    """
    deleted = pc.fill_null(deleted, False)
    keys = keys.cast(pa.large_binary())
    values = values.cast(pa.large_binary())
    if keys.null_count:
        raise KvioError("a key is null", store=store)
    if values.null_count and pc.any(pc.and_(pc.invert(deleted), pc.is_null(values))).as_py():
        raise KvioError("a value is null in a row that does not delete its key", store=store)
    binary = pa.large_binary()
    values = pc.if_else(deleted, pa.scalar(b"", binary), values)
    ops = pc.if_else(deleted, pa.scalar(_DEL, binary), pa.scalar(_SET, binary))
    return pa.record_batch([keys, pc.binary_join_element_wise(ops, values, pa.scalar(b"", binary))],
                           schema=SCHEMA)


def write_op_batches(batches: Iterable[pa.RecordBatch], values: SortedPairWriter,
                     tombstones: SortedPairWriter) -> None:
    """Sorted, de-duplicated operations (see :func:`encode_ops`) into a value writer and a
    tombstone writer.

    Args:
        batches: operations in strictly increasing key order.
        values: receives the keys set, with their values.
        tombstones: a tombstone writer; receives the keys deleted.

    Raises:
        KeyOrderError, PairTooLargeError: from the writers.
    """
    binary = pa.large_binary()
    for batch in batches:
        ops = pc.binary_slice(batch.column(1), 0, 1)
        is_set = pc.equal(ops, pa.scalar(_SET, binary))
        sets = batch.filter(is_set)
        if sets.num_rows:
            # (an explicit stop: binary_slice overflows on huge ones in pyarrow 26)
            longest = pc.max(pc.binary_length(sets.column(1))).as_py()
            stripped = pc.binary_slice(sets.column(1), 1, longest + 1)
            values.put_many(pa.record_batch([sets.column(0), stripped], schema=SCHEMA))
        dels = batch.filter(pc.invert(is_set)).column(0)
        if len(dels):
            empty = pa.array([b""] * len(dels), binary)
            tombstones.put_many(pa.record_batch([dels, empty], schema=SCHEMA))


def write_ops_task(ctx: JobContext, task_id: int, batches: Iterable[pa.RecordBatch], *,
                   duplicates: str = "error", sort_memory: int | None = None,
                   spill_dir: str | None = None) -> tuple[dict[str, Any], int]:
    """One engine task of an append job that sets and deletes: its operations (from
    :func:`encode_ops`, any order) sorted with bounded memory, equal keys settled by
    ``duplicates``, written as a value file and a tombstone file of one attempt.

    Args:
        ctx: the job's context (mode append).
        task_id: this task's id.
        batches: the task's operations, any order.
        duplicates: ``error``, ``first`` or ``last`` (in arrival order).
        sort_memory: sort buffer bytes (default ``kvio.sort.memory``).
        spill_dir: where sorted runs go (default ``kvio.sort.spill.dir`` or the temp dir).

    Returns:
        The task's commit message and the number of rows written (sets and deletes).

    Raises:
        KeyOrderError: a duplicate key with ``duplicates="error"``.
        KvioError: a write failure (the attempt's files are removed).
    """
    conf = Config(ctx.conf)
    attempt = TaskAttempt(ctx, task_id)
    writers = [SortedPairWriter(attempt), SortedPairWriter(attempt, tombstones=True)]
    dedupe = Deduper(duplicates, ctx.uri)
    memory = conf.sort_memory if sort_memory is None else sort_memory
    try:
        with ExternalSorter(memory, spill_root(spill_dir or conf.sort_spill_dir)) as sorter:
            for batch in batches:
                sorter.add(batch)

            def final() -> Iterator[pa.RecordBatch]:
                for chunk in [*sorter.merged(), None]:
                    out = dedupe.push(chunk) if chunk is not None else dedupe.take_held()
                    if out is not None and out.num_rows:
                        yield out
            write_op_batches(final(), writers[0], writers[1])
        writers[1].close()  # first: the attempt's message (writers[0].close) then lists both
        message = writers[0].close()
    except BaseException:
        for w in writers:
            w.discard()
        raise
    return message, writers[0].count + writers[1].count


class StoreUpdate:
    """Collects SET and DEL operations and publishes them as one delta version.

    Args:
        uri: the store (created when absent, like an append).
        conf: setting overrides (``kvio.*``).
        storage_options: passed to fsspec.
        retries: how many times an update that lost a race re-applies its operations on the
            newer version before it raises ConcurrentCommitError.
    """

    def __init__(self, uri: str, conf: dict[str, Any] | None = None,
                 storage_options: dict[str, Any] | None = None, retries: int = 5):
        self.uri = uri
        self._conf_overrides = dict(conf or {})
        self._storage_options = dict(storage_options or {})
        self.retries = retries
        cfg = Config(conf)
        self._scratch = spill_root(cfg.sort_spill_dir)
        self._sorter = ExternalSorter(cfg.sort_memory, self._scratch)
        self._keys: list[bytes] = []
        self._values: list[bytes] = []
        self._buffered = 0
        self.record: dict[str, Any] | None = None
        self.committed = False
        self.aborted = False
        #: operations collected (before de-duplication)
        self.operations = 0
        #: the commit record of the compaction the policy ran after this update, if any
        #: (``kvio.compact.max.layers``, ``kvio.compact.size.ratio``; docs/COMMIT.md)
        self.compaction: dict[str, Any] | None = None

    # ---- collecting ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.committed or self.aborted:
            state = "committed" if self.committed else "aborted"
            raise WriterClosedError(f"update was already {state}", store=self.uri)

    def _add(self, key: Any, op_value: bytes) -> None:
        key = key if type(key) is bytes else as_bytes(key, "key")
        self._keys.append(key)
        self._values.append(op_value)
        self._buffered += len(key) + len(op_value) + 16
        self.operations += 1
        if self._buffered >= _BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._keys:
            self._sorter.add(pa.record_batch(
                [pa.array(self._keys, pa.large_binary()), pa.array(self._values, pa.large_binary())],
                schema=SCHEMA))
            self._keys, self._values, self._buffered = [], [], 0

    def set(self, key: Any, value: Any) -> None:
        """Set ``key`` to ``value`` (a later operation on the same key wins).

        Args:
            key: bytes-like.
            value: bytes-like.

        Raises:
            WriterClosedError: the update was committed or aborted.
            ArgumentTypeError: a key or value that is not bytes-like.
        """
        self._check_open()
        value = value if type(value) is bytes else as_bytes(value, "value")
        self._add(key, _SET + value)

    def delete(self, key: Any) -> None:
        """Delete ``key`` (absent keys are fine; a later operation on the same key wins).

        Args:
            key: bytes-like.

        Raises:
            WriterClosedError: the update was committed or aborted.
            ArgumentTypeError: a key that is not bytes-like.
        """
        self._check_open()
        self._add(key, _DEL)

    def set_many(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """:meth:`set` for each (key, value), in any order.

        Args:
            pairs: (key, value) tuples.

        Raises:
            WriterClosedError, ArgumentTypeError: as :meth:`set`.
        """
        for key, value in pairs:
            self.set(key, value)

    def delete_many(self, keys: Iterable[Any]) -> None:
        """:meth:`delete` for each key, in any order.

        Args:
            keys: the keys.

        Raises:
            WriterClosedError, ArgumentTypeError: as :meth:`delete`.
        """
        for key in keys:
            self.delete(key)

    # ---- publishing ------------------------------------------------------------------------
    def _final_ops(self, path: str) -> int:
        """Sort and de-duplicate the operations into an Arrow IPC file at ``path`` (read once
        per publish attempt, so a retry does not sort again); returns the number of keys."""
        dedupe = Deduper("last", self.uri)
        rows = 0
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as out:
            for batch in [*self._sorter.merged(), None]:
                final = dedupe.push(batch) if batch is not None else dedupe.take_held()
                if final is not None and final.num_rows:
                    out.write_batch(final)
                    rows += final.num_rows
        self._sorter.close()
        return rows

    @staticmethod
    def _read_ops(path: str) -> Iterator[pa.RecordBatch]:
        with pa.OSFile(path, "rb") as source, pa.ipc.open_stream(source) as reader:
            yield from reader

    def _publish_once(self, path: str, txn: TxnRef | None = None) -> dict[str, Any]:
        job = Job.setup(self.uri, mode="append", conf=self._conf_overrides,
                        storage_options=self._storage_options)
        writers: list[SortedPairWriter] = []
        try:
            writers = [SortedPairWriter(job.task(0)), SortedPairWriter(job.task(1), tombstones=True)]
            write_op_batches(self._read_ops(path), writers[0], writers[1])
            messages = [w.close() for w in writers]
            record = job.commit(messages, num_tasks=2, op="update", txn=txn)
        except BaseException:
            for w in writers:
                if not w.closed:
                    w.discard()
            if not job.committed:
                job.abort()
            raise
        assert record is not None  # append mode never skips
        return record.to_json()

    def commit(self) -> dict[str, Any] | None:
        """Publish the operations as one new version. Idempotent.

        Returns:
            The commit record as a JSON object; None when there was no operation.

        Raises:
            WriterClosedError: the update was aborted.
            ConcurrentCommitError: other publishes won the race ``retries + 1`` times in a row;
                nothing of this update was published.
            CommitError: publishing failed (``landed`` says whether it happened).
        """
        if self.committed:
            return self.record
        if self.aborted:
            raise WriterClosedError("update was aborted: nothing was published", store=self.uri)
        self._flush()
        if not self.operations:
            self._sorter.close()
            self.committed = True
            return None
        work = tempfile.mkdtemp(prefix="kvio-update-", dir=self._scratch)
        try:
            path = os.path.join(work, "ops.arrow")
            self._final_ops(path)
            for attempt in range(self.retries + 1):
                try:
                    self.record = self._publish_once(path)
                    break
                except ConcurrentCommitError as exc:
                    if exc.landed is not False or attempt == self.retries:
                        raise
                    log.info("kvio: %s changed while updating; applying the update again on "
                             "the new version", self.uri)
        except BaseException:
            self.aborted = True
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self._sorter.close()
        self.committed = True
        self.compaction = self._compact_if_due()
        return self.record

    def _compact_if_due(self) -> dict[str, Any] | None:
        """Apply the compaction policy to the version this update published (best effort: the
        update has landed, so a compaction that loses a race or fails is logged, not raised).

        Returns:
            The compaction's commit record, or None when the policy did not ask for one or it
            did not happen.
        """
        from .compact import compact_store
        from .layers import compaction_due
        from .system import KeyValueSystem
        cfg = Config(self._conf_overrides)
        if cfg.compact_max_layers <= 0 or self.record is None:
            return None
        kvs = KeyValueSystem(conf=self._conf_overrides, storage_options=self._storage_options)
        try:
            with kvs.open_store(self.uri, self.record["version"]) as reader:
                why = compaction_due(reader.manifest, cfg.compact_max_layers,
                                     cfg.compact_size_ratio, cfg.compact_auto_max_bytes)
            if why is None:
                return None
            log.info("kvio: compacting %s: %s", self.uri, why)
            return compact_store(self.uri, lambda version: kvs.open_store(self.uri, version),
                                 self._conf_overrides, self._storage_options)
        except ConcurrentCommitError:
            log.info("kvio: %s changed while compacting after an update; left for the next "
                     "update or kvio compact", self.uri)
        except (KvioError, OSError) as exc:
            log.warning("kvio: compacting %s after an update failed (the update itself was "
                        "published): %s", self.uri, exc)
        return None

    def abort(self) -> None:
        """Publish nothing and drop the collected operations. Idempotent."""
        if self.committed or self.aborted:
            return
        self.aborted = True
        self._keys, self._values = [], []
        self._sorter.close()

    def __enter__(self) -> StoreUpdate:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
