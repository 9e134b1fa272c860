"""The ``cmd_*`` subcommands (all but run-kv-test)."""
from __future__ import annotations

import itertools
import sys
import time

from ..errors import CorruptStoreError
from ..system import KeyValueSystem
from .diff import _BatchCursor, diff_cursors
from .encoding import _human_bytes, _short, display
from .files import _input_size, _open_output, _resolve_format, _UsageError
from .output import PROG, _print_json, _print_table, _progress
from .transfer import export_batches, read_input, sort_and_dedupe


_WRITE_CHUNK_ROWS = 65536  # rows per put_many call, so the progress bar moves


def cmd_info(args, kvs: KeyValueSystem) -> int:
    with kvs.open_store(args.uri) as reader:
        info = reader.info()
    if args.json:
        _print_json(info)
        return 0
    enc = args.encoding
    print(f"store:           {info['uri']}")
    print(f"version:         {info['version']} (commit {info['commit_seq']})")
    print(f"format version:  {info['format_version']}")
    print(f"routing:         {info['routing']}" + (" (disjoint key ranges)" if info["disjoint"] else
                                                   " (overlapping key ranges)"))
    print(f"pairs:           {info['count']}")
    print(f"bytes:           {info['bytes']} ({_human_bytes(info['bytes'])})")
    options = ", ".join(f"{k}={v}" for k, v in sorted(info["options"].items())) or "-"
    print(f"options:         {options}")
    print(f"partitions:      {len(info['partitions'])}")
    rows = []
    for p in info["partitions"]:
        empty = not p["count"]
        lo = "-" if empty else _short(display(bytes.fromhex(p["min_key"]), enc), 32)
        hi = "-" if empty else _short(display(bytes.fromhex(p["max_key"]), enc), 32)
        rows.append([str(p["priority"]), str(p["count"]), str(p["bytes"]), lo, hi, p["path"]])
    if rows:
        print()
        _print_table(rows, ["#", "pairs", "bytes", "min key", "max key", "path"])
    return 0


def cmd_get(args, kvs: KeyValueSystem) -> int:
    missing = 0
    with kvs.open_store(args.uri) as reader:
        for key, value in zip(args.keys, reader.get_many(args.keys)):
            shown_key = display(key, args.encoding, for_json=args.json)
            if value is None:
                missing += 1
                print(f"{PROG}: key not found: {display(key, args.encoding)}", file=sys.stderr)
            if args.json:
                shown = None if value is None else display(value, args.encoding, for_json=True)
                _print_json({"key": shown_key, "value": shown})
            elif value is not None:
                print(display(value, args.encoding))
    return 1 if missing else 0


def cmd_scan(args, kvs: KeyValueSystem) -> int:
    enc = args.encoding
    with kvs.open_store(args.uri) as reader:
        pairs = reader.items_range(args.start, args.stop, args.prefix)
        for key, value in itertools.islice(pairs, args.limit):
            if args.json:
                _print_json({"key": display(key, enc, True), "value": display(value, enc, True)})
            else:
                print(f"{display(key, enc)}\t{display(value, enc)}")
    return 0


def cmd_import(args, kvs: KeyValueSystem) -> int:
    fmt = _resolve_format(args, args.src)
    if fmt == "parquet" and args.encoding != "auto":
        raise _UsageError("--hex/--base64 apply to tsv and jsonl input only")
    with _progress(args, total=_input_size(args.src), unit="B", unit_scale=True, desc="read") as bar:
        table = read_input(args.src, fmt, args.encoding, args.key_col, args.value_col, bar)
    table, was_sorted, dropped = sort_and_dedupe(table, args.duplicates, args.src)
    with _progress(args, total=table.num_rows, unit="pairs", desc="write") as bar:
        with kvs.create_store(args.uri, mode=args.mode) as writer:
            for offset in range(0, table.num_rows, _WRITE_CHUNK_ROWS):
                chunk = table.slice(offset, _WRITE_CHUNK_ROWS)
                writer.put_many(chunk)  # the Arrow path: no per-pair Python
                bar.update(chunk.num_rows)
    record = writer.record or {}
    result = {"uri": args.uri, "count": table.num_rows, "version": record.get("version"),
              "input_sorted": was_sorted, "duplicates_dropped": dropped}
    if args.json:
        _print_json(result)
    else:
        note = "" if was_sorted else " (input sorted by key)"
        dup = f", {dropped} duplicate(s) dropped" if dropped else ""
        print(f"imported {table.num_rows} pairs into {args.uri}{note}{dup}; "
              f"version {result['version']}")
    return 0


def cmd_export(args, kvs: KeyValueSystem) -> int:
    fmt = _resolve_format(args, args.dest)
    with kvs.open_store(args.uri) as reader:
        bounded = args.start is not None or args.stop is not None or args.prefix is not None
        total = None if bounded else reader.manifest.count
        with _progress(args, total=total, unit="pairs", desc="export") as bar, \
                _open_output(args.dest) as handle:
            batches = reader.batches(args.start, args.stop, args.prefix)
            count = export_batches(batches, handle, fmt, args.encoding, args.uri, bar)
    if args.dest == "-":
        return 0  # stdout carries the data: no summary line mixed into it
    if args.json:
        _print_json({"uri": args.uri, "dest": args.dest, "format": fmt, "count": count})
    else:
        print(f"exported {count} pairs from {args.uri} to {args.dest} ({fmt})")
    return 0


def cmd_verify(args, kvs: KeyValueSystem) -> int:
    try:
        # Opening checks the manifest and (on local disk) every partition footer, so it is
        # part of the verification, not a precondition.
        with kvs.open_store(args.uri) as reader:
            parts = reader.manifest.partitions
            with _progress(args, total=reader.manifest.size, unit="B", unit_scale=True,
                           desc="verify") as bar:
                reader.verify(progress=lambda entry: bar.update(entry.size))
            result = {"ok": True, "uri": args.uri, "version": reader.version,
                      "partitions": len(parts), "pairs": len(reader),
                      "bytes": reader.manifest.size}
    except CorruptStoreError as exc:
        bad = exc.file or args.uri
        if args.json:
            _print_json({"ok": False, "uri": args.uri, "file": bad, "error": str(exc)})
        else:
            print(f"CORRUPT {bad}")
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(result)
    else:
        print(f"OK {args.uri}: {result['partitions']} partitions, {result['pairs']} pairs, "
              f"{result['bytes']} bytes verified (version {result['version']})")
    return 0


def cmd_diff(args, kvs: KeyValueSystem) -> int:
    with kvs.open_store(args.a) as ra, kvs.open_store(args.b) as rb:
        with _progress(args, total=ra.manifest.count, unit="pairs", desc="diff") as bar:
            equal, diffs, truncated = diff_cursors(_BatchCursor(ra.batches()),
                                                   _BatchCursor(rb.batches()),
                                                   args.max_diffs, bar.update)
    enc = args.encoding
    if args.json:
        _print_json({"equal": not diffs, "equal_pairs_seen": equal, "truncated": truncated,
                     "differences": [{"kind": kind.replace(" ", "_"), "key": display(k, enc, True)}
                                     for kind, k, _, _ in diffs]})
    else:
        for kind, key, va, vb in diffs:
            line = f"{kind}: {display(key, enc)}"
            if kind == "value differs":
                line += (f"  (A: {_short(display(va, enc))} [{len(va)} B], "
                         f"B: {_short(display(vb, enc))} [{len(vb)} B])")
            print(line)
        if not diffs:
            print(f"stores are equal ({equal} pairs)")
        elif truncated:
            print(f"stores differ; stopped after the first {len(diffs)} differences")
        else:
            print(f"stores differ: {len(diffs)} difference(s)")
    return 1 if diffs else 0


def cmd_rm(args, kvs: KeyValueSystem) -> int:
    kvs.delete_store(args.uri)
    if args.json:
        _print_json({"deleted": args.uri})
    else:
        print(f"deleted {args.uri}")
    return 0


def cmd_mv(args, kvs: KeyValueSystem) -> int:
    kvs.rename_store(args.src, args.dst)
    if args.json:
        _print_json({"moved": args.src, "to": args.dst})
    else:
        print(f"moved {args.src} -> {args.dst}")
    return 0


def _format_time(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(stamp))


def _version_status(doc: dict) -> str:
    if doc.get("version") is None:
        return "deleted" if doc["current"] else "-"
    if doc["current"]:
        return "current"
    return "available" if doc["available"] else "collected"


def cmd_versions(args, kvs: KeyValueSystem) -> int:
    history = kvs.versions(args.uri)
    if args.json:
        _print_json(history)
        return 0
    rows = [[str(d["seq"]), d.get("version") or "-", d.get("op", "-"), _format_time(d.get("time")),
             _version_status(d)] for d in history]
    _print_table(rows, ["seq", "version", "op", "time", "status"])
    return 0


def cmd_rollback(args, kvs: KeyValueSystem) -> int:
    record = kvs.rollback(args.uri, args.version)
    if args.json:
        _print_json(record)
    else:
        restored = record.get("source", record["version"])
        print(f"rolled back {args.uri} to version {restored} (published as {record['version']}, "
              f"commit {record['seq']})")
    return 0


def cmd_gc(args, kvs: KeyValueSystem) -> int:
    removed = kvs.gc(args.uri, older_than=args.older_than)
    if args.json:
        _print_json(removed)
        return 0
    labels = (("versions", "version"), ("staging", "staging"), ("files", "stray file"))
    for kind, label in labels:
        for name in removed.get(kind, []):
            print(f"removed {label} {name}")
    print(f"gc {args.uri}: removed {len(removed['versions'])} version(s), "
          f"{len(removed['staging'])} staging dir(s), {len(removed.get('files', []))} stray file(s)")
    return 0
