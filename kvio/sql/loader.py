"""Read-through from a table: ``SELECT value FROM T WHERE key = $1`` (``IN (...)`` for many keys)
through a small connection pool, for in-process use and for ``kvio serve --read-through``.

An error is never a value: a failed query, a timeout or a NULL value raises; ``None`` means
only "no row with this key".
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Sequence

from ..byteslike import as_bytes
from ..errors import DatabaseError, InvalidArgumentError, KvioError
from .db import Database, connect, parse_table_name, quote_identifier
from .url import parse_database_url

__all__ = ["Loader", "load", "ENV_URL", "ENV_TABLE"]

#: most keys bound in one ``IN (...)`` query (SQLite allows 32,766 parameters, PostgreSQL 65,535)
MAX_KEYS_PER_QUERY = 1000


class Loader:
    """Looks keys up in a table.

    Args:
        db_url: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.
        table: ``name`` or ``schema.name``.
        key_col: the key column (bytea/blob or text; text keys are bound as UTF-8).
        value_col: the value column (bytea/blob or text; text values are returned as UTF-8).
        pool_size: connections kept open, at most (one per concurrent lookup).
        timeout: seconds to wait for a free connection, to connect and (PostgreSQL) for one
            query to run.

    Raises:
        InvalidArgumentError: a bad URL, identifier, pool size or timeout.
    """

    def __init__(self, db_url: str, table: str, key_col: str = "key", value_col: str = "value",
                 pool_size: int = 4, timeout: float = 5.0):
        if pool_size < 1:
            raise InvalidArgumentError(f"pool_size must be at least 1, got {pool_size}")
        if timeout <= 0:
            raise InvalidArgumentError(f"timeout must be positive, got {timeout}")
        self.url = parse_database_url(db_url)
        self.key_col = key_col
        self.table = parse_table_name(table)
        self._select = (f"SELECT {quote_identifier(key_col)}, {quote_identifier(value_col)} "
                        f"FROM {self.table.quoted} WHERE {quote_identifier(key_col)}")
        self.pool_size = pool_size
        self.timeout = timeout
        self._idle: queue.LifoQueue[Database] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._text_keys: bool | None = None
        self._closed = False

    # ---- the pool ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connection(self) -> Iterator[Database]:
        if self._closed:
            raise KvioError(f"the loader of table {self.table} is closed")
        if not self._slots.acquire(timeout=self.timeout):
            raise DatabaseError(f"no free connection to {self.url} within {self.timeout} s "
                                f"(pool of {self.pool_size}) for table {self.table}")
        db = None
        healthy = False
        try:
            try:
                db = self._idle.get_nowait()
            except queue.Empty:
                db = connect(self.url, timeout=self.timeout, autocommit=True)
            yield db
            healthy = True
        finally:
            if db is not None:
                if healthy and not self._closed:
                    self._idle.put(db)
                else:  # a connection that failed mid-query may be broken: never reuse it
                    db.close()
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection; lookups after this raise."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- lookups -------------------------------------------------------------------------------
    def _query(self, db: Database, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        if self._text_keys is None:
            # Text keys are bound as strings: SQLite never finds a blob equal to a text value.
            self._text_keys = db.column_is_text(self.table, self.key_col)
        params: list[object] = list(keys)
        if self._text_keys:
            try:
                params = [k.decode("utf-8") for k in keys]
            except UnicodeDecodeError:
                # A key that is not UTF-8 cannot be in a text column: look up the others.
                params = [k.decode("utf-8") for k in keys if _is_utf8(k)]
        if not params:
            return {}
        sql = (f"{self._select} = {db.placeholder(0)}" if len(params) == 1
               else f"{self._select} IN ({db.placeholders(len(params))})")
        rows = db.rows(sql, params, table=self.table, doing="lookup failed in")
        found: dict[bytes, bytes] = {}
        for key, value in rows:
            if value is None:
                raise DatabaseError(f"the value of a key is NULL in table {self.table} of "
                                    f"{self.url}; kvio values cannot be null", key=_raw(key))
            found[_raw(key)] = _raw(value)
        return found

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None when the table has no row for it.

        Raises:
            DatabaseError: the query failed or timed out, or the value is NULL.
            InvalidArgumentError: ``key`` is not bytes-like.
        """
        key = as_bytes(key)
        with self._connection() as db:
            return self._query(db, [key]).get(key)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values (None where absent) for many keys, in input order, at most
        :data:`MAX_KEYS_PER_QUERY` keys per query.

        Raises:
            DatabaseError: a query failed or timed out, or a value is NULL.
            InvalidArgumentError: a key is not bytes-like.
        """
        wanted = [as_bytes(k) for k in keys]
        unique = list(dict.fromkeys(wanted))
        found: dict[bytes, bytes] = {}
        with self._connection() as db:
            for i in range(0, len(unique), MAX_KEYS_PER_QUERY):
                found.update(self._query(db, unique[i:i + MAX_KEYS_PER_QUERY]))
        return [found.get(k) for k in wanted]

    def __call__(self, store_name: str, key: bytes) -> bytes | None:
        """The read-through loader interface of ``kvio serve`` (the store name is unused)."""
        return self.get(key)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _raw(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


# ---- for kvio serve --read-through NAME=kvio.sql.loader:load ------------------------------------
ENV_URL = "KVIO_SQL_LOADER_URL"
ENV_TABLE = "KVIO_SQL_LOADER_TABLE"
ENV_KEY_COL = "KVIO_SQL_LOADER_KEY_COL"
ENV_VALUE_COL = "KVIO_SQL_LOADER_VALUE_COL"
ENV_POOL = "KVIO_SQL_LOADER_POOL"
ENV_TIMEOUT = "KVIO_SQL_LOADER_TIMEOUT"
_LOADERS: dict[str, Loader] = {}
_LOADERS_LOCK = threading.Lock()


def _from_environment(store_name: str) -> Loader:
    url = os.environ.get(ENV_URL)
    if not url:
        raise KvioError(f"kvio.sql.loader:load needs {ENV_URL} (and {ENV_TABLE}) in the "
                        "environment of kvio serve")
    table = os.environ.get(ENV_TABLE, "{store}").replace("{store}", store_name)
    try:
        return Loader(url, table, os.environ.get(ENV_KEY_COL, "key"),
                      os.environ.get(ENV_VALUE_COL, "value"),
                      int(os.environ.get(ENV_POOL, "4")), float(os.environ.get(ENV_TIMEOUT, "5")))
    except ValueError as exc:
        raise KvioError(f"bad {ENV_POOL} or {ENV_TIMEOUT}: {exc}") from None


def load(store_name: str, key: bytes) -> bytes | None:
    """A read-through loader configured by environment variables, one :class:`Loader` per
    store name and process: ``KVIO_SQL_LOADER_URL`` (the database), ``KVIO_SQL_LOADER_TABLE``
    (the table; ``{store}`` is replaced by the store's name; default ``{store}``), and
    optionally ``KVIO_SQL_LOADER_KEY_COL``, ``KVIO_SQL_LOADER_VALUE_COL``,
    ``KVIO_SQL_LOADER_POOL`` (connections, default 4) and ``KVIO_SQL_LOADER_TIMEOUT``
    (seconds, default 5).

    Args:
        store_name: the store the server asks for.
        key: the key the store did not hold.

    Returns:
        The table's value, or None when it has no such row.

    Raises:
        KvioError: configuration missing or wrong; DatabaseError from the lookup.
    """
    loader = _LOADERS.get(store_name)
    if loader is None:
        with _LOADERS_LOCK:
            loader = _LOADERS.get(store_name)
            if loader is None:
                loader = _LOADERS[store_name] = _from_environment(store_name)
    return loader.get(key)
