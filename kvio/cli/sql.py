"""``kvio import DB_URL ...``, ``kvio export ... DB_URL`` and ``kvio sync``: SQL databases from a
shell (docs/DATABASES.md). A source or destination that is a database URL (``sqlite://``,
``postgresql://``) selects these paths; :mod:`kvio.sql` does the work."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from ..system import KeyValueSystem
from .commands import cmd_export, cmd_import
from .files import _UsageError
from .output import _print_json, _progress

__all__ = ["add_database_options", "add_sync_command", "cmd_import_any", "cmd_export_any",
           "is_database_url"]


def is_database_url(text: object) -> bool:
    """Whether a command-line argument names a database (without importing ADBC)."""
    from ..sql.url import is_database_url as check
    return check(text)


def add_database_options(import_parser: argparse.ArgumentParser,
                         export_parser: argparse.ArgumentParser) -> None:
    """The options of import and export that only a database source or destination takes."""
    source = import_parser.add_argument_group("database source (DB_URL as input)")
    which = source.add_mutually_exclusive_group()
    which.add_argument("--table", metavar="T", help="import every row of table T")
    which.add_argument("--query", metavar="SQL", help="import the rows of a query")
    dest = export_parser.add_argument_group("database destination (DB_URL as output)")
    dest.add_argument("--table", metavar="T", help="write into table T (key, value, PRIMARY KEY)")
    dest.add_argument("--mode", choices=("create", "replace", "upsert"), default=None,
                      help="create (default; the table must not exist), replace its rows, or "
                      "upsert (insert or update)")
    dest.add_argument("--text", action="store_true",
                      help="TEXT columns (UTF-8) instead of bytea/blob")


def _import_db(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    from ..sql import import_table

    if args.table is None and args.query is None:
        raise _UsageError("importing from a database needs --table T or --query SQL")
    if args.format is not None or args.encoding != "auto":
        raise _UsageError("--format, --hex and --base64 apply to file input only")
    with _progress(args, unit="rows", desc="read") as read_bar, \
            _progress(args, unit="pairs", desc="write", position=1) as write_bar:
        result = import_table(kvs, args.src, args.uri, table=args.table, query=args.query,
                              key_col=args.key_col, value_col=args.value_col,
                              duplicates=args.duplicates, mode=args.mode,
                              on_rows=read_bar.update, on_written=write_bar.update)
    if args.json:
        _print_json({"uri": args.uri, "count": result.rows, "version": result.version,
                     "input_sorted": result.input_sorted, "duplicates_dropped": result.dropped})
    else:
        dup = f", {result.dropped} duplicate(s) dropped" if result.dropped else ""
        print(f"imported {result.rows} pairs into {args.uri}{dup}; version {result.version}")
    return 0


def cmd_import_any(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio import``: from a database when the source is a database URL, else a file."""
    if is_database_url(args.src):
        return _import_db(args, kvs)
    if args.table is not None or args.query is not None:
        raise _UsageError("--table and --query need a database URL as the source")
    return cmd_import(args, kvs)


def _export_db(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    from ..sql import export_store

    if args.table is None:
        raise _UsageError("exporting to a database needs --table T")
    if args.format is not None or args.encoding != "auto" or \
            any(getattr(args, b) is not None for b in ("start", "stop", "prefix")):
        raise _UsageError("--format, --hex, --base64, --start, --stop and --prefix apply to "
                          "file output only (a database export writes a whole version)")
    with _progress(args, unit="pairs", desc="export") as bar:
        result = export_store(kvs, args.uri, args.dest, args.table, mode=args.mode or "create",
                              text=args.text, on_rows=bar.update)
    if args.json:
        _print_json({"uri": args.uri, "version": result.version, "table": result.table,
                     "count": result.rows, "mode": result.mode, "created": result.created})
    else:
        made = " (created it)" if result.created else ""
        print(f"exported {result.rows} pairs of {args.uri} (version {result.version}) into "
              f"table {result.table}{made}")
    return 0


def cmd_export_any(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio export``: into a database table when the destination is a database URL."""
    if is_database_url(args.dest):
        return _export_db(args, kvs)
    if args.table is not None or args.mode is not None or args.text:
        raise _UsageError("--table, --mode and --text need a database URL as the destination")
    return cmd_export(args, kvs)


def cmd_sync(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio sync STORE_URI DB_URL --table T``."""
    from ..sql import sync_store

    if not is_database_url(args.db_url):
        raise _UsageError(f"not a database URL: {args.db_url!r} (sqlite:///path.db or "
                          "postgresql://user@host:port/db)")
    with _progress(args, unit="rows", desc="sync") as bar:
        result = sync_store(kvs, args.uri, args.db_url, args.table, text=args.text,
                            on_rows=bar.update)
    if args.json:
        _print_json({"uri": result.store, "table": result.table, "from_version":
                     result.from_version, "version": result.to_version, "method": result.method,
                     "upserted": result.upserted, "deleted": result.deleted})
    elif result.method == "unchanged":
        print(f"table {result.table} already holds version {result.to_version} of {result.store}")
    else:
        print(f"synced {result.store} (version {result.to_version}) into table {result.table}: "
              f"{result.method}, {result.upserted} upserted, {result.deleted} deleted")
    return 0


def add_sync_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``kvio sync``."""
    p = command("sync", cmd_sync, "keep a database table equal to a store's current version "
                "(first run: create it; then only what changed)")
    p.add_argument("uri", help="the store")
    p.add_argument("db_url", help="sqlite:///path.db or postgresql://user@host:port/db")
    p.add_argument("--table", required=True, metavar="T", help="the mirror table")
    p.add_argument("--text", action="store_true",
                   help="TEXT columns (UTF-8) instead of bytea/blob")
