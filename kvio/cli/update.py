"""``kvio set``, ``kvio del``, ``kvio apply`` and ``kvio compact``: updates from a shell.

Each of set, del and apply publishes one delta version (:meth:`KeyValueSystem.update_store`);
compact rewrites the current version without tombstones (:meth:`KeyValueSystem.compact`).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..errors import KvioError
from ..system import KeyValueSystem
from ..update import StoreUpdate
from .encoding import decode_text
from .files import _open_input, _UsageError
from .output import _print_json, _progress
from .transfer import json_object

__all__ = ["add_update_commands"]

_APPLY_FORMATS = ("tsv", "jsonl")


def _report(args: argparse.Namespace, what: str, record: dict[str, Any] | None, **extra: Any) -> None:
    version = record["version"] if record else None
    if args.json:
        _print_json({"uri": args.uri, "version": version, **extra})
    elif record is None:
        print(f"{args.uri}: nothing to {what}")
    else:
        details = ", ".join(f"{v} {k}" for k, v in extra.items())
        print(f"{what} {args.uri}: {details} (version {version})")


def cmd_set(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio set URI KEY VALUE``."""
    try:
        value = decode_text(args.value, args.encoding)
    except ValueError as exc:
        raise _UsageError(f"argument VALUE: not valid {args.encoding}: {exc}") from None
    with kvs.update_store(args.uri) as update:
        update.set(args.keys[0], value)
    _report(args, "set", update.record, set=1)
    return 0


def cmd_del(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio del URI KEY...``: deleting an absent key is not an error."""
    with kvs.update_store(args.uri) as update:
        update.delete_many(args.keys)
    _report(args, "del", update.record, deleted=len(args.keys))
    return 0


def _field(doc: dict[str, Any], name: str, encoding: str) -> bytes:
    text = doc.get(name)
    if not isinstance(text, str):
        raise ValueError(f"field {name!r} must be a string, found {type(text).__name__}")
    try:
        return text.encode("utf-8") if encoding == "auto" else decode_text(text, encoding)
    except UnicodeEncodeError:
        raise ValueError(f"field {name!r} holds a lone surrogate (not encodable as UTF-8)") from None


def _parse_op(line: bytes, fmt: str, encoding: str) -> tuple[str, bytes, bytes | None]:
    """(op, key, value or None) of one line; ValueError when it is malformed."""
    if fmt == "tsv":
        fields = line.split(b"\t")
        op = fields[0].decode("utf-8", "replace")
        want = {"set": 3, "del": 2}.get(op)
        if want is None:
            raise ValueError(f"unknown op {op!r} (use set or del)")
        if len(fields) != want:
            raise ValueError(f"{op} takes {want} tab-separated fields, found {len(fields)}")
        key = decode_text(fields[1], encoding)
        return op, key, decode_text(fields[2], encoding) if op == "set" else None
    doc = json_object(line)
    kind = doc.get("op")
    if kind not in ("set", "del"):
        raise ValueError(f"unknown op {kind!r} (use set or del)")
    key = _field(doc, "key", encoding)
    return kind, key, _field(doc, "value", encoding) if kind == "set" else None


def _apply_lines(update: StoreUpdate, args: argparse.Namespace, fmt: str,
                 progress: Callable[[int], Any]) -> dict[str, int]:
    counts = {"set": 0, "deleted": 0}
    with _open_input(args.file) as handle:
        for lineno, raw in enumerate(handle, 1):
            progress(1)
            line = raw.rstrip(b"\n")
            line = line[:-1] if line.endswith(b"\r") else line
            if not line:
                continue
            try:
                op, key, value = _parse_op(line, fmt, args.encoding)
            except ValueError as exc:
                raise KvioError(f"line {lineno}: {exc}", file=args.file) from None
            if value is None:
                update.delete(key)
                counts["deleted"] += 1
            else:
                update.set(key, value)
                counts["set"] += 1
    return counts


def cmd_apply(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio apply URI FILE``: set/del lines (TSV or JSON lines) in any key order, one
    publish; a malformed line publishes nothing."""
    fmt = args.format
    if fmt is None:
        name = args.file.lower()
        fmt = "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else \
            "tsv" if name.endswith((".tsv", ".txt")) else None
        if fmt is None:
            raise _UsageError(f"cannot tell the format of {args.file!r} from its name; pass "
                              "--format tsv|jsonl")
    with _progress(args, unit="lines", desc="apply") as bar, kvs.update_store(args.uri) as update:
        counts = _apply_lines(update, args, fmt, bar.update)
    _report(args, "apply", update.record, **counts)
    return 0


def cmd_compact(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """``kvio compact URI``."""
    with kvs.open_store(args.uri) as reader:
        total = reader.manifest.count
    with _progress(args, total=total, unit="pairs", desc="compact") as bar:
        record = kvs.compact(args.uri, progress=bar.update)
    _report(args, "compact", record, partitions=record.get("partitions", 0))
    return 0


def add_update_commands(command: Callable[[str, Callable, str], argparse.ArgumentParser]) -> None:
    """Register set, del, apply and compact on the ``kvio`` parser.

    Args:
        command: makes a subcommand parser (name, function, help).
    """
    p = command("set", cmd_set, "set one key (publishes a delta version)")
    p.add_argument("uri")
    p.add_argument("keys", nargs=1, metavar="KEY")
    p.add_argument("value", metavar="VALUE")

    p = command("del", cmd_del, "delete keys (publishes a delta version with tombstones)")
    p.add_argument("uri")
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = command("apply", cmd_apply, "apply set/del lines from a TSV or JSON lines file, keys in "
                "any order, as one delta version")
    p.add_argument("uri")
    p.add_argument("file", help="input file ('-' for stdin); TSV: set<TAB>KEY<TAB>VALUE or "
                   "del<TAB>KEY; JSON lines: {\"op\": \"set\"|\"del\", \"key\": .., \"value\": ..}")
    p.add_argument("--format", choices=_APPLY_FORMATS, help="input format (default: from the "
                   "file suffix)")

    command("compact", cmd_compact, "rewrite a store's delta layers and tombstones into "
            "disjoint partitions (publishes a new version)").add_argument("uri")
