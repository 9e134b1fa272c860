"""All-or-nothing publishing across stores: ``with kvs.transaction() as tx:``.

Protocol (docs/COMMIT.md, "Transactions across stores"), when the block ends without an
exception:

1. every store's job writes its data and stages its version (``Job.stage``: a writer's
   partitions, an update's sorted delta; manifest, invisible version directory);
2. each store gets its next commit record, created no-clobber as usual but carrying
   ``txn: {id, record}``: a *pending* record, which counts for nobody yet. If one cannot be
   created (another job published on that store since the transaction began), the transaction
   record is created with status ``aborted`` and ConcurrentCommitError is raised: nothing of
   the transaction is visible;
3. the transaction record ``<first store>/_txns/<id>.txn`` is created no-clobber with status
   ``committed``: the one commit point of all stores at once. If an ``aborted`` record is there
   already (a writer or gc found a pending record undecided and aborted the transaction), the
   transaction fails with ConcurrentCommitError and none of its records count;
4. best effort: a copy of the decision goes into every other store, then garbage collection.

An exception inside the block, or a failure before step 3, publishes nothing.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from . import layout, txn_state, versions
from .committer import Job
from .config import Config
from .errors import CommitError, ConcurrentCommitError, InvalidArgumentError, KvioError, WriterClosedError
from .format.txn_record import ABORTED, COMMITTED, TxnRecord, TxnRef, TxnStore
from .fs import FileIO
from .sorting import spill_root
from .update import StoreUpdate, write_op_batches
from .writer import SortedPairWriter, StoreWriter

log = logging.getLogger(__name__)

__all__ = ["Transaction", "TxnStoreUpdate", "TxnStoreWriter"]


class TxnStoreWriter(StoreWriter):
    """A :class:`StoreWriter` whose publish waits for its transaction: leaving its own ``with``
    block or ``close()`` publishes nothing; the transaction publishes it with the others."""

    def commit(self) -> dict[str, Any] | None:
        """Refused: a store of a transaction is published when the transaction block ends.

        Raises:
            InvalidArgumentError: always.
        """
        raise InvalidArgumentError("this writer belongs to a transaction: it publishes when the "
                                   "`with kvs.transaction()` block ends", store=self.uri)

    def close(self) -> dict[str, Any] | None:
        """Nothing to do: the transaction publishes (see :meth:`commit`)."""
        return None

    def _publishes(self) -> bool:
        return self._writer is not None and not self.aborted

    def _stage(self, work: str) -> None:
        """Step 1: finish the partitions and stage the version (nothing visible)."""
        self._check_open()
        assert self._writer is not None
        try:
            self.job.stage([self._writer.close()], num_tasks=1)
        except BaseException:
            self.abort_staged()
            raise

    def _pending(self, ref: TxnRef) -> TxnStore | None:
        """Step 2: create the pending commit record (None: nothing was published)."""
        try:
            record = self.job.publish(txn=ref)
        except BaseException:
            self.abort_staged()
            raise
        self.committed = True
        if record is None:
            return None
        self.record = record.to_json()
        assert record.version is not None
        return TxnStore(self.uri, record.seq, record.version)

    def abort_staged(self) -> None:
        """Publish nothing; also after :meth:`_stage` (its version directory goes too)."""
        if self.committed or self.aborted:
            return
        self.aborted = True
        if self._writer is not None and not self._writer.closed:
            self._writer.discard()
        if not self.job.committed:
            self.job.abort()

    def abort(self) -> None:
        """Publish nothing and remove what was written. Idempotent."""
        self.abort_staged()


class TxnStoreUpdate(StoreUpdate):
    """A :class:`StoreUpdate` whose publish waits for its transaction (like
    :class:`TxnStoreWriter`). It does not retry a lost race: the transaction fails instead."""

    def commit(self) -> dict[str, Any] | None:
        """Refused: a store of a transaction is published when the transaction block ends.

        Raises:
            InvalidArgumentError: always.
        """
        raise InvalidArgumentError("this update belongs to a transaction: it publishes when "
                                   "the `with kvs.transaction()` block ends", store=self.uri)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._job: Job | None = None
        self._writers: list[SortedPairWriter] = []

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def _publishes(self) -> bool:
        return (self.operations > 0) and not self.aborted

    def _stage(self, work: str) -> None:
        """Step 1: sort the operations, set up an append job on the current version, write
        the delta and stage it (nothing visible)."""
        self._check_open()
        self._flush()
        path = f"{work}/ops-{id(self):x}.arrow"
        try:
            self._final_ops(path)
            self._job = Job.setup(self.uri, mode="append", conf=self._conf_overrides,
                                  storage_options=self._storage_options)
            self._writers = [SortedPairWriter(self._job.task(0)),
                             SortedPairWriter(self._job.task(1), tombstones=True)]
            write_op_batches(self._read_ops(path), self._writers[0], self._writers[1])
            messages = [w.close() for w in self._writers]
            self._job.stage(messages, num_tasks=2, op="update")
        except BaseException:
            self.abort()
            raise
        finally:
            self._sorter.close()

    def _pending(self, ref: TxnRef) -> TxnStore | None:
        """Step 2: create the pending commit record."""
        assert self._job is not None
        try:
            record = self._job.publish(txn=ref)
        except BaseException:
            self.abort()
            raise
        assert record is not None and record.version is not None  # append never skips
        self.committed = True
        self.record = record.to_json()
        return TxnStore(self.uri, record.seq, record.version)

    def abort(self) -> None:
        """Publish nothing; after :meth:`_stage` its job's files are removed too. Idempotent."""
        if self.committed or self.aborted:
            return
        super().abort()
        for w in self._writers:
            if not w.closed:
                w.discard()
        if self._job is not None and not self._job.committed:
            self._job.abort()


class Transaction:
    """``with kvs.transaction() as tx:`` — publish several stores' new versions, or none.

    Args:
        conf: setting overrides (``kvio.*``).
        storage_options: passed to fsspec (every store of a transaction is on one filesystem).
    """

    def __init__(self, conf: dict[str, Any] | None = None,
                 storage_options: dict[str, Any] | None = None):
        self._conf = dict(conf or {})
        self._storage_options = dict(storage_options or {})
        self._parts: list[TxnStoreWriter | TxnStoreUpdate] = []
        self._ios: list[FileIO] = []
        self.id = layout.new_job_id()
        #: the decision once the block ended (None before, or when nothing was published)
        self.decision: TxnRecord | None = None
        self.done = False

    # ---- joining ---------------------------------------------------------------------------
    def _join(self, uri: str) -> None:
        if self.done:
            raise WriterClosedError("the transaction has ended", store=uri)
        io = FileIO.for_conf(uri, Config(self._conf), self._storage_options)
        for other in self._ios:
            if other.same_root(io):
                raise InvalidArgumentError(f"store is already part of this transaction (as "
                                           f"{other.uri})", store=uri)
            if type(other.fs) is not type(io.fs):
                raise InvalidArgumentError(f"the stores of one transaction must be on one "
                                           f"filesystem ({other.uri} is not)", store=uri)
        self._ios.append(io)

    def create_store(self, uri: str, mode: str = "error") -> TxnStoreWriter:
        """A writer like :meth:`KeyValueSystem.create_store` that publishes with the others.

        Args:
            uri: the store.
            mode: error, ignore, overwrite or append.

        Returns:
            The writer (put keys in strictly increasing order).

        Raises:
            InvalidArgumentError: the store is in this transaction already, or on another
                filesystem than the others.
            StoreExistsError: as create_store.
        """
        self._join(uri)
        try:
            writer = TxnStoreWriter(uri, mode=mode, conf=self._conf,
                                    storage_options=self._storage_options)
        except BaseException:
            self._ios.pop()
            raise
        self._parts.append(writer)
        return writer

    def update_store(self, uri: str) -> TxnStoreUpdate:
        """SET and DEL like :meth:`KeyValueSystem.update_store`, published with the others.

        Args:
            uri: the store (created when absent).

        Returns:
            The update.

        Raises:
            InvalidArgumentError: as :meth:`create_store`.
        """
        self._join(uri)
        update = TxnStoreUpdate(uri, conf=self._conf, storage_options=self._storage_options,
                                retries=0)
        self._parts.append(update)
        return update

    # ---- ending ----------------------------------------------------------------------------
    def abort(self) -> None:
        """Publish nothing (what the block wrote is removed). Idempotent."""
        if self.done:
            return
        self.done = True
        for part in self._parts:
            part.abort()

    def commit(self) -> TxnRecord | None:
        """Publish every store of the transaction, or none (the module docstring has the steps).

        Returns:
            The transaction record (status committed); None when no store had anything to
            publish.

        Raises:
            ConcurrentCommitError: a store changed since the transaction began, or another
                process aborted the transaction: nothing was published.
            CommitError: ``landed`` False: nothing was published; None: whether the
                transaction committed is unknown (its record could not be read back).
        """
        if self.done:
            if self.decision is None or self.decision.committed:
                return self.decision
            raise WriterClosedError(f"transaction {self.id} was aborted")
        self.done = True
        scratch = tempfile.mkdtemp(prefix="kvio-txn-", dir=spill_root(Config(self._conf).sort_spill_dir))
        stores: list[TxnStore] = []
        # The record goes into the first store that publishes something (a skipped writer's or
        # an empty update's store may not even exist).
        active = [i for i, part in enumerate(self._parts) if part._publishes()]
        coordinator = self._ios[active[0]] if active else None
        ref = TxnRef(self.id, txn_state.record_uri(coordinator, self.id)) if coordinator else None
        pending_started = False
        try:
            for part in self._parts:  # step 1: every store's data, nothing visible yet
                if ref is None or not part._publishes():
                    part.abort()
                else:
                    part._stage(scratch)
            for part, io in zip(self._parts, self._ios, strict=True):  # step 2
                if ref is None or part.aborted:
                    continue
                pending_started = True
                pending = part._pending(ref)
                if pending is not None:
                    stores.append(TxnStore(txn_state.store_uri(io), pending.seq, pending.version))
        except BaseException as exc:
            for part in self._parts:
                part.abort()
            if pending_started and coordinator is not None:
                # Pending records exist (or may: a create whose outcome is unknown): make them
                # void for good (they are invisible anyway).
                try:
                    txn_state.decide(coordinator, self.id, ABORTED, tuple(stores))
                except (OSError, KvioError) as again:
                    log.warning("kvio: could not record the abort of transaction %s (its "
                                "records stay undecided until a writer or gc aborts it): %s",
                                self.id, again)
            if isinstance(exc, ConcurrentCommitError):
                raise ConcurrentCommitError(f"transaction {self.id} aborted, nothing published: "
                                            f"{exc.args[0]}", landed=False) from exc
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if not stores:
            return None
        assert coordinator is not None
        self.decision = self._decide(coordinator, tuple(stores))
        if not self.decision.committed:
            raise ConcurrentCommitError(f"transaction {self.id} was aborted by another process "
                                        "(a writer or gc found its records undecided): nothing "
                                        "was published", store=coordinator.uri, landed=False)
        self._after_commit(coordinator)
        return self.decision

    def _decide(self, coordinator: FileIO, stores: tuple[TxnStore, ...]) -> TxnRecord:
        """Step 3, the commit point: create the transaction record (or find the abort)."""
        try:
            return txn_state.decide(coordinator, self.id, COMMITTED, stores)
        except OSError as exc:
            try:
                found = txn_state.decision(coordinator, TxnRef(self.id, txn_state.record_uri(
                    coordinator, self.id)))
            except (OSError, KvioError):
                found = None
            if found is not None:
                return found
            raise CommitError(f"transaction {self.id}: outcome unknown: {exc}",
                              store=coordinator.uri, landed=None) from exc

    def _after_commit(self, coordinator: FileIO) -> None:
        """Step 4, best effort: decision copies, then each store's usual gc."""
        assert self.decision is not None
        cfg = Config(self._conf)
        for io in self._ios:
            if io is not coordinator:
                txn_state.copy_decision(io, self.decision)
            try:
                versions.collect_garbage(io, cfg.versions_retain, older_than=cfg.staging_max_age,
                                         grace=cfg.gc_grace)
            except Exception as exc:  # noqa: BLE001 - tidying must not fail a published txn
                log.warning("kvio: cleanup after transaction %s on %s failed: %s", self.id,
                            io.uri, exc)

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
