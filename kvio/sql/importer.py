"""A store from a table or a query: Arrow batches streamed from the driver, sorted in kvio's
order with spilling (the same path as ``kvio import`` of files)."""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import InvalidArgumentError, KvioError
from ..sorting import normalize_batch
from ..system import KeyValueSystem
from .db import TYPES_BUILTIN, TYPES_SERVER, Database, connect, parse_table_name, quote_identifier
from .url import POSTGRESQL

__all__ = ["ImportResult", "import_table"]


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_table` wrote.

    Attributes:
        store: the store URI.
        version: the version published.
        rows: pairs written.
        dropped: duplicate rows dropped (``duplicates`` first or last).
        input_sorted: whether the rows arrived in key order (no sort was needed).
    """
    store: str
    version: str | None
    rows: int
    dropped: int
    input_sorted: bool


def _cast_advice(db: Database, column: str, kind: pa.DataType) -> str:
    binary = "BYTEA" if db.kind == POSTGRESQL else "BLOB"
    return (f"column {column!r} has type {kind}; kvio stores bytes, so it must be text or "
            f"binary: select it cast, e.g. --query \"SELECT CAST({column} AS TEXT) AS "
            f"{column}, ...\" (or AS {binary})")


def _checked_batches(db: Database, schema: pa.Schema, reader: Iterator[pa.RecordBatch],
                     key_col: str, value_col: str, source: str,
                     on_rows: Callable[[int], Any] | None) -> Iterator[pa.RecordBatch]:
    """The query's batches as (key, value) large_binary batches; a missing column, another type
    or a null is an error naming the column."""
    names = schema.names
    for name in (key_col, value_col):
        if name not in names:
            raise KvioError(f"the result of {source} has no column {name!r} (columns: {names}); "
                            "name them with --key-col and --value-col")
    for batch in reader:
        for name in (key_col, value_col):
            kind = batch.schema.field(name).type
            if pa.types.is_null(kind) and batch.num_rows:
                raise KvioError(f"column {name!r} of {source} is null in {batch.num_rows} row(s); "
                                "kvio keys and values cannot be null")
            if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                    or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise KvioError(f"{_cast_advice(db, name, kind)} (in {source})")
        if on_rows is not None:
            on_rows(batch.num_rows)
        yield normalize_batch(batch, key_col, value_col, source)


_PREFETCH = 3  # driver batches read ahead of the sort (each about db.PG_BATCH_BYTES)
#: partitions of an import from a database are cut at this size (or at kvio.partition.size.max
#: when that is smaller): each finished partition's hash index build and fsync then overlap the
#: rest of the stream, instead of a single partition's all waiting for the last row
IMPORT_PARTITION_BYTES = 64 << 20


def _prefetched(reader: pa.RecordBatchReader) -> Generator[pa.RecordBatch, None, None]:
    """The reader's batches, fetched by a thread while the consumer sorts and writes (the
    driver waits on the network with the GIL released), at most :data:`_PREFETCH` ahead."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_PREFETCH)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for batch in reader:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=fetch, name="kvio-sql-fetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _unresolved(schema: pa.Schema, columns: tuple[str, str]) -> bool:
    """Whether one of ``columns`` has a type the driver's built-in type list does not know (an
    enum, an extension's type): it arrives as ``arrow.opaque`` named ``unnamed<oid:N>``."""
    for name in columns:
        if name in schema.names:
            field = schema.field(name)
            typname = (field.metadata or {}).get(b"POSTGRESQL:type", b"")
            if isinstance(field.type, pa.BaseExtensionType) and typname.startswith(b"unnamed<"):
                return True
    return False


def _open_stream(stack: contextlib.ExitStack, db_url: str, sql: str, table: str | None,
                 key_col: str, value_col: str) -> tuple[Database, pa.RecordBatchReader]:
    """The connection and the query's stream. PostgreSQL: connected with the driver's
    built-in types first (no read of the server's type catalogue: 5-8 ms instead of 36-47 ms
    here); if the key or value column then has a type only the catalogue names (an enum
    arrives as text that way), the query runs again on a connection with the server's types.
    Text and binary columns, the ones an import takes, are built-in types. (SQLite ignores
    the setting, and its columns never need the catalogue.)"""
    db = stack.enter_context(connect(db_url, types=TYPES_BUILTIN))
    reader = db.batches(sql, table=table, doing="cannot read")
    if _unresolved(reader.schema, (key_col, value_col)):
        reader.close()
        db.close()
        db = stack.enter_context(connect(db_url, types=TYPES_SERVER))
        reader = db.batches(sql, table=table, doing="cannot read")
    return db, reader


def import_table(kvs: KeyValueSystem, db_url: str, store_uri: str, *, table: str | None = None,
                 query: str | None = None, key_col: str = "key", value_col: str = "value",
                 duplicates: str = "error", mode: str = "error",
                 on_rows: Callable[[int], Any] | None = None,
                 on_written: Callable[[int], Any] | None = None) -> ImportResult:
    """Build a store version from a table or a query.

    The driver streams Arrow batches; kvio sorts them with bounded memory
    (``kvio.sort.memory``, spilling to ``kvio.sort.spill.dir``) and publishes one version,
    in partitions of at most :data:`IMPORT_PARTITION_BYTES` (or ``kvio.partition.size.max``
    when smaller), written while the rows arrive.

    Args:
        kvs: settings and storage options.
        db_url: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
        store_uri: the store to write.
        table: read every row of this table (``name`` or ``schema.name``)...
        query: ...or the rows of this SQL query (exactly one of the two).
        key_col: the key column (text or binary).
        value_col: the value column (text or binary).
        duplicates: ``error``, ``first`` or ``last`` (in the order the database returns rows).
        mode: ``error`` (refuse an existing store) or ``overwrite``.
        on_rows: called with the number of rows of each batch read.
        on_written: called with pairs written, for progress.

    Returns:
        What was written.

    Raises:
        InvalidArgumentError: neither or both of table and query, a bad identifier.
        DatabaseError: the database refused the query.
        KvioError: a column is missing, null, or of another type (the message gives the cast
            to use), a duplicate key, an existing store with mode error. Nothing is published.
    """
    from ..cli.transfer import import_batches  # the file import's write path (no cycle at load)

    if (table is None) == (query is None):
        raise InvalidArgumentError("give exactly one of table= and query=")
    if table is not None:
        name = parse_table_name(table)
        sql = (f"SELECT {quote_identifier(key_col)}, {quote_identifier(value_col)} "
               f"FROM {name.quoted}")
        source = f"table {name}"
    else:
        assert query is not None
        sql, source = query, "the query"
    if kvs.conf.partition_size_max > IMPORT_PARTITION_BYTES:
        kvs = KeyValueSystem(conf={**kvs.conf_overrides,
                                   "kvio.partition.size.max": str(IMPORT_PARTITION_BYTES)},
                             storage_options=kvs.storage_options)
    with contextlib.ExitStack() as stack:
        db, reader = _open_stream(stack, db_url, sql, table, key_col, value_col)
        source = f"{source} in {db.url}"
        # closing(): the fetch thread stops before the connection closes, also on an error
        with db.errors("reading failed", table), \
                contextlib.closing(_prefetched(reader)) as fetched:
            record, written = import_batches(
                kvs, store_uri, mode, _checked_batches(db, reader.schema, fetched, key_col,
                                                       value_col, source, on_rows),
                duplicates, on_written)
    return ImportResult(store_uri, record.version if record else None, written.rows_written,
                        written.dropped, written.input_sorted)
