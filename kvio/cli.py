"""The ``kvio`` command: inspect, check, import, export and manage stores from a shell.

Every subcommand is a small ``cmd_*`` function taking the parsed arguments and a
:class:`KeyValueSystem`. :func:`main` owns the single error path: a :class:`KvioError` (or an
``OSError`` from input/output files) becomes ``kvio: error: <message>`` on stderr and exit 1;
argparse usage errors exit 2. Nothing expected ever shows a traceback.

Bytes on the command line and in output use one of three encodings:

* ``auto`` (default): printed as UTF-8 when that is clean and printable, else escaped
  (``\\xNN``, ``\\t``, ``\\n``, ``\\r``, ``\\\\``). Key arguments are taken as typed.
* ``hex`` / ``base64`` (``--hex``, ``--base64``): exact, for binary keys and for scripts.

Exports are lossless: in ``auto`` mode a text export refuses a key or value that cannot be
written as plain text (and names it) instead of writing an escape that import would not undo.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import functools
import itertools
import json
import os
import posixpath
import random
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from tqdm import tqdm

from .config import parse_duration
from .errors import CorruptStoreError, KvioError, StoreNotFoundError
from .system import KeyValueSystem

PROG = "kvio"
FORMATS = ("tsv", "jsonl", "parquet")
_FORMAT_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                    ".parquet": "parquet", ".pq": "parquet"}
_SCHEMA = pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
_READ_CHUNK_ROWS = 65536   # text input is parsed into Arrow batches of this many rows
_WRITE_CHUNK_ROWS = 65536  # rows per put_many call, so the progress bar moves


# ---- byte encodings -----------------------------------------------------------------------
_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape(data: bytes) -> str:
    """Printable text for any bytes: invalid UTF-8 and unprintable characters become \\xNN
    (per byte) and the backslash itself is doubled, so one output line is one field."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, smuggled through as a surrogate
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def display(data: bytes, encoding: str, for_json: bool = False) -> str:
    """How bytes are shown: forced hex/base64, else text if clean, else escaped. JSON can
    carry control characters itself, so there only invalid UTF-8 needs escaping."""
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return escape(data)
    return text if for_json or text.isprintable() else escape(data)


def decode_text(text: str | bytes, encoding: str) -> bytes:
    """Bytes from an encoded field or argument; ValueError when it is malformed."""
    if encoding == "hex":
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        return bytes.fromhex(text)
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64 ({exc})") from None
    # os.fsencode undoes the surrogateescape Python applied to argv, so non-UTF-8 arguments
    # reach the store as the exact bytes the shell passed.
    return os.fsencode(text) if isinstance(text, str) else text


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


# ---- output helpers ---------------------------------------------------------------------
def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _progress(args: argparse.Namespace, **kwargs) -> tqdm:
    """A progress bar on stderr, shown only to a person watching a terminal."""
    disable = args.no_progress or not _stderr_is_tty()
    return tqdm(file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True, **kwargs)


# ---- opening input and output files ------------------------------------------------------
@contextlib.contextmanager
def _open_input(src: str):
    if src == "-":
        yield sys.stdin.buffer  # not ours to close
        return
    with fsspec.open(src, "rb") as handle:
        yield handle


def _input_size(src: str) -> int | None:
    if src == "-":
        return None
    try:
        fs, path = url_to_fs(src)
        return int(fs.size(path))
    except (OSError, ValueError, TypeError):
        return None  # the size only feeds the progress bar


@contextlib.contextmanager
def _open_output(dest: str):
    """DEST is written through a temporary sibling renamed into place on success, so a failed
    export never leaves a truncated file that looks complete (nor destroys an older export)."""
    if dest == "-":
        sys.stdout.flush()  # text already printed must come before the binary stream
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    fs, path = url_to_fs(dest)
    tmp = posixpath.join(posixpath.dirname(path),
                         f".{posixpath.basename(path)}.kvio-tmp-{uuid.uuid4().hex[:8]}")
    try:
        with fs.open(tmp, "wb") as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def _resolve_format(args: argparse.Namespace, path: str) -> str:
    if args.format:
        return args.format
    for suffix, fmt in _FORMAT_SUFFIXES.items():
        if path.lower().endswith(suffix):
            return fmt
    raise _UsageError(f"cannot tell the format of {path!r} from its name; pass --format "
                      + "|".join(FORMATS))


class _UsageError(Exception):
    """A problem with the command line found after parsing: reported like argparse (exit 2)."""


# ---- import: reading input into Arrow -------------------------------------------------------
def _batch(keys: list[bytes], values: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(keys, pa.large_binary()),
                                       pa.array(values, pa.large_binary())], schema=_SCHEMA)


def _parse_tsv_line(line: bytes, encoding: str) -> tuple[bytes, bytes]:
    fields = line.split(b"\t")
    if len(fields) != 2:
        raise ValueError(f"expected key<TAB>value, found {len(fields)} tab-separated field(s)")
    return decode_text(fields[0], encoding), decode_text(fields[1], encoding)


def _parse_jsonl_line(line: bytes, encoding: str, key_col: str, value_col: str) -> tuple[bytes, bytes]:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    out = []
    for col in (key_col, value_col):
        field = doc.get(col)
        if not isinstance(field, str):
            raise ValueError(f"field {col!r} must be a string, found {type(field).__name__}")
        try:
            out.append(field.encode("utf-8") if encoding == "auto" else decode_text(field, encoding))
        except UnicodeEncodeError:
            raise ValueError(f"field {col!r} holds a lone surrogate (not encodable as UTF-8)") from None
    return out[0], out[1]


def _text_batches(handle, parse_line: Callable[[bytes], tuple[bytes, bytes]], src: str,
                  bar: tqdm) -> Iterator[pa.RecordBatch]:
    """Parse a line-oriented file in chunks; errors name the file and the line number."""
    keys: list[bytes] = []
    values: list[bytes] = []
    pending = 0
    # Iterating a binary file splits on b"\n" only (never on \x85 or U+2028 like splitlines).
    for lineno, raw in enumerate(handle, 1):
        pending += len(raw)
        line = raw.rstrip(b"\n")
        line = line[:-1] if line.endswith(b"\r") else line  # files written on Windows
        if not line:
            continue
        try:
            key, value = parse_line(line)
        except ValueError as exc:
            raise KvioError(f"line {lineno}: {exc}", file=src) from None
        keys.append(key)
        values.append(value)
        if len(keys) >= _READ_CHUNK_ROWS:
            yield _batch(keys, values)
            keys, values = [], []
            bar.update(pending)
            pending = 0
    bar.update(pending)
    if keys:
        yield _batch(keys, values)


def _read_parquet(src: str, key_col: str, value_col: str) -> pa.Table:
    try:
        with _open_input(src) as handle:
            table = pq.read_table(handle, columns=[key_col, value_col])
    except pa.ArrowException as exc:
        raise KvioError(f"cannot read Parquet input: {exc}", file=src) from None
    columns = []
    for name in (key_col, value_col):
        col = table.column(name)
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)
                or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise KvioError(f"column {name!r} has type {col.type}; kvio stores bytes, so it must "
                            "be binary or string", file=src)
        if col.null_count:
            raise KvioError(f"column {name!r} has {col.null_count} null(s); keys and values "
                            "cannot be null", file=src)
        columns.append(pc.cast(col, pa.large_binary()))
    return pa.Table.from_arrays(columns, schema=_SCHEMA)


def read_input(src: str, fmt: str, encoding: str, key_col: str, value_col: str,
               bar: tqdm) -> pa.Table:
    """The whole input as one (key, value) large_binary table, in input order."""
    if fmt == "parquet":
        table = _read_parquet(src, key_col, value_col)
        bar.update(bar.total or 0)
        return table
    if fmt == "tsv":
        parse = functools.partial(_parse_tsv_line, encoding=encoding)
    else:
        parse = functools.partial(_parse_jsonl_line, encoding=encoding, key_col=key_col,
                                  value_col=value_col)
    with _open_input(src) as handle:
        batches = list(_text_batches(handle, parse, src, bar))
    return pa.Table.from_batches(batches, schema=_SCHEMA)


# ---- import: ordering and duplicates ------------------------------------------------------
def _all_true(mask: pa.Array) -> bool:
    return len(mask) == 0 or pc.all(mask).as_py()


def sort_and_dedupe(table: pa.Table, duplicates: str, src: str) -> tuple[pa.Table, bool, int]:
    """Sort by key in unsigned byte order (what Arrow's binary sort and comparisons use, like
    kvio) unless already sorted, then resolve duplicate keys. Returns (table, was_sorted,
    dropped). The sort is stable, so "first"/"last" mean first/last in the input."""
    table = table.combine_chunks()
    n = table.num_rows
    keys = table.column("key")
    was_sorted = _all_true(pc.less_equal(keys.slice(0, n - 1), keys.slice(1))) if n > 1 else True
    if not was_sorted:
        table = table.take(pc.sort_indices(table, sort_keys=[("key", "ascending")]))
        keys = table.column("key")
    if n < 2:
        return table, was_sorted, 0
    same_as_next = pc.equal(keys.slice(0, n - 1), keys.slice(1)).combine_chunks()
    if not pc.any(same_as_next).as_py():
        return table, was_sorted, 0
    if duplicates == "error":
        row = pc.index(same_as_next, True).as_py()
        raise KvioError("duplicate key in input (use --duplicates first or last to keep one)",
                        file=src, key=keys[row].as_py())
    differs = pc.invert(same_as_next)
    edge = pa.array([True])
    # first: keep a row unless it repeats the previous key; last: unless the next one repeats it.
    keep = pa.concat_arrays([edge, differs] if duplicates == "first" else [differs, edge])
    kept = table.filter(keep)
    return kept, was_sorted, n - kept.num_rows


# ---- export: writing Arrow batches ---------------------------------------------------------
def _plain_tsv_field(data: bytes, what: str, key: bytes, store: str) -> bytes:
    """Bytes written unchanged into a plain-text TSV, or an error naming the key: escaping
    them would produce a file that import reads back as different bytes."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise KvioError(f"{what} is not valid UTF-8 text; export with --hex or --base64",
                        store=store, key=key) from None
    if b"\t" in data or b"\n" in data or b"\r" in data:
        raise KvioError(f"{what} contains a tab, newline or carriage return; export with --hex "
                        "or --base64", store=store, key=key)
    return data


def _tsv_lines(pairs: Iterable[tuple[bytes, bytes]], encoding: str, store: str) -> Iterator[bytes]:
    for key, value in pairs:
        if encoding == "auto":
            k = _plain_tsv_field(key, "key", key, store)
            v = _plain_tsv_field(value, "value", key, store)
        else:
            k, v = display(key, encoding).encode("ascii"), display(value, encoding).encode("ascii")
        yield k + b"\t" + v + b"\n"


def _jsonl_lines(pairs: Iterable[tuple[bytes, bytes]], encoding: str, store: str) -> Iterator[bytes]:
    for key, value in pairs:
        if encoding == "auto":
            try:
                doc = {"key": key.decode("utf-8"), "value": value.decode("utf-8")}
            except UnicodeDecodeError:
                raise KvioError("key or value is not valid UTF-8 text; export with --hex or "
                                "--base64", store=store, key=key) from None
        else:
            doc = {"key": display(key, encoding), "value": display(value, encoding)}
        yield json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n"


def export_batches(batches: Iterable[pa.RecordBatch], handle, fmt: str, encoding: str,
                   store: str, bar: tqdm) -> int:
    """Write batches to an open binary file; returns the number of pairs."""
    count = 0
    if fmt == "parquet":
        # Arrow batches go straight to Parquet: binary columns, no per-row Python. The file
        # takes the schema of the first batch (the reader's, with its nullability flags).
        batches = iter(batches)
        first = next(batches, None)
        schema = _SCHEMA if first is None else first.schema
        with pq.ParquetWriter(handle, schema) as writer:
            for batch in itertools.chain([first] if first is not None else [], batches):
                writer.write_batch(batch)
                count += batch.num_rows
                bar.update(batch.num_rows)
        return count
    lines = _tsv_lines if fmt == "tsv" else _jsonl_lines
    for batch in batches:
        pairs = zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())
        handle.writelines(lines(pairs, encoding, store))
        count += batch.num_rows
        bar.update(batch.num_rows)
    return count


# ---- diff: two stores in key order ----------------------------------------------------------
class _BatchCursor:
    """Walks a store's Arrow batches: in bulk while two stores agree, row by row where not."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self._batches = iter(batches)
        self._keys = self._values = None
        self._pos = self._len = 0
        self._next_batch()

    def _next_batch(self) -> None:
        self._keys = self._values = None
        for batch in self._batches:
            if batch.num_rows:
                self._keys, self._values = batch.column(0), batch.column(1)
                self._pos, self._len = 0, batch.num_rows
                return

    @property
    def done(self) -> bool:
        return self._keys is None

    @property
    def available(self) -> int:
        return self._len - self._pos

    def window(self, n: int) -> tuple[pa.Array, pa.Array]:
        return self._keys.slice(self._pos, n), self._values.slice(self._pos, n)

    def head(self) -> tuple[bytes, bytes]:
        return self._keys[self._pos].as_py(), self._values[self._pos].as_py()

    def advance(self, n: int) -> None:
        self._pos += n
        if self._pos >= self._len:
            self._next_batch()


def _equal_run(a: _BatchCursor, b: _BatchCursor) -> tuple[int, int]:
    """(rows compared, leading rows where both keys and values are equal) of the next window."""
    n = min(a.available, b.available)
    ka, va = a.window(n)
    kb, vb = b.window(n)
    same = pc.and_(pc.equal(ka, kb), pc.equal(va, vb))
    return n, (n if pc.all(same).as_py() else pc.index(same, False).as_py())


def diff_cursors(a: _BatchCursor, b: _BatchCursor, max_diffs: int,
                 on_rows: Callable[[int], Any] = lambda n: None) -> tuple[int, list[tuple], bool]:
    """(equal pairs seen, first differences as (kind, key, value_a, value_b), truncated)."""
    diffs: list[tuple] = []
    equal = 0
    while not a.done and not b.done and len(diffs) < max_diffs:
        n, run = _equal_run(a, b)
        a.advance(run)
        b.advance(run)
        equal += run
        on_rows(run)
        if run == n:
            continue
        (ka, va), (kb, vb) = a.head(), b.head()
        if ka == kb:
            diffs.append(("value differs", ka, va, vb))
            a.advance(1)
            b.advance(1)
        elif ka < kb:  # bytes compare unsigned, like the store order
            diffs.append(("only in A", ka, va, None))
            a.advance(1)
        else:
            diffs.append(("only in B", kb, None, vb))
            b.advance(1)
        on_rows(1)
    for cursor, kind in ((a, "only in A"), (b, "only in B")):
        while not cursor.done and len(diffs) < max_diffs:
            key, value = cursor.head()
            diffs.append((kind, key, value, None) if kind == "only in A" else (kind, key, None, value))
            cursor.advance(1)
    return equal, diffs, not (a.done and b.done)


# ---- subcommands ----------------------------------------------------------------------------
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
        total = None if bounded else reader.manifest.get("count")
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
            parts = reader.manifest["partitions"]
            with _progress(args, total=sum(p["size"] for p in parts), unit="B", unit_scale=True,
                           desc="verify") as bar:
                reader.verify(progress=lambda entry: bar.update(entry["size"]))
            result = {"ok": True, "uri": args.uri, "version": reader.version,
                      "partitions": len(parts), "pairs": len(reader),
                      "bytes": sum(p["size"] for p in parts)}
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
        with _progress(args, total=ra.manifest.get("count"), unit="pairs", desc="diff") as bar:
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


# ---- run-kv-test: the smoke test inherited from Alluxio's runKVTest --------------------------
KV_TEST_PAIRS = 10
KV_TEST_VALUE_BYTES = 512 * 1024
KV_TEST_CONF = {"kvio.partition.size.max": "1MB"}  # one 512 KB value per partition


class _CheckFailed(Exception):
    pass


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise _CheckFailed(message)


def kv_test_key(i: int) -> bytes:
    return i.to_bytes(4, "big")


def kv_test_value(i: int) -> bytes:
    # Seeded random bytes: deterministic, different per key, and incompressible, so the
    # partition count stays exact even with --conf kvio.block.compression=zstd.
    return random.Random(i).randbytes(KV_TEST_VALUE_BYTES)


def _remove_leftover_store(kvs: KeyValueSystem, uri: str) -> None:
    """Delete what a crashed earlier run left, but only if it is a kvio store: delete_store
    refuses anything without a kvio marker or commit log, and create_store then refuses to
    write into a non-empty foreign directory, so the test fails instead of destroying data."""
    try:
        kvs.delete_store(uri)
    except StoreNotFoundError:
        pass


def _write_kv_test_store(kvs: KeyValueSystem, uri: str, bar: tqdm) -> None:
    with kvs.create_store(uri) as writer:
        for i in range(KV_TEST_PAIRS):
            writer.put(kv_test_key(i), kv_test_value(i))
            bar.update(1)


def _check_kv_test_store(kvs: KeyValueSystem, uri: str, bar: tqdm) -> None:
    with kvs.open_store(uri) as reader:
        parts = len(reader.info()["partitions"])
        _check(parts == KV_TEST_PAIRS, f"expected {KV_TEST_PAIRS} partitions, found {parts}")
        _check(len(reader) == KV_TEST_PAIRS, f"expected {KV_TEST_PAIRS} pairs, len() is {len(reader)}")
        for i in range(KV_TEST_PAIRS):
            _check(reader.get(kv_test_key(i)) == kv_test_value(i), f"wrong value for key {i}")
            bar.update(1)
        _check(reader.get(kv_test_key(KV_TEST_PAIRS)) is None, "a key never written was found")
        seen = 0
        for expected, (key, value) in itertools.zip_longest(range(KV_TEST_PAIRS), reader.items()):
            _check(expected is not None and key == kv_test_key(expected),
                   f"iteration out of order or too long at position {seen}")
            _check(value == kv_test_value(expected), f"iteration returned a wrong value for key {expected}")
            seen += 1
        _check(seen == KV_TEST_PAIRS, f"iteration returned {seen} pairs")


def cmd_run_kv_test(args, conf: dict[str, str]) -> int:
    uri = args.uri or os.path.join(tempfile.gettempdir(), f"kvio-kv-test-{uuid.uuid4().hex[:12]}")
    writing = False
    try:
        kvs = KeyValueSystem(conf={**conf, **KV_TEST_CONF})
        _remove_leftover_store(kvs, uri)
        with _progress(args, total=2 * KV_TEST_PAIRS, unit="pairs", desc="run-kv-test") as bar:
            writing = True
            _write_kv_test_store(kvs, uri, bar)
            _check_kv_test_store(kvs, uri, bar)
        kvs.delete_store(uri)
        _check(not kvs.exists(uri), "store still exists after delete_store")
    except Exception as exc:  # a smoke test reports every failure, expected or not
        print("Failed the test!")
        print(f"{PROG}: run-kv-test: {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if writing:  # safe even if create_store refused the path: only kvio stores are deleted
            _cleanup_after_failure(kvs, uri)
        return 1
    print("Passed the test!")
    return 0


def _cleanup_after_failure(kvs: KeyValueSystem, uri: str) -> None:
    try:
        kvs.delete_store(uri)
    except StoreNotFoundError:
        pass
    except (KvioError, OSError) as exc:
        print(f"{PROG}: run-kv-test: could not remove {uri}: {exc}", file=sys.stderr)


# ---- argument parsing -----------------------------------------------------------------------
def _conf_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return name.strip(), value.strip()


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except KvioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _common_options(in_subcommand: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand. argparse copies every attribute
    of the subcommand's namespace over the main one, so there the defaults are SUPPRESS (an
    option not repeated after the subcommand keeps its earlier value) and --conf collects
    into its own list, merged in _parse."""
    def default(value):
        return argparse.SUPPRESS if in_subcommand else value

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--conf", dest="conf_after" if in_subcommand else "conf", action="append",
                       type=_conf_item, metavar="KEY=VALUE", default=default([]),
                       help="override a setting (repeatable), e.g. kvio.block.compression=zstd")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="machine-readable output")
    group.add_argument("--no-progress", action="store_true", default=default(False),
                       help="never show progress bars")
    encodings = group.add_mutually_exclusive_group()
    encodings.add_argument("--hex", dest="encoding", action="store_const", const="hex",
                           default=default("auto"),
                           help="keys/values as hex (output, text files and KEY arguments)")
    encodings.add_argument("--base64", dest="encoding", action="store_const", const="base64",
                           default=default("auto"),
                           help="keys/values as base64 (output, text files and KEY arguments)")
    return common


def _add_bounds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", metavar="KEY", help="first key (inclusive)")
    parser.add_argument("--stop", metavar="KEY", help="end key (exclusive)")
    parser.add_argument("--prefix", metavar="P", help="only keys starting with P")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common_options(in_subcommand=False)],
        description="Inspect, check, import, export and manage kvio key-value stores.",
        epilog="Store URIs are local paths or fsspec URLs (hdfs://, memory://, ...).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common_options(in_subcommand=True)]

    def command(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("run-kv-test", cmd_run_kv_test,
                "smoke test: write 10 x 512 KB pairs in 10 partitions, read them back, delete")
    p.add_argument("uri", nargs="?", help="store to use (default: a fresh path in the temp dir)")

    command("info", cmd_info, "describe a store: version, partitions, key ranges, sizes") \
        .add_argument("uri")

    p = command("get", cmd_get, "print the values of keys (exit 1 if any is missing)")
    p.add_argument("uri")
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = command("scan", cmd_scan, "print key<TAB>value lines in key order")
    p.add_argument("uri")
    _add_bounds(p)
    p.add_argument("--limit", type=_positive_int, metavar="N", help="print at most N pairs")

    p = command("import", cmd_import, "create a store from a TSV, JSON lines or Parquet file")
    p.add_argument("src", help="input file ('-' for stdin with tsv/jsonl)")
    p.add_argument("uri")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the file suffix)")
    p.add_argument("--key-col", default="key", help="key column/field of jsonl and parquet (default: key)")
    p.add_argument("--value-col", default="value", help="value column/field (default: value)")
    p.add_argument("--mode", choices=("error", "overwrite"), default="error",
                   help="if the store exists: fail (default) or publish a new version")
    p.add_argument("--duplicates", choices=("error", "first", "last"), default="error",
                   help="repeated keys: fail (default), keep the first or the last occurrence")

    p = command("export", cmd_export, "write a store (or a key range) to TSV, JSON lines or Parquet")
    p.add_argument("uri")
    p.add_argument("dest", help="output file ('-' for stdout)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from the file suffix)")
    _add_bounds(p)

    command("verify", cmd_verify, "check every checksum and the key order of a store") \
        .add_argument("uri")

    p = command("diff", cmd_diff, "compare two stores' keys and values (exit 1 if they differ)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-diffs", type=_positive_int, default=10, metavar="N",
                   help="stop after N differences (default 10)")

    command("rm", cmd_rm, "delete a store").add_argument("uri")

    p = command("mv", cmd_mv, "rename a store (same filesystem)")
    p.add_argument("src")
    p.add_argument("dst")

    command("versions", cmd_versions, "show a store's commit history").add_argument("uri")

    p = command("rollback", cmd_rollback, "make an earlier retained version current again")
    p.add_argument("uri")
    p.add_argument("version", nargs="?", help="version to restore (default: the previous one)")

    p = command("gc", cmd_gc, "remove superseded versions and stale staging of crashed jobs")
    p.add_argument("uri")
    p.add_argument("--older-than", type=_duration, metavar="AGE",
                   help="staging age to remove, e.g. 30m, 24h (default: kvio.staging.max.age)")
    return parser


def _decode_key_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn KEY arguments into bytes with the chosen encoding; a malformed one is a usage
    error (exit 2), reported before any store is touched."""
    for name in ("keys", "start", "stop", "prefix"):
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            if isinstance(raw, list):
                setattr(args, name, [decode_text(text, args.encoding) for text in raw])
            else:
                setattr(args, name, decode_text(raw, args.encoding))
        except ValueError as exc:
            label = "KEY" if name == "keys" else f"--{name}"
            parser.error(f"argument {label}: not valid {args.encoding}: {exc}")


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.conf = list(args.conf) + list(getattr(args, "conf_after", []))
    _decode_key_arguments(parser, args)
    return args


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _silence_broken_stdout() -> None:
    # The reader (e.g. `kvio scan ... | head`) went away: send further output to /dev/null so
    # the interpreter's final flush does not raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return _exit_code(exc)
    conf = dict(args.conf)
    try:
        if args.func is cmd_run_kv_test:
            return cmd_run_kv_test(args, conf)  # reports its own failures, by contract
        return args.func(args, KeyValueSystem(conf=conf))
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (KvioError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            _silence_broken_stdout()
            return 1
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
