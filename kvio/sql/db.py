"""One connection to a SQL database through ADBC, with what differs between SQLite and
PostgreSQL (placeholders, column types, how a table is emptied) kept in this module.

ADBC is imported on first use only, so ``import kvio`` never needs the ``sql`` extra; without it
the error says what to install. Identifiers (tables, columns) are validated and double-quoted,
never pasted from user input as they are; values always travel as bound parameters or Arrow
data.
"""
from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import DatabaseError, InvalidArgumentError, KvioError
from .url import POSTGRESQL, SQLITE, DatabaseURL, parse_database_url

__all__ = ["Database", "TableName", "parse_table_name", "quote_identifier", "connect",
           "TYPES_BUILTIN", "TYPES_SERVER"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DRIVERS = {SQLITE: "adbc_driver_sqlite.dbapi", POSTGRESQL: "adbc_driver_postgresql.dbapi"}
#: rows per Arrow batch SQLite's driver returns (its default, 1,024, costs a Python round trip
#: per thousand rows)
SQLITE_BATCH_ROWS = 65536
#: bytes per Arrow batch PostgreSQL's driver returns for a streamed query (None: the driver's
#: default, 16 MB). With 16 MB batches the store writer still had two batches to write after
#: the last row arrived; much smaller ones cost the writer per-row work where a batch ends
#: inside a block. 8 MB measured best for imports (1M rows, median of 9: 0.655 s against
#: 0.708 s with 16 MB and 0.665 s with 4 MB)
PG_BATCH_BYTES: int | None = 8 << 20
#: PostgreSQL's ADBC driver learns the server's types when a connection is opened: with
#: ``server`` it reads the whole type catalogue first (measured here: 45-70 ms of a 55-75 ms
#: connect), with ``builtin`` it knows PostgreSQL's built-in types only (9-15 ms). kvio's own
#: statements on its ``kvstore``-shaped tables (export, sync) need nothing else; a user's query
#: (import) or table (read-through) may use enums or extension types, so those keep ``server``
TYPES_BUILTIN = "builtin"
TYPES_SERVER = "server"


def quote_identifier(name: str) -> str:
    """``name`` double-quoted for SQL, after checking it is a plain identifier.

    Args:
        name: a table or column name: letters, digits and ``_``, not starting with a digit, at
            most 63 characters (PostgreSQL's limit).

    Returns:
        The quoted identifier (quoting keeps its case and allows reserved words like ``key``).

    Raises:
        InvalidArgumentError: anything else (quotes, spaces, dots, semicolons...).
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidArgumentError(f"{name!r} is not a valid SQL identifier for kvio (letters, "
                                   "digits and _, not starting with a digit, at most 63)")
    return f'"{name}"'


@dataclass(frozen=True)
class TableName:
    """A table, optionally in a schema (PostgreSQL).

    Attributes:
        name: the table.
        schema: its schema, or None for the default one.
    """
    name: str
    schema: str | None = None

    @property
    def quoted(self) -> str:
        """The name for SQL text: ``"schema"."name"`` or ``"name"``."""
        own = quote_identifier(self.name)
        return own if self.schema is None else f"{quote_identifier(self.schema)}.{own}"

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


def parse_table_name(text: str) -> TableName:
    """Parse ``table`` or ``schema.table``.

    Args:
        text: the name as typed.

    Returns:
        The validated name.

    Raises:
        InvalidArgumentError: not one or two plain identifiers.
    """
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a table name must be a string, got {text!r}")
    parts = text.split(".")
    if len(parts) > 2:
        raise InvalidArgumentError(f"{text!r} is not a table name (table or schema.table)")
    for part in parts:
        quote_identifier(part)
    return TableName(parts[-1], parts[0] if len(parts) == 2 else None)


def _driver(kind: str) -> Any:
    module = _DRIVERS[kind]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise KvioError(f"{kind} databases need the ADBC driver ({module}): "
                        "pip install 'kvio[sql]'") from None


class Database:
    """An open ADBC connection (autocommit off: everything runs in the current transaction until
    :meth:`commit`). Every driver error becomes a :class:`DatabaseError` naming the database.

    Args:
        url: the database.
        timeout: seconds a PostgreSQL statement may run (``statement_timeout``) and the
            connection may take; None for the server's default.
        autocommit: every statement its own transaction (for read-only lookups).
        types: PostgreSQL: :data:`TYPES_SERVER` (every type the server has, read at connect)
            or :data:`TYPES_BUILTIN` (built-in types only, a faster connect; a column of
            another type, such as an enum, comes back as opaque bytes). Ignored for SQLite.
    """

    def __init__(self, url: DatabaseURL, timeout: float | None = None, autocommit: bool = False,
                 types: str = TYPES_SERVER):
        self.url = url
        self.kind = url.kind
        driver = _driver(url.kind)
        target = url.target
        if url.kind == POSTGRESQL and timeout is not None and "connect_timeout" not in target:
            target += ("&" if "?" in target else "?") + f"connect_timeout={max(1, round(timeout))}"
        options = {}
        if url.kind == POSTGRESQL:
            if types not in (TYPES_SERVER, TYPES_BUILTIN):
                raise InvalidArgumentError(f"types must be {TYPES_SERVER!r} or "
                                           f"{TYPES_BUILTIN!r}, not {types!r}")
            options["adbc.postgresql.type_resolver_mode"] = types
        with self.errors("cannot connect"):
            self.conn = driver.connect(target, autocommit=autocommit,
                                       **({"db_kwargs": options} if options else {}))
        self.cursor = self.conn.cursor()
        if url.kind == POSTGRESQL and timeout is not None:
            self.execute(f"SET statement_timeout = {int(timeout * 1000)}")
            if not autocommit:
                self.commit()

    # ---- errors ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def errors(self, doing: str, table: TableName | str | None = None) -> Iterator[None]:
        """Turn driver errors raised inside the block into DatabaseError.

        Args:
            doing: what was being done, for the message.
            table: the table involved, if any.
        """
        try:
            yield
        except KvioError:
            raise
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            where = f" table {table}" if table is not None else ""
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseError(f"{doing}{where} in {self.url}: {detail}") from None

    # ---- dialect ---------------------------------------------------------------------------
    def placeholder(self, i: int) -> str:
        """The i-th (0-based) bound parameter's marker."""
        return f"${i + 1}" if self.kind == POSTGRESQL else "?"

    def placeholders(self, n: int, start: int = 0) -> str:
        """``n`` comma-separated markers, the first being parameter ``start``."""
        return ", ".join(self.placeholder(start + i) for i in range(n))

    @property
    def bytes_type(self) -> str:
        """The column type of exact bytes."""
        return "BYTEA" if self.kind == POSTGRESQL else "BLOB"

    # ---- statements ------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] | pa.RecordBatch | None = None, *,
                table: TableName | str | None = None, doing: str = "SQL failed") -> None:
        """Run one statement in the current transaction.

        Args:
            sql: the statement.
            params: its parameters: a sequence of values, or an Arrow batch of one row (the
                statement runs once per row; a list column binds an array parameter).
            table: the table involved, for error messages.
            doing: what is being done, for error messages.

        Raises:
            DatabaseError: the database refused it.
        """
        with self.errors(doing, table):
            self.cursor.execute(sql, params)

    def rows(self, sql: str, params: Sequence[Any] | None = None, *,
             table: TableName | str | None = None, doing: str = "query failed") -> list[tuple]:
        """Run a query and return all its rows (for small answers)."""
        with self.errors(doing, table):
            self.cursor.execute(sql, params)
            return self.cursor.fetchall()

    def batches(self, sql: str, *, table: TableName | str | None = None,
                doing: str = "query failed") -> pa.RecordBatchReader:
        """Run a query and stream its answer as Arrow batches (bounded memory)."""
        with self.errors(doing, table):
            if self.kind == SQLITE:
                self.cursor.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(SQLITE_BATCH_ROWS)})
            elif PG_BATCH_BYTES:
                self.cursor.adbc_statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(PG_BATCH_BYTES)})
            self.cursor.execute(sql)
            return self.cursor.fetch_record_batch()

    def ingest(self, table: TableName, data: pa.Table | pa.RecordBatchReader, mode: str = "append",
               temporary: bool = False) -> int:
        """Bulk-load Arrow data (PostgreSQL: COPY; SQLite: a prepared insert) in the current
        transaction. An error raised while producing ``data`` (a KvioError naming a key) is
        raised as it is, not as the driver's report of it.

        Returns:
            Rows written (-1 when the driver does not say).
        """
        failed: list[BaseException] = []
        if isinstance(data, pa.RecordBatchReader):
            data = pa.RecordBatchReader.from_batches(data.schema, _noting(data, failed))
        try:
            with self.errors("bulk load failed", table):
                return self.cursor.adbc_ingest(table.name, data, mode=mode, temporary=temporary,
                                               db_schema_name=table.schema)
        except DatabaseError:
            if failed:
                raise failed[0] from None
            raise

    def table_exists(self, table: TableName) -> bool:
        """Whether the table exists (in its schema, or the search path / main database)."""
        if self.kind == POSTGRESQL:
            found = self.rows("SELECT to_regclass($1) IS NOT NULL", [table.quoted], table=table)
            return bool(found[0][0])
        if table.schema is not None:
            raise InvalidArgumentError(f"SQLite tables have no schema: {table}")
        found = self.rows("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                          [table.name], table=table)
        return bool(found[0][0])

    def columns(self, table: TableName) -> list[str]:
        """The table's column names, in order."""
        with self.errors("cannot describe", table):
            self.cursor.execute(f"SELECT * FROM {table.quoted} WHERE 1 = 0")
            names = [d[0] for d in self.cursor.description or []]
            self.cursor.fetchall()
        return names

    def column_is_text(self, table: TableName, column: str) -> bool:
        """Whether a column holds text rather than bytes (SQLite: by its declared type, with
        SQLite's own affinity rule; PostgreSQL: by the type of the result column).

        Raises:
            DatabaseError: no such table or column.
        """
        if self.kind == SQLITE:
            found = self.rows("SELECT type FROM pragma_table_info(?) WHERE name = ?",
                              [table.name, column], table=table)
            if not found:
                raise DatabaseError(f"no column {column!r} in table {table} of {self.url}")
            declared = str(found[0][0]).upper()
            return any(word in declared for word in ("CHAR", "CLOB", "TEXT"))
        with self.errors("cannot describe", table):
            self.cursor.execute(f"SELECT {quote_identifier(column)} FROM {table.quoted} "
                                "WHERE 1 = 0")
            field = self.cursor.fetch_arrow_table().schema.field(0)
        kind = field.type
        if isinstance(kind, pa.BaseExtensionType):  # a type the driver does not know (enum...)
            found = self.rows("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                              "attrelid = to_regclass($1) AND attname = $2",
                              [table.quoted, column], table=table)
            name = found[0][0] if found else str(kind)
            raise DatabaseError(f"column {column!r} of table {table} in {self.url} has type "
                                f"{name}; kvio reads and writes bytea or text columns")
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)

    def empty_table(self, table: TableName) -> None:
        """Remove every row, inside the current transaction (PostgreSQL's TRUNCATE is
        transactional; SQLite turns an unqualified DELETE into a fast truncate)."""
        verb = "TRUNCATE TABLE" if self.kind == POSTGRESQL else "DELETE FROM"
        self.execute(f"{verb} {table.quoted}", table=table, doing="cannot empty")

    def commit(self) -> None:
        """Commit the current transaction."""
        with self.errors("commit failed"):
            self.conn.commit()

    def rollback(self) -> None:
        """Roll the current transaction back (errors are ignored: the connection may be
        gone, and then the server rolls back by itself)."""
        with contextlib.suppress(Exception):
            self.conn.rollback()

    def close(self) -> None:
        """Close the connection (an uncommitted transaction is rolled back by the server)."""
        for thing in (self.cursor, self.conn):
            with contextlib.suppress(Exception):
                thing.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self.rollback()
        self.close()


def _noting(batches: Iterator[pa.RecordBatch], failed: list[BaseException]
            ) -> Iterator[pa.RecordBatch]:
    """``batches``, keeping the exception that ends them (the driver that consumes them reports
    it only as text)."""
    try:
        yield from batches
    except BaseException as exc:
        failed.append(exc)
        raise


def _is_driver_error(exc: BaseException) -> bool:
    """ADBC's DB-API errors (and the driver manager's own) without importing it eagerly."""
    module = type(exc).__module__ or ""
    return module.startswith("adbc_driver")


def connect(url: str | DatabaseURL, timeout: float | None = None,
            autocommit: bool = False, types: str = TYPES_SERVER) -> Database:
    """Open a connection.

    Args:
        url: a database URL or a parsed one.
        timeout: see :class:`Database`.
        autocommit: see :class:`Database`.
        types: see :class:`Database`.

    Returns:
        The open database (use it as a context manager).

    Raises:
        InvalidArgumentError: a malformed URL.
        KvioError: the ADBC driver is not installed.
        DatabaseError: the database cannot be reached.
    """
    parsed = url if isinstance(url, DatabaseURL) else parse_database_url(url)
    return Database(parsed, timeout, autocommit, types)
