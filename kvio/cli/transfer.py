"""Import (reading input into Arrow, ordering and duplicates) and export (writing Arrow batches)."""
from __future__ import annotations

import functools
import itertools
import json
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from ..errors import KvioError
from .encoding import decode_text, display
from .files import _open_input


_SCHEMA = pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
_READ_CHUNK_ROWS = 65536   # text input is parsed into Arrow batches of this many rows


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
