"""SQL databases next to kvio stores (docs/DATABASES.md): build a store from a table or a query,
export a version into a ``kvstore(key, value, PRIMARY KEY(key))`` table, keep a table in sync
with a store incrementally, and read through to a table.

SQLite and PostgreSQL, through ADBC (Arrow batches end to end); the drivers are the ``sql``
extra (``pip install 'kvio[sql]'``) and are imported only when a database is used.
"""
from __future__ import annotations

from .db import Database, TableName, connect, parse_table_name, quote_identifier
from .exporter import EXPORT_MODES, ExportResult, export_store
from .importer import ImportResult, import_table
from .loader import Loader
from .sync import STATE_TABLE, SyncResult, SyncState, read_state, sync_store
from .url import DatabaseURL, is_database_url, parse_database_url

__all__ = ["Database", "DatabaseURL", "EXPORT_MODES", "ExportResult", "ImportResult", "Loader",
           "STATE_TABLE", "SyncResult", "SyncState", "TableName", "connect", "export_store",
           "import_table", "is_database_url", "parse_database_url", "parse_table_name",
           "quote_identifier", "read_state", "sync_store"]
