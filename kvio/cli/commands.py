"""The ``cmd_*`` subcommands (all but run-kv-test)."""
from __future__ import annotations

import itertools
import posixpath
import sys
import time

from ..diff import VALUE_DIFFERS, diff_stores
from ..errors import CorruptStoreError
from ..system import KeyValueSystem
from .encoding import _human_bytes, display, display_pieces, json_field, preview
from .files import _input_size, _open_output, _resolve_format, _UsageError, check_output_file
from .output import PROG, _print_json, _print_table, _progress
from .transfer import export_batches, import_batches, read_input

_SMALL = 1 << 16  # bytes of a pair printed in one piece


def _write_shown(encoding: str, *fields: bytes) -> None:
    """Print fields tab-separated on one line, a large one a piece at a time: a large value
    is never held escaped (several times its size) in memory."""
    out = sys.stdout
    if sum(map(len, fields)) <= _SMALL:
        out.write("\t".join(display(f, encoding) for f in fields) + "\n")
        return
    for i, data in enumerate(fields):
        if i:
            out.write("\t")
        for piece in display_pieces(data, encoding):
            out.write(piece)
    out.write("\n")


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
        lo = "-" if empty else preview(bytes.fromhex(p["min_key"]), enc, 32)
        hi = "-" if empty else preview(bytes.fromhex(p["max_key"]), enc, 32)
        count = f"{p['count']} del" if p.get("tombstones") else str(p["count"])  # deletions
        rows.append([str(p["priority"]), count, str(p["bytes"]), lo, hi, p["path"]])
    if rows:
        print()
        _print_table(rows, ["#", "pairs", "bytes", "min key", "max key", "path"])
    return 0


def cmd_get(args, kvs: KeyValueSystem) -> int:
    missing = 0
    with kvs.open_store(args.uri) as reader:
        for key, value in zip(args.keys, reader.get_many(args.keys), strict=True):
            if value is None:
                missing += 1
                print(f"{PROG}: key not found: {display(key, args.encoding)}", file=sys.stderr)
            if args.json:
                shown = {"value": None} if value is None else \
                    json_field("value", value, args.encoding)
                _print_json({**json_field("key", key, args.encoding), **shown})
            elif value is not None:
                _write_shown(args.encoding, value)
    return 1 if missing else 0


def cmd_scan(args, kvs: KeyValueSystem) -> int:
    enc = args.encoding
    with kvs.open_store(args.uri) as reader:
        pairs = reader.items_range(args.start, args.stop, args.prefix)
        for key, value in itertools.islice(pairs, args.limit):
            if args.json:
                _print_json({**json_field("key", key, enc), **json_field("value", value, enc)})
            else:
                _write_shown(enc, key, value)
    return 0


def cmd_import(args, kvs: KeyValueSystem) -> int:
    fmt = _resolve_format(args, args.src)
    if fmt == "parquet" and args.encoding != "auto":
        raise _UsageError("--hex/--base64 apply to tsv and jsonl input only")
    unit = ("pairs", False) if fmt == "parquet" else ("B", True)
    with _progress(args, total=None if fmt == "parquet" else _input_size(args.src), unit=unit[0],
                   unit_scale=unit[1], desc="read") as read_bar, \
            _progress(args, unit="pairs", desc="write", position=1) as write_bar:
        batches = read_input(args.src, fmt, args.encoding, args.key_col, args.value_col,
                             read_bar, spool_dir=kvs.conf.sort_spill_dir)
        record, written = import_batches(kvs, args.uri, args.mode, batches, args.duplicates,
                                         write_bar.update)
    result = {"uri": args.uri, "count": written.rows_written, "version": record and record.version,
              "input_sorted": written.input_sorted, "duplicates_dropped": written.dropped}
    if args.json:
        _print_json(result)
    else:
        note = "" if written.input_sorted else " (the input was not in key order: kvio sorted it)"
        dup = f", {written.dropped} duplicate(s) dropped" if written.dropped else ""
        print(f"imported {written.rows_written} pairs into {args.uri}{note}{dup}; "
              f"version {result['version']}")
    return 0


def cmd_export(args, kvs: KeyValueSystem) -> int:
    name = posixpath.basename(args.uri.rstrip("/")) or "export"
    check_output_file(args.dest, f"{name}.{args.format or 'tsv'}")
    fmt = _resolve_format(args, args.dest)
    if fmt == "parquet" and args.encoding != "auto":
        raise _UsageError("--hex/--base64 apply to tsv and jsonl output only (Parquet holds "
                          "binary columns: the exact bytes)")
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
            result = diff_stores(ra, rb, keep=args.max_diffs, stop_after=args.max_diffs,
                                 on_rows=bar.update)
    enc = args.encoding
    diffs = result.differences
    if args.json:
        _print_json({"equal": result.identical, "equal_pairs_seen": result.equal,
                     "truncated": not result.complete,
                     "differences": [{"kind": d.kind.replace(" ", "_"),
                                      **json_field("key", d.key, enc)} for d in diffs]})
    else:
        for d in diffs:
            line = f"{d.kind}: {display(d.key, enc)}"
            if d.kind == VALUE_DIFFERS:
                assert d.value_a is not None and d.value_b is not None
                line += (f"  (A: {preview(d.value_a, enc)} [{len(d.value_a)} B], "
                         f"B: {preview(d.value_b, enc)} [{len(d.value_b)} B])")
            print(line)
        if not diffs:
            print(f"stores are equal ({result.equal} pairs)")
        elif not result.complete:
            print(f"stores differ; stopped after the first {len(diffs)} differences")
        else:
            print(f"stores differ: {len(diffs)} difference(s)")
    return 0 if result.identical else 1


def cmd_rm(args, kvs: KeyValueSystem) -> int:
    found = kvs.delete_store(args.uri)
    if args.json:
        damaged = {"damaged": found["damaged"]} if found["damaged"] else {}
        _print_json({"deleted": args.uri, **damaged})
    else:
        for damaged in found["damaged"]:
            print(f"{PROG}: note: commit {damaged['seq']} was damaged: {damaged['error']}",
                  file=sys.stderr)
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
    if doc.get("corrupt"):
        return "DAMAGED"
    if doc.get("void"):
        return "void"
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
    rows = [[str(d["seq"]), d.get("version") or "-",
             (d.get("op") or "-") + (f" ({d['void']})" if d.get("void") else ""),
             _format_time(d.get("time")), _version_status(d)] for d in history]
    _print_table(rows, ["seq", "version", "op", "time", "status"])
    _print_pins(history)
    for d in history:
        if d.get("corrupt"):
            print(f"{PROG}: commit {d['seq']} is damaged: {d['corrupt']} ({d['file']})",
                  file=sys.stderr)
    if history and history[-1].get("corrupt"):
        print(f"{PROG}: the newest commit is damaged, so no version is current: `kvio repair "
              f"{args.uri}` makes an intact version current again, `kvio rm {args.uri}` deletes "
              "the store", file=sys.stderr)
    return 0


def _print_pins(history: list[dict]) -> None:
    """The unexpired pins, one line each, after the table (nothing when there are none)."""
    shown: dict[str, list[dict]] = {}
    for d in history:
        if d.get("pins") and d["version"] not in shown:
            shown[d["version"]] = d["pins"]
    if not shown:
        return
    count = sum(map(len, shown.values()))
    print(f"\n{count} pin(s) (gc keeps a pinned version until its pins expire or are released):")
    rows = [[version, p["holder"], p.get("purpose", "?"), _format_time(p["expires"])]
            for version, found in shown.items() for p in found]
    _print_table(rows, ["pinned version", "holder", "purpose", "expires"])


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
    labels = (("versions", "version"), ("staging", "staging"), ("files", "stray file"),
              ("pins", "expired pin"))
    for kind, label in labels:
        for name in removed.get(kind, []):
            print(f"removed {label} {name}")
    for name in removed.get("txns", []):
        print(f"aborted transaction {name}: a crashed writer left it undecided")
    for name in removed.get("pinned", []):
        print(f"kept version {name}: pinned (`kvio versions` lists the pins)")
    for name in removed.get("grace", []):
        print(f"kept version {name}: superseded less than kvio.gc.grace ago")
    print(f"gc {args.uri}: removed {len(removed['versions'])} version(s), "
          f"{len(removed['staging'])} staging dir(s), "
          f"{len(removed.get('files', []))} stray file(s)")
    return 0
