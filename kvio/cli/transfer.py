"""Import (reading input as a stream of Arrow batches) and export (writing Arrow batches)."""
from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ..committer import Job
from ..errors import KvioError
from ..format.commit_record import CommitRecord
from ..sorting import normalize_batch
from ..system import KeyValueSystem
from ..task_writer import TaskResult, write_any_order
from .encoding import decode_text, display
from .files import _open_input, _open_seekable_input

_SCHEMA = pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
_READ_CHUNK_ROWS = 65536      # input is read in Arrow batches of at most this many rows
_READ_CHUNK_BYTES = 4 << 20   # and of about this many bytes (large values: fewer rows)


# ---- import: reading input into Arrow -------------------------------------------------------
def _batch(keys: list[bytes], values: list[bytes]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(keys, pa.large_binary()),
                                       pa.array(values, pa.large_binary())], schema=_SCHEMA)


def _parse_tsv_line(line: bytes, encoding: str) -> tuple[bytes, bytes]:
    fields = line.split(b"\t")
    if len(fields) != 2:
        raise ValueError(f"expected key<TAB>value, found {len(fields)} tab-separated field(s)")
    return decode_text(fields[0], encoding), decode_text(fields[1], encoding)


def json_object(line: bytes) -> dict[str, Any]:
    """One JSON-lines record, which must be an object.

    Raises:
        ValueError: not JSON, or not an object (the caller names the file and line).
    """
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    return doc


def _parse_jsonl_line(line: bytes, encoding: str, key_col: str,
                      value_col: str) -> tuple[bytes, bytes]:
    doc = json_object(line)
    out = []
    for col in (key_col, value_col):
        field = doc.get(col)
        if not isinstance(field, str):
            raise ValueError(f"field {col!r} must be a string, found {type(field).__name__}")
        try:
            out.append(field.encode("utf-8") if encoding == "auto"
                       else decode_text(field, encoding))
        except UnicodeEncodeError:
            raise ValueError(f"field {col!r} holds a lone surrogate "
                             "(not encodable as UTF-8)") from None
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
        if len(keys) >= _READ_CHUNK_ROWS or pending >= _READ_CHUNK_BYTES:
            yield _batch(keys, values)
            keys, values = [], []
            bar.update(pending)
            pending = 0
    bar.update(pending)
    if keys:
        yield _batch(keys, values)


def _parquet_batches(handle, src: str, key_col: str, value_col: str,
                     bar: tqdm) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError) as exc:
        raise KvioError(f"cannot read Parquet input: {exc}", file=src) from None
    schema = parquet.schema_arrow
    for name in (key_col, value_col):
        if name not in schema.names:
            raise KvioError(f"no column {name!r} in the Parquet input (columns: {schema.names}); "
                            "name the columns with --key-col and --value-col", file=src)
        kind = schema.field(name).type
        if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
                or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise KvioError(f"column {name!r} has type {kind}; kvio stores bytes, so it must "
                            "be binary or string", file=src)
    meta = parquet.metadata
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    per_row = raw / meta.num_rows if meta.num_rows else 1
    batch_rows = max(1, min(_READ_CHUNK_ROWS, int(_READ_CHUNK_BYTES / max(per_row, 1))))
    rows = parquet.iter_batches(batch_size=batch_rows, columns=[key_col, value_col])
    while True:
        try:
            batch = next(rows)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise KvioError(f"cannot read Parquet input: {exc}", file=src) from None
        for name in (key_col, value_col):
            nulls = batch.column(name).null_count
            if nulls:
                raise KvioError(f"column {name!r} has {nulls} null(s); keys and values cannot "
                                "be null", file=src)
        bar.update(batch.num_rows)
        yield normalize_batch(batch, key_col, value_col, src)


def read_input(src: str, fmt: str, encoding: str, key_col: str, value_col: str,
               bar: tqdm, spool_dir: str | None = None) -> Iterator[pa.RecordBatch]:
    """The input as (key, value) large_binary batches, in input order, read as they are
    consumed (never the whole input at once).

    Args:
        src: a file name or URL, or ``-`` for stdin.
        fmt: ``tsv``, ``jsonl`` or ``parquet``.
        encoding: how text fields are encoded: ``auto`` (as is), ``hex`` or ``base64``.
        key_col: key field of JSON lines and key column of Parquet.
        value_col: value field or column.
        bar: progress (bytes for text input, rows for Parquet).
        spool_dir: where Parquet from stdin is spooled (it must be read with seeks).

    Yields:
        Batches of :data:`kvio.sorting.SCHEMA`.

    Raises:
        KvioError: unreadable input, a malformed line (named by number) or a bad column.
    """
    if fmt == "parquet":
        with _open_seekable_input(src, spool_dir) as handle:
            yield from _parquet_batches(handle, src, key_col, value_col, bar)
        return
    if fmt == "tsv":
        parse = functools.partial(_parse_tsv_line, encoding=encoding)
    else:
        parse = functools.partial(_parse_jsonl_line, encoding=encoding, key_col=key_col,
                                  value_col=value_col)
    with _open_input(src) as handle:
        yield from _text_batches(handle, parse, src, bar)


# ---- import: writing the store ----------------------------------------------------------------
_DUPLICATES_ADVICE = "use --duplicates first or --duplicates last to keep one"


def import_batches(kvs: KeyValueSystem, uri: str, mode: str, batches: Iterable[pa.RecordBatch],
                   duplicates: str, on_written: Callable[[int], Any] | None = None
                   ) -> tuple[CommitRecord | None, TaskResult]:
    """Write batches in any order as a new store version through the bounded external sort
    (``kvio.sort.memory``, spilling to ``kvio.sort.spill.dir``), and publish it.

    Args:
        kvs: settings and storage options.
        uri: the store.
        mode: ``error`` or ``overwrite``.
        batches: the input; read once, as it is consumed.
        duplicates: ``error``, ``first`` or ``last``.
        on_written: progress of the final write (pairs).

    Returns:
        The commit record and what was written.

    Raises:
        KvioError: the store exists (mode error), bad input, a duplicate key; nothing is
            published then.
    """
    conf = kvs.conf_overrides
    if kvs.conf.write_direct == "auto":  # a bulk load: its files go past the page cache
        conf = {**conf, "kvio.write.direct": "true"}
    job = Job.setup(uri, mode=mode, conf=conf, storage_options=kvs.storage_options)
    try:
        result = write_any_order(job.ctx, 0, batches, duplicates=duplicates,
                                 advice=_DUPLICATES_ADVICE, on_written=on_written)
        record = job.commit([result.message], num_tasks=1)
    except BaseException:
        if not job.committed:
            job.abort()  # also removes the store directory when this import created it
        raise
    return record, result


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


def _jsonl_lines(pairs: Iterable[tuple[bytes, bytes]], encoding: str,
                 store: str) -> Iterator[bytes]:
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
        pairs = zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)
        handle.writelines(lines(pairs, encoding, store))
        count += batch.num_rows
        bar.update(batch.num_rows)
    return count
