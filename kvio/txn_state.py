"""Decisions of transactions across stores: does a pending commit record count?

A commit record with a ``txn`` field (docs/COMMIT.md, "Transactions across stores") counts only
once its transaction record, ``<first store>/_txns/<id>.txn``, exists and says ``committed``.
The record is created once, no-clobber, and never replaced, so a decision never changes and is
cached per process. After a commit, each other store of the transaction gets a copy of the
decision in its own ``_txns/`` (best effort): it is read first, so a store keeps resolving its
records without a round trip to the first store, and after that store is deleted.
"""
from __future__ import annotations

import copy
import logging
import os
import posixpath
import threading
import time
from enum import Enum

from . import layout
from .errors import CorruptStoreError
from .format.commit_record import CommitRecord
from .format.txn_record import ABORTED, COMMITTED, TxnRecord, TxnRef, TxnStore
from .fs import FileIO, is_url

log = logging.getLogger(__name__)
_decided: dict[str, TxnRecord] = {}
_lock = threading.Lock()


class Standing(Enum):
    """What a commit record means for "which version is current"."""

    COUNTS = "counts"          # an ordinary record, or its transaction committed
    ABORTED = "aborted"        # its transaction was aborted: void
    UNDECIDED = "undecided"    # no decision yet: void for readers, aborted by the next writer


def store_uri(io: FileIO) -> str:
    """The URI a transaction writes down for a store: absolute, so that any process resolves
    it whatever its working directory."""
    return io.uri.rstrip("/") if is_url(io.uri) else io.root


def record_uri(io: FileIO, txn_id: str) -> str:
    """The full URI of the transaction record of ``txn_id`` kept in store ``io``."""
    return posixpath.join(store_uri(io), layout.txn_path(txn_id))


def coordinator(io: FileIO, ref: TxnRef) -> FileIO:
    """The store holding ``ref``'s transaction record, on ``io``'s filesystem (the stores of one
    transaction share a filesystem: kvio/transaction.py checks that)."""
    suffix = "/" + layout.txn_path(ref.id)
    if not ref.record.endswith(suffix):
        raise CorruptStoreError(f"transaction {ref.id}: record URI {ref.record!r} does not end "
                                f"with {suffix!r}", store=io.uri)
    return sibling(io, ref.record[: -len(suffix)])


def sibling(io: FileIO, uri: str) -> FileIO:
    """The I/O of another store ``uri`` through ``io``'s filesystem client (and options)."""
    other = copy.copy(io)
    other.uri = uri
    root = io.fs._strip_protocol(uri) if is_url(uri) else os.path.abspath(uri)
    other.root = str(root).rstrip("/") or "/"
    return other


def _read(io: FileIO, txn_id: str) -> TxnRecord | None:
    rel = layout.txn_path(txn_id)
    try:
        blob = io.read_bytes(rel)
    except FileNotFoundError:
        return None
    found = TxnRecord.decode(blob, store=io.uri, file=io.path(rel))
    if found.id != txn_id:
        raise CorruptStoreError(f"transaction record names transaction {found.id}, expected "
                                f"{txn_id}", store=io.uri, file=io.path(rel))
    return found


def decision(io: FileIO, ref: TxnRef) -> TxnRecord | None:
    """The decision of a transaction, None while there is none.

    Args:
        io: a store with a commit record naming ``ref``.
        ref: the record's ``txn`` field.

    Returns:
        The transaction record (from this process's cache, the store's own copy or the first
        store), or None.

    Raises:
        CorruptStoreError: the transaction record is damaged.
    """
    with _lock:
        known = _decided.get(ref.record)
    if known is not None:
        return known
    found = _read(io, ref.id) or _read(coordinator(io, ref), ref.id)
    if found is not None:
        with _lock:
            _decided[ref.record] = found
    return found


def standing(io: FileIO, record: CommitRecord) -> Standing:
    """Whether ``record`` counts, is void (aborted) or waits for its transaction's decision."""
    if record.txn is None:
        return Standing.COUNTS
    found = decision(io, record.txn)
    if found is None:
        return Standing.UNDECIDED
    return Standing.COUNTS if found.committed else Standing.ABORTED


def decide(io: FileIO, txn_id: str, status: str, stores: tuple[TxnStore, ...] = ()) -> TxnRecord:
    """Create the transaction record with ``status`` unless one exists: whoever creates it
    first decides.

    Args:
        io: the store that holds the record (the transaction's first store).
        txn_id: the transaction.
        status: ``committed`` or ``aborted``.
        stores: the transaction's stores and records (may be empty for an abort by others).

    Returns:
        The decision now on file: this one, or the one another process created first.

    Raises:
        CorruptStoreError: an existing record is damaged.
        OSError: the filesystem failed (the decision may or may not have been made).
    """
    mine = TxnRecord(txn_id, status, stores, time.time())
    try:
        io.write_new_file(layout.txn_path(txn_id), mine.encode())
        found: TxnRecord | None = mine
    except FileExistsError:
        found = _read(io, txn_id)
    if found is None:  # cannot happen: records are never deleted while a store names them
        raise CorruptStoreError(f"transaction record of {txn_id} vanished", store=io.uri,
                                file=io.path(layout.txn_path(txn_id)))
    with _lock:
        _decided[record_uri(io, txn_id)] = found
    return found


def abort_undecided(io: FileIO, record: CommitRecord) -> Standing:
    """Decide ``record``'s undecided transaction as aborted (a writer must not publish on top of
    an undecided record: that would lose the transaction's update if it then committed).

    Returns:
        The record's standing afterwards (COUNTS when the transaction committed first).
    """
    assert record.txn is not None
    found = decide(coordinator(io, record.txn), record.txn.id, ABORTED)
    log.info("kvio: commit %s of %s belongs to transaction %s, which had no decision; it is now "
             "%s", record.seq, io.uri, record.txn.id, found.status)
    return Standing.COUNTS if found.status == COMMITTED else Standing.ABORTED


def copy_decision(io: FileIO, found: TxnRecord) -> None:
    """Best effort: keep a copy of a decision in another store of the transaction."""
    try:
        io.write_new_file(layout.txn_path(found.id), found.encode())
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("kvio: could not copy the decision of transaction %s into %s: %s", found.id,
                    io.uri, exc)


def hand_over(io: FileIO) -> None:
    """Before store ``io`` is deleted: copy each decision it keeps for a transaction into the
    transaction's other stores that exist (without it their records could no longer be
    resolved). Best effort, like :func:`copy_decision`."""
    for name in io.listdir(layout.TXNS):
        if not name.endswith(layout.TXN_SUFFIX):
            continue
        try:
            found = _read(io, name[: -len(layout.TXN_SUFFIX)])
        except (OSError, CorruptStoreError) as exc:
            log.warning("kvio: could not read transaction record %s of %s: %s", name, io.uri, exc)
            continue
        if found is None:
            continue
        for store in found.stores:
            other = sibling(io, store.uri)
            if not other.same_root(io) and other.exists(layout.MARKER):
                copy_decision(other, found)


def forget() -> None:
    """Drop the cached decisions (tests that delete and re-create stores with reused ids)."""
    with _lock:
        _decided.clear()
