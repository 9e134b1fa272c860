"""A whole store version into a ``kvstore``-shaped table, in one database transaction."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, KvioError
from ..system import KeyValueSystem
from .db import TYPES_BUILTIN, Database, TableName, connect, parse_table_name
from .tables import (
    add_primary_key,
    append_rows,
    as_table_batches,
    check_kv_table,
    create_kv_table,
    upsert_rows,
)
from .url import POSTGRESQL

__all__ = ["ExportResult", "export_store", "EXPORT_MODES", "write_version"]

EXPORT_MODES = ("create", "replace", "upsert")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_store` wrote.

    Attributes:
        store: the store URI.
        version: the version exported.
        table: the table written.
        rows: pairs written.
        mode: ``create``, ``replace`` or ``upsert``.
        created: whether the table was created.
    """
    store: str
    version: str
    table: str
    rows: int
    mode: str
    created: bool


def write_version(db: Database, reader: Any, table: TableName, mode: str, text: bool,
                  on_rows: Callable[[int], Any] | None = None) -> tuple[int, bool]:
    """Write every pair of an open store version into ``table`` in the current transaction
    (the caller commits).

    Args:
        db: the database.
        reader: an open :class:`kvio.reader.StoreReader`.
        table: the table.
        mode: ``create`` (the table must not exist), ``replace`` (its rows are replaced) or
            ``upsert`` (pairs inserted or updated, other rows kept). A missing table is created
            in every mode.
        text: UTF-8 text columns instead of bytes.
        on_rows: progress (pairs).

    Returns:
        (pairs written, whether the table was created).

    Raises:
        KvioError: mode create on an existing table, a table without key/value columns, a
            key or value that is not UTF-8 with ``text``.
        DatabaseError: the database refused a statement.
    """
    if mode not in EXPORT_MODES:
        raise InvalidArgumentError(f"mode must be one of {EXPORT_MODES}, got {mode!r}")
    exists = db.table_exists(table)
    data = as_table_batches(reader.batches(), text, reader.uri, on_rows)
    count = len(reader)
    if not exists:
        # PostgreSQL builds the primary key index faster once, sorted, after the load.
        late_key = db.kind == POSTGRESQL
        create_kv_table(db, table, text, primary_key=not late_key)
        append_rows(db, table, data)
        if late_key:
            add_primary_key(db, table, count)
        return count, True
    if mode == "create":
        raise KvioError(f"table {table} already exists in {db.url}; export with --mode replace "
                        "(replace its rows) or --mode upsert (add and update rows)",
                        store=reader.uri)
    check_kv_table(db, table, text)
    if mode == "replace":
        db.empty_table(table)
        append_rows(db, table, data)
    else:
        upsert_rows(db, table, data)
    return count, False


def export_store(kvs: KeyValueSystem, store_uri: str, db_url: str, table: str, *,
                 mode: str = "create", text: bool = False,
                 on_rows: Callable[[int], Any] | None = None) -> ExportResult:
    """Export the current version of a store into a table, in one transaction: readers of the
    table see all of it or none of it.

    Args:
        kvs: settings.
        store_uri: the store (its current version is pinned while it is read).
        db_url: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
        table: ``name`` or ``schema.name``.
        mode: see :func:`write_version`.
        text: TEXT columns (UTF-8) instead of bytea/blob.
        on_rows: progress (pairs).

    Returns:
        What was written.

    Raises:
        KvioError, DatabaseError: see :func:`write_version`; nothing is committed then.
    """
    name = parse_table_name(table)
    with kvs.open_store(store_uri) as reader, connect(db_url, types=TYPES_BUILTIN) as db:
        rows, created = write_version(db, reader, name, mode, text, on_rows)
        db.commit()
        return ExportResult(store_uri, reader.version, str(name), rows, mode, created)
