"""Writing pairs into a ``kvstore``-shaped table (YugabyteDB's key-value model:
``(key, value, PRIMARY KEY(key))``), bytes or UTF-8 text, always inside the caller's
transaction."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import KvioError
from .db import Database, TableName, quote_identifier
from .hooks import pause_point
from .url import POSTGRESQL

__all__ = ["KEY", "VALUE", "create_kv_table", "check_kv_table", "append_rows", "upsert_rows",
           "delete_keys", "apply_changes", "as_table_batches"]

KEY = "key"
VALUE = "value"
_K, _V = quote_identifier(KEY), quote_identifier(VALUE)


def _schema(text: bool) -> pa.Schema:
    kind = pa.string() if text else pa.binary()
    return pa.schema([pa.field(KEY, kind, nullable=False), pa.field(VALUE, kind, nullable=False)])


def _first_bad_utf8(keys: pa.Array, column: pa.Array) -> bytes:
    for key, data in zip(keys.to_pylist(), column.to_pylist(), strict=True):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return key
    return b""  # (not reached: the cast found one)


#: store batches (one per 64 KB block) are joined into batches of about this many bytes before
#: the driver gets them: per-batch costs (a Python generator step, the driver's bind setup)
#: otherwise come once per block, 2,470 times for a 1M-pair store
COALESCE_BYTES = 4 << 20


def _joined(held: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(held) == 1:
        return held[0]
    return pa.record_batch([pa.concat_arrays([b.column(i).cast(pa.large_binary()) for b in held])
                            for i in (0, 1)], names=[KEY, VALUE])


def _coalesced(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The same rows, in the same order, in batches of about :data:`COALESCE_BYTES`."""
    held: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        held.append(batch)
        size += batch.nbytes
        if size >= COALESCE_BYTES:
            yield _joined(held)
            held, size = [], 0
    if held:
        yield _joined(held)


def as_table_batches(batches: Iterable[pa.RecordBatch], text: bool, store: str,
                     on_rows=None) -> pa.RecordBatchReader:
    """Store batches (large_binary key, value) as the table's column types, streamed in
    batches of about :data:`COALESCE_BYTES`.

    Args:
        batches: the pairs.
        text: convert to UTF-8 strings (a key or value that is not UTF-8 is an error naming
            the key); else binary.
        store: the store, for messages.
        on_rows: called with each batch's row count.

    Returns:
        A reader the driver ingests from.
    """
    schema = _schema(text)

    def convert() -> Iterator[pa.RecordBatch]:
        for batch in _coalesced(batches):
            columns = []
            for i, what in enumerate((KEY, VALUE)):
                col = batch.column(i)
                try:
                    columns.append(col.cast(schema.field(i).type))
                except pa.ArrowInvalid:
                    bad = _first_bad_utf8(batch.column(0), col)
                    raise KvioError(f"{what} is not valid UTF-8, so it cannot go into a text "
                                    "column; export without --text (bytea/blob columns)",
                                    store=store, key=bad) from None
            if on_rows is not None:
                on_rows(batch.num_rows)
            yield pa.record_batch(columns, schema=schema)
            pause_point("write:batch")  # (crash tests: a bulk load in progress)

    return pa.RecordBatchReader.from_batches(schema, convert())


def create_kv_table(db: Database, table: TableName, text: bool, primary_key: bool = True) -> None:
    """``CREATE TABLE table (key, value[, PRIMARY KEY (key)])`` with bytes or text columns.

    Args:
        db: the database (current transaction).
        table: the table to create.
        text: TEXT columns instead of bytea/blob.
        primary_key: declare the key; False leaves it to :func:`add_primary_key` after a bulk
            load (building the index once, sorted, is faster than maintaining it row by row).
    """
    kind = "TEXT" if text else db.bytes_type
    pk = f", PRIMARY KEY ({_K})" if primary_key else ""
    db.execute(f"CREATE TABLE {table.quoted} ({_K} {kind} NOT NULL, {_V} {kind} NOT NULL{pk})",
               table=table, doing="cannot create")


#: bytes of ``maintenance_work_mem`` asked for per row of an index build (PostgreSQL's sort
#: takes about 80 bytes a row for short keys; a parallel build splits the memory between the
#: leader and its workers)
SORT_BYTES_PER_ROW = 256
#: the most ``maintenance_work_mem`` an export asks for
SORT_BYTES_MAX = 1 << 30


def add_primary_key(db: Database, table: TableName, rows: int | None = None) -> None:
    """Declare ``key`` the primary key of a table created without one (PostgreSQL).

    Args:
        db: the database (current transaction).
        table: the table.
        rows: rows in the table, if known: ``maintenance_work_mem`` is raised for this
            transaction only (``set_config(..., true)``, i.e. ``SET LOCAL``) to about
            :data:`SORT_BYTES_PER_ROW` a row, at most :data:`SORT_BYTES_MAX` and never below
            the server's setting, so that the index build sorts in memory instead of
            spilling runs to disk.
    """
    if rows:
        want_kb = min(SORT_BYTES_MAX, rows * SORT_BYTES_PER_ROW) // 1024
        db.rows("SELECT set_config('maintenance_work_mem', GREATEST((SELECT setting::bigint FROM "
                "pg_settings WHERE name = 'maintenance_work_mem'), $1::bigint)::text || 'kB', "
                "true)", [want_kb], table=table, doing="cannot size the index build of")
    db.execute(f"ALTER TABLE {table.quoted} ADD PRIMARY KEY ({_K})", table=table,
               doing="cannot add the primary key to")


def check_kv_table(db: Database, table: TableName, text: bool) -> None:
    """Refuse a table without ``key`` and ``value`` columns, or whose columns are text where
    kvio would write bytes or the other way round (before writing anything).

    Raises:
        KvioError: a column is missing (the message lists the table's columns) or of the other
            kind.
    """
    names = db.columns(table)
    missing = [c for c in (KEY, VALUE) if c not in names]
    if missing:
        raise KvioError(f"table {table} in {db.url} has no column(s) {missing} (columns: "
                        f"{names}); kvio writes tables shaped (key, value, PRIMARY KEY (key))")
    for column in (KEY, VALUE):
        if db.column_is_text(table, column) != text:
            kinds = ("text", "bytes", "with --text") if not text else ("bytes", "text",
                                                                      "without --text")
            raise KvioError(f"column {column!r} of table {table} in {db.url} holds {kinds[0]}, "
                            f"not {kinds[1]}: write it {kinds[2]}")


def append_rows(db: Database, table: TableName, data: pa.RecordBatchReader) -> int:
    """Bulk-insert rows (the table must not hold their keys)."""
    return db.ingest(table, data, mode="append")


def _staging(db: Database, data: pa.RecordBatchReader | pa.Table) -> TableName:
    stage = TableName(f"kvio_stage_{uuid.uuid4().hex[:12]}")
    db.ingest(stage, data, mode="create", temporary=True)
    return stage


def upsert_rows(db: Database, table: TableName, data: pa.RecordBatchReader | pa.Table) -> None:
    """Insert or update rows: bulk-loaded into a temporary table, then one
    ``INSERT ... ON CONFLICT (key) DO UPDATE`` (keys must be unique in ``data``)."""
    stage = _staging(db, data)
    # "WHERE true": SQLite's parser needs it to tell ON CONFLICT from a join constraint.
    db.execute(f"INSERT INTO {table.quoted} ({_K}, {_V}) SELECT {_K}, {_V} FROM {stage.quoted} "
               f"WHERE true ON CONFLICT ({_K}) DO UPDATE SET {_V} = excluded.{_V}",
               table=table, doing="cannot upsert into")
    db.execute(f"DROP TABLE {stage.quoted}", table=stage, doing="cannot drop")


def apply_changes(db: Database, table: TableName, changes: pa.RecordBatch) -> None:
    """Upserts and deletes in one go (in the caller's transaction).

    PostgreSQL: the keys to delete travel as one array parameter of a ``DELETE ... WHERE key =
    ANY($1)``, the rows to upsert as two of an ``INSERT ... SELECT FROM unnest($2, $3) ON
    CONFLICT (key) DO UPDATE``, the DELETE a data-modifying ``WITH`` of the INSERT: one
    statement and no temporary table, whose creation and removal write the system catalogue
    (measured: 73 ms against 90 ms a chunk of 10,000 changes on a 1M-row table; one statement
    instead of two: 76 against 85 ms, median of 4). SQLite has no array parameters: the rows
    are bulk-loaded into a temporary table, then one ``DELETE`` and one upsert read it.

    Args:
        db: the database.
        table: a ``kvstore``-shaped table.
        changes: ``key``, ``value`` (bytes or text, as the table's columns); a null value
            deletes the key. Keys are unique.
    """
    values = changes.column(1)
    if db.kind == POSTGRESQL:
        kind = "TEXT" if pa.types.is_string(values.type) else "BYTEA"
        deleted = pc.is_null(values)
        kept = pc.invert(deleted)
        delete = f"DELETE FROM {table.quoted} WHERE {_K} = ANY($1::{kind}[])"

        def upsert(keys: int, vals: int) -> str:  # (parameter numbers)
            return (f"INSERT INTO {table.quoted} ({_K}, {_V}) SELECT * FROM unnest("
                    f"${keys}::{kind}[], ${vals}::{kind}[]) ON CONFLICT ({_K}) DO UPDATE SET "
                    f"{_V} = excluded.{_V}")

        pause_point("sync:staged")  # (crash tests: a chunk about to be applied)
        if not values.null_count:
            sql, params = upsert(1, 2), _arrays(changes.column(0), values)
        elif values.null_count == changes.num_rows:
            sql, params = delete, _arrays(changes.column(0))
        else:
            # One statement: the DELETE as a data-modifying WITH of the upsert. The two touch
            # disjoint keys (a key of the change is set or deleted, not both), so sharing one
            # snapshot changes nothing, and it saves a round trip and a plan.
            sql = f"WITH deleted AS ({delete}) {upsert(2, 3)}"
            params = _arrays(changes.column(0).filter(deleted), changes.column(0).filter(kept),
                             values.filter(kept))
        db.execute(sql, params, table=table, doing="cannot apply changes to")
        return
    stage = _staging(db, pa.Table.from_batches([changes]))
    pause_point("sync:staged")  # (crash tests: a chunk loaded, not yet applied)
    if values.null_count:
        db.execute(f"DELETE FROM {table.quoted} WHERE {_K} IN (SELECT {_K} FROM {stage.quoted} "
                   f"WHERE {_V} IS NULL)", table=table, doing="cannot delete from")
    if values.null_count < changes.num_rows:
        db.execute(f"INSERT INTO {table.quoted} ({_K}, {_V}) SELECT {_K}, {_V} FROM "
                   f"{stage.quoted} WHERE {_V} IS NOT NULL ON CONFLICT ({_K}) DO UPDATE SET "
                   f"{_V} = excluded.{_V}", table=table, doing="cannot upsert into")
    db.execute(f"DROP TABLE {stage.quoted}", table=stage, doing="cannot drop")


def _arrays(*columns: pa.Array) -> pa.RecordBatch:
    """One row of parameters: each column whole as one array value (``$n::type[]``)."""
    return pa.record_batch([pa.ListArray.from_arrays(pa.array([0, len(col)], pa.int32()), col)
                            for col in columns], names=[f"p{i}" for i in range(len(columns))])


def delete_keys(db: Database, table: TableName, keys: pa.RecordBatchReader | pa.Table) -> None:
    """Delete the rows of these keys (a table of one ``key`` column), through a temporary
    table and one ``DELETE``."""
    stage = _staging(db, keys)
    db.execute(f"DELETE FROM {table.quoted} WHERE {_K} IN (SELECT {_K} FROM {stage.quoted})",
               table=table, doing="cannot delete from")
    db.execute(f"DROP TABLE {stage.quoted}", table=stage, doing="cannot drop")
