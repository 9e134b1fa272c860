"""``kvio sync``: keep a table equal to a store's current version.

The first run creates the table and writes the whole version. Later runs apply only what
changed since the version last synced, recorded in ``kvio_sync_state`` (one row per mirrored
table: the store URI, the version, its commit number) in the SAME transaction as the changes.
So a crash at any point leaves the table at the old or at the new version, with the state row
saying which, and the next run converges.

How the change is found:

* When the current version starts with exactly the synced version's partitions (same footer
  checksums, same order: what append and update publish, carrying files unchanged), only the
  partitions after them ("new layers") can hold changed keys. For each of their keys (values
  and tombstones) its value in the highest layer holding it is upserted, or the key deleted
  where that layer is a tombstone file: no lookup in the store, no full comparison. The
  cost follows the size of the change, not of the store.
  A compaction publishes the same pairs as the version before it, so the layers are looked for
  in that version too.
* Otherwise (overwrite, rollback) or when the synced version is no longer retained (its
  manifest was collected), the table's rows are replaced by the current version.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import versions
from ..errors import KvioError
from ..format.manifest import Manifest, PartitionEntry
from ..partitions import PartitionCache
from ..system import KeyValueSystem
from .db import TYPES_BUILTIN, Database, TableName, connect, parse_table_name
from .exporter import write_version
from .hooks import pause_point
from .tables import KEY, VALUE, apply_changes, check_kv_table
from .url import POSTGRESQL

__all__ = ["SyncResult", "SyncState", "sync_store", "new_layers", "STATE_TABLE"]

STATE_TABLE = "kvio_sync_state"
#: changed keys applied at a time (one temporary table, one DELETE and one upsert each)
_CHUNK = 16384
#: new layers up to this many bytes (partition file sizes) are merged in memory with Arrow
#: kernels; larger ones stream through a k-way merge, one partition batch per layer in memory
IN_MEMORY_LAYER_BYTES = 64 << 20


@dataclass(frozen=True)
class SyncState:
    """The row of ``kvio_sync_state`` for one mirrored table.

    Attributes:
        table: the mirrored table.
        store: the store URI it mirrors.
        version: the version the table holds.
        commit_seq: that version's commit number.
        synced_at: when (seconds since the epoch).
    """
    table: str
    store: str
    version: str
    commit_seq: int
    synced_at: float


@dataclass(frozen=True)
class SyncResult:
    """What :func:`sync_store` did.

    Attributes:
        store: the store URI.
        table: the table.
        from_version: the version the table held before (None: first run).
        to_version: the version it holds now.
        method: ``create`` (first run), ``incremental`` (new layers only), ``replace`` (all
            rows rewritten) or ``unchanged``.
        upserted: rows inserted or updated.
        deleted: keys deleted (asked for; a key the table lacked counts too).
    """
    store: str
    table: str
    from_version: str | None
    to_version: str
    method: str
    upserted: int
    deleted: int


def new_layers(old: Manifest, new: Manifest) -> list[PartitionEntry] | None:
    """The partitions ``new`` adds on top of ``old``, when ``new`` is ``old`` plus layers.

    Carried partitions are renamed but keep their footer checksums, so a partition is
    recognised by (checksum, count, size, tombstones).

    Args:
        old: the synced version's manifest.
        new: the current version's manifest.

    Returns:
        The added partitions (highest priority last), or None when ``new`` does not begin with
        exactly ``old``'s partitions in the same order (then only a full comparison can tell).
    """
    def sig(entry: PartitionEntry) -> tuple:
        return entry.footer_checksum, entry.count, entry.size, entry.tombstones

    base = [sig(e) for e in old.partitions]
    if [sig(e) for e in new.partitions[:len(base)]] != base:
        return None
    return list(new.partitions[len(base):])


# ---- the state table ----------------------------------------------------------------------------
def _state_table(table: TableName) -> TableName:
    return TableName(STATE_TABLE, table.schema)


def _ensure_state_table(db: Database, table: TableName) -> TableName:
    state = _state_table(table)
    db.execute(f"CREATE TABLE IF NOT EXISTS {state.quoted} (table_name TEXT PRIMARY KEY, "
               "store_uri TEXT NOT NULL, version TEXT NOT NULL, commit_seq BIGINT NOT NULL, "
               "synced_at DOUBLE PRECISION NOT NULL)", table=state, doing="cannot create")
    return state


def read_state(db: Database, table: TableName) -> SyncState | None:
    """The recorded state of a mirrored table (None when it was never synced or the state
    table does not exist).

    Args:
        db: the database.
        table: the mirrored table.

    Returns:
        Its row of ``kvio_sync_state``.
    """
    state = _state_table(table)
    if not db.table_exists(state):
        return None
    found = db.rows(f"SELECT store_uri, version, commit_seq, synced_at FROM {state.quoted} "
                    f"WHERE table_name = {db.placeholder(0)}", [str(table)], table=state)
    if not found:
        return None
    store, version, seq, at = found[0]
    return SyncState(str(table), store, version, int(seq), float(at))


def _write_state(db: Database, state_table: TableName, table: TableName, store: str,
                 version: str, seq: int) -> None:
    cols = "table_name, store_uri, version, commit_seq, synced_at"
    db.execute(f"INSERT INTO {state_table.quoted} ({cols}) VALUES ({db.placeholders(5)}) "
               "ON CONFLICT (table_name) DO UPDATE SET store_uri = excluded.store_uri, "
               "version = excluded.version, commit_seq = excluded.commit_seq, "
               "synced_at = excluded.synced_at",
               [str(table), store, version, seq, time.time()], table=state_table,
               doing="cannot record the sync in")


def _lock(db: Database, table: TableName) -> None:
    """Serialise syncs of one table (PostgreSQL: a transaction-scoped advisory lock; SQLite has
    one writer anyway, and a second sync fails on its busy database instead of interleaving)."""
    if db.kind == POSTGRESQL:
        db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", [f"kvio-sync:{table}"],
                   table=table, doing="cannot lock")


# ---- the incremental change -----------------------------------------------------------------------
def _layer_rows(source: Any, layers: list[PartitionEntry]) -> Iterator[tuple[bytes, bytes | None]]:
    """Every key of the layers (of the version ``source`` reads) once, in key order, with its
    value in that version: the value of the highest layer holding it, or None where that
    layer is a tombstone file. The layers lie above every partition the versions share, so
    no other partition can decide. Each partition is sorted: a k-way merge, one partition
    batch per layer in memory."""
    cache = PartitionCache(source.io, source.version, source.conf)
    try:
        def rows_of(priority: int, entry: PartitionEntry) -> Iterator[tuple]:
            for batch in cache.get(entry).iter_batches():
                values = [None] * batch.num_rows if entry.tombstones \
                    else batch.column(1).to_pylist()
                for key, value in zip(batch.column(0).to_pylist(), values, strict=True):
                    yield key, -priority, value  # equal keys: the highest layer first

        last = None
        for key, _, value in heapq.merge(*(rows_of(p, e) for p, e in enumerate(layers)
                                           if e.count)):
            if key != last:
                yield key, value
                last = key
    finally:
        cache.close()


def _layer_table(source: Any, layers: list[PartitionEntry]) -> pa.Table:
    """What :func:`_layer_rows` yields, as one Arrow table (``key``, ``value``; a null value
    deletes the key), computed with Arrow kernels instead of a Python merge: every row of the
    layers is read (the layers are small: see :data:`IN_MEMORY_LAYER_BYTES`), sorted by key and
    then by layer, highest first, and the first row of each key kept."""
    cache = PartitionCache(source.io, source.version, source.conf)
    try:
        keys, values, priorities = [], [], []
        for priority, entry in enumerate(layers):
            if not entry.count:
                continue
            for batch in cache.get(entry).iter_batches():
                n = batch.num_rows
                keys.append(batch.column(0).cast(pa.large_binary()))
                values.append(pa.nulls(n, pa.large_binary()) if entry.tombstones
                              else batch.column(1).cast(pa.large_binary()))
                priorities.append(pa.array(np.full(n, priority, dtype=np.int32)))
    finally:
        cache.close()
    if not keys:
        return pa.table({KEY: pa.array([], pa.large_binary()),
                         VALUE: pa.array([], pa.large_binary())})
    rows = pa.table({KEY: pa.concat_arrays(keys), VALUE: pa.concat_arrays(values),
                     "layer": pa.concat_arrays(priorities)})
    rows = rows.take(pc.sort_indices(rows, [(KEY, "ascending"), ("layer", "descending")]))
    sorted_keys = rows.column(KEY)
    if rows.num_rows > 1:  # the first row of each run of equal keys is the highest layer's
        first = pc.not_equal(sorted_keys.slice(1), sorted_keys.slice(0, rows.num_rows - 1))
        rows = rows.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))
    return rows.select([KEY, VALUE])


def _row_chunks(source: Any, layers: list[PartitionEntry]) -> Iterator[tuple[pa.Array, pa.Array]]:
    """The change as (keys, values) arrays of at most :data:`_CHUNK` rows, in key order: with
    Arrow kernels when the layers are small, else streamed from the k-way merge."""
    if sum(entry.size for entry in layers) <= IN_MEMORY_LAYER_BYTES:
        merged = _layer_table(source, layers)
        for start in range(0, merged.num_rows, _CHUNK):
            piece = merged.slice(start, _CHUNK)
            yield piece.column(KEY).combine_chunks(), piece.column(VALUE).combine_chunks()
        return
    rows = _layer_rows(source, layers)
    while True:
        chunk = list(itertools.islice(rows, _CHUNK))
        if not chunk:
            return
        yield (pa.array([k for k, _ in chunk], pa.large_binary()),
               pa.array([v for _, v in chunk], pa.large_binary()))


def _changes(source: Any, layers: list[PartitionEntry], text: bool,
             store: str) -> Iterator[tuple[pa.RecordBatch, int, int]]:
    """The change in chunks: batches of (key, value) where a null value deletes the key, with
    the numbers of upserts and deletes in each."""
    kind = pa.string() if text else pa.binary()
    schema = pa.schema([pa.field(KEY, kind, nullable=False), pa.field(VALUE, kind)])
    for keys, values in _row_chunks(source, layers):
        columns = []
        for what, col in ((KEY, keys), (VALUE, values)):
            try:
                columns.append(col.cast(kind))
            except pa.ArrowInvalid:
                bad = next(k for k, v in zip(keys.to_pylist(), values.to_pylist(), strict=True)
                           if not _utf8(k if what == KEY else v))
                raise KvioError(f"{what} is not valid UTF-8, so it cannot go into a text "
                                "table; sync without --text", store=store, key=bad) from None
        deletes = values.null_count
        yield pa.record_batch(columns, schema=schema), len(keys) - deletes, deletes


def _utf8(data: bytes | None) -> bool:
    if data is None:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _apply_incremental(db: Database, reader: Any, table: TableName, source: Any,
                       layers: list[PartitionEntry], text: bool,
                       on_rows: Callable[[int], Any] | None) -> tuple[int, int]:
    upserted = deleted = 0
    for batch, sets, dels in _changes(source, layers, text, reader.uri):
        apply_changes(db, table, batch)
        upserted += sets
        deleted += dels
        if on_rows is not None:
            on_rows(sets + dels)
        pause_point("sync:after-chunk")
    return upserted, deleted


def _compacted_bases(reader: Any) -> list[str]:
    """Versions holding exactly the current version's pairs besides itself: the versions it
    compacted. A compaction rewrites the version published right before it (its job checks
    that no publish came between), so the layers of that version still tell what changed
    since the synced one."""
    found = []
    records = {r.seq: r for r in versions.history(reader.io)}
    record = records.get(reader.commit.seq)
    while record is not None and record.op == "compact":
        before = records.get(record.seq - 1)
        if before is None or before.version is None:
            break
        found.append(before.version)
        record = before
    return found


def _find_layers(kvs: KeyValueSystem, reader: Any, old: Manifest,
                 stack: contextlib.ExitStack) -> tuple[Any, list[PartitionEntry]] | None:
    """A version with the current pairs that is the synced one plus layers: (its reader, the
    layers), or None. An older version is opened (and so pinned) on ``stack``."""
    layers = new_layers(old, reader.manifest)
    if layers is not None:
        return reader, layers
    for version in _compacted_bases(reader):
        try:
            base = stack.enter_context(kvs.open_store(reader.uri, version))
        except KvioError:
            return None  # no longer retained
        layers = new_layers(old, base.manifest)
        if layers is not None:
            return base, layers
    return None


def _synced_manifest(reader: Any, version: str) -> Manifest | None:
    """The synced version's manifest, or None when it is no longer retained."""
    try:
        return versions.load_manifest(reader.io, version)
    except KvioError:
        return None


def _identity(uri: str) -> str:
    """The store as recorded in the state table: a local path made absolute, so that syncs
    run from different directories agree."""
    return uri if "://" in uri else os.path.abspath(uri)


# ---- sync ------------------------------------------------------------------------------------------
def sync_store(kvs: KeyValueSystem, store_uri: str, db_url: str, table: str, *,
               text: bool = False, on_rows: Callable[[int], Any] | None = None) -> SyncResult:
    """Make ``table`` equal to the store's current version, in one transaction that also
    records the version in ``kvio_sync_state``.

    Args:
        kvs: settings.
        store_uri: the store (its current version is pinned while it is read).
        db_url: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
        table: the mirror table (``name`` or ``schema.name``); created on the first run.
        text: TEXT columns (UTF-8) instead of bytea/blob when creating the table and writing.
        on_rows: progress (rows written or keys looked at).

    Returns:
        What was done.

    Raises:
        KvioError: the table exists but was never synced (kvio does not take over a table it
            did not create), or it mirrors another store; a value that is not UTF-8 in text
            mode. Nothing is committed then.
        DatabaseError: the database refused a statement.
    """
    name = parse_table_name(table)
    with kvs.open_store(store_uri) as reader, connect(db_url, types=TYPES_BUILTIN) as db, \
            contextlib.ExitStack() as stack:
        _lock(db, name)
        state_table = _ensure_state_table(db, name)
        state = read_state(db, name)
        exists = db.table_exists(name)
        store_uri = _identity(reader.uri)
        if state is not None and state.store != store_uri:
            raise KvioError(f"table {name} in {db.url} mirrors the store {state.store}, not this "
                            "one; sync into another table", store=store_uri)
        if state is None and exists:
            raise KvioError(f"table {name} already exists in {db.url} and was not created by "
                            "kvio sync (no row in kvio_sync_state); sync into a new table, or "
                            "drop it first", store=store_uri)
        if state is None or not exists:
            method = "create"
            upserted, _ = write_version(db, reader, name, "create", text, on_rows)
            deleted = 0
        elif state.version == reader.version:
            db.rollback()
            return SyncResult(store_uri, str(name), state.version, reader.version, "unchanged",
                              0, 0)
        else:
            old = _synced_manifest(reader, state.version)
            found = None if old is None else _find_layers(kvs, reader, old, stack)
            if found is None:
                method = "replace"
                upserted, _ = write_version(db, reader, name, "replace", text, on_rows)
                deleted = 0
            else:
                method = "incremental"
                check_kv_table(db, name, text)
                upserted, deleted = _apply_incremental(db, reader, name, *found, text, on_rows)
        pause_point("sync:before-state")
        _write_state(db, state_table, name, store_uri, reader.version, reader.commit.seq)
        pause_point("sync:before-commit")
        db.commit()
        pause_point("sync:after-commit")
        return SyncResult(store_uri, str(name), state.version if state else None, reader.version,
                          method, upserted, deleted)
