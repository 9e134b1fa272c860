"""Bytes in and out of HTTP: percent-encoded keys in paths and query strings, keys and values
in JSON (UTF-8 text or base64) and in Arrow IPC streams.

Keys are arbitrary bytes, so nothing here goes through the server's already-decoded ``str``
path or query: uvicorn decodes percent escapes as UTF-8 and replaces bytes that are not, so
``%FF`` would arrive as U+FFFD. The raw bytes (``scope["raw_path"]``, ``scope["query_string"]``)
are decoded with :func:`urllib.parse.unquote_to_bytes` instead, and a ``%`` not followed by two
hex digits is refused rather than taken literally.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import pyarrow as pa

from .. import b64
from ..format.partition_reader import SCHEMA
from .errors import ApiError

UTF8, BASE64 = "utf-8", "base64"
ENCODINGS = (UTF8, BASE64)
ARROW_STREAM = "application/vnd.apache.arrow.stream"
NDJSON = "application/x-ndjson"
JSON = "application/json"
#: schema of scan answers: the reader's own (key, value: large_binary, not null)
PAIR_SCHEMA = SCHEMA
_KEY_TYPES = (pa.binary(), pa.large_binary(), pa.string(), pa.large_string())
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def media_type(header: str | None) -> str:
    """The media type of a Content-Type header, lower-case, without parameters."""
    return (header or "").split(";", 1)[0].strip().lower()


def show(key: bytes) -> str:
    """A key as it would be written in a URL (every byte but ``A-Za-z0-9_.-~`` escaped), for
    messages: exact and printable."""
    return quote_from_bytes(key, safe="")


def percent_decode(raw: bytes, what: str) -> bytes:
    """The bytes a percent-encoded URL component stands for.

    Args:
        raw: the component as received.
        what: what it is, for the message (``"key"``, ``"query parameter start"``).

    Returns:
        The decoded bytes (``+`` is a plus sign, not a space).

    Raises:
        ApiError: 400 ``bad_percent_encoding``, a ``%`` not followed by two hex digits.
    """
    bad = _BAD_ESCAPE.search(raw)
    if bad:
        raise ApiError(400, "bad_percent_encoding",
                       f"{what}: '%' at position {bad.start()} is not followed by two hex "
                       "digits (write a literal '%' as %25)")
    return unquote_to_bytes(raw)


def key_from_path(raw_path: bytes) -> bytes:
    """The key of ``/v1/stores/{name}/keys/{key}`` from the raw request path: everything after
    the fifth ``/``, percent-decoded (a ``/`` in a key may be sent as is or as ``%2F``).

    Raises:
        ApiError: 400 for a malformed escape.
    """
    parts = raw_path.split(b"/", 5)
    return percent_decode(parts[5] if len(parts) == 6 else b"", "key")


def parse_query(raw: bytes, allowed: Sequence[str]) -> dict[str, bytes]:
    """The parameters of a raw query string, each value percent-decoded to bytes.

    Args:
        raw: ``scope["query_string"]``.
        allowed: the parameter names the endpoint takes.

    Returns:
        Name to value (bytes).

    Raises:
        ApiError: 400 for an unknown or repeated parameter or a malformed escape.
    """
    out: dict[str, bytes] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = percent_decode(raw_name, "query parameter name").decode("utf-8", "replace")
        if name not in allowed:
            raise ApiError(400, "unknown_parameter",
                           f"unknown query parameter {name!r} (this endpoint takes "
                           f"{', '.join(allowed)})", parameter=name)
        if name in out:
            raise ApiError(400, "repeated_parameter", f"query parameter {name!r} is given twice",
                           parameter=name)
        out[name] = percent_decode(raw_value, f"query parameter {name}")
    return out


def parse_encoding(value: Any, where: str) -> str:
    """``utf-8`` or ``base64`` (``utf8`` and any case accepted).

    Raises:
        ApiError: 400 ``bad_encoding`` for anything else.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if isinstance(text, str):
        low = text.strip().lower()
        if low in ("utf-8", "utf8"):
            return UTF8
        if low == BASE64:
            return BASE64
    raise ApiError(400, "bad_encoding", f"{where} must be \"utf-8\" or \"base64\", got {value!r}")


def decode_json_keys(keys: Any, encoding: str) -> list[bytes]:
    """The keys of a JSON batch get as bytes.

    Args:
        keys: the ``keys`` member: a list of strings.
        encoding: how the strings carry bytes: ``utf-8`` (the text's UTF-8 bytes) or ``base64``.

    Returns:
        The keys.

    Raises:
        ApiError: 400 ``bad_keys`` when ``keys`` is not a list of strings or one does not decode.
    """
    if not isinstance(keys, list):
        raise ApiError(400, "bad_keys", "\"keys\" must be a list of strings")
    out: list[bytes] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise ApiError(400, "bad_keys", f"keys[{i}] must be a string, got {type(key).__name__}",
                           index=i)
        try:
            # (a2b_base64 in strict mode is base64.b64decode(validate=True) without its wrapper)
            out.append(key.encode("utf-8") if encoding == UTF8 else
                       binascii.a2b_base64(key.encode("ascii"), strict_mode=True))
        except (UnicodeError, binascii.Error) as exc:
            raise ApiError(400, "bad_keys", f"keys[{i}] is not valid {encoding}: {exc}",
                           index=i) from None
    return out


def encode_values(keys: list[bytes], values: list[bytes | None], encoding: str,
                  store: str) -> list[str | None]:
    """Values of a JSON batch get as strings (``None`` for an absent key).

    Raises:
        ApiError: 422 ``value_not_utf8`` when ``encoding`` is utf-8 and a value is not valid
            UTF-8 (the message names its key and says to ask for base64).
    """
    if encoding == BASE64:
        b64 = binascii.b2a_base64  # (base64.b64encode without its wrapper)
        return [None if v is None else b64(v, newline=False).decode("ascii") for v in values]
    out: list[str | None] = []
    for key, value in zip(keys, values, strict=True):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(422, "value_not_utf8",
                           f"the value of key {show(key)!r} in store {store!r} is not valid UTF-8; "
                           "ask with \"encoding\": \"base64\"", store=store, key=show(key)) from None
    return out


def ndjson_lines(keys: list[bytes], values: list[bytes], encoding: str) -> bytes:
    """One JSON object per pair, newline-terminated.

    With ``base64`` every pair is ``{"key": b64, "value": b64}``. With ``utf-8`` a key or value
    that is valid UTF-8 is a string in ``key``/``value``; one that is not is base64 in
    ``key_base64``/``value_base64`` instead (the field name says which, as ``kvio scan --json``
    does), so a stream never fails halfway on binary data.
    """
    dumps = json.dumps
    lines = []
    if encoding == BASE64:
        b64 = base64.b64encode
        for k, v in zip(keys, values, strict=True):
            lines.append(f'{{"key":"{b64(k).decode()}","value":"{b64(v).decode()}"}}\n')
        return "".join(lines).encode("ascii")
    for k, v in zip(keys, values, strict=True):
        try:
            key_field = '"key":' + dumps(k.decode("utf-8"), ensure_ascii=False)
        except UnicodeDecodeError:
            key_field = f'"key_base64":"{base64.b64encode(k).decode()}"'
        try:
            value_field = '"value":' + dumps(v.decode("utf-8"), ensure_ascii=False)
        except UnicodeDecodeError:
            value_field = f'"value_base64":"{base64.b64encode(v).decode()}"'
        lines.append(f"{{{key_field},{value_field}}}\n")
    return "".join(lines).encode("utf-8")


def read_arrow_keys(body: bytes) -> tuple[pa.Array, list[bytes], pa.Array]:
    """The ``key`` column of an Arrow IPC stream (binary or string, no nulls).

    Args:
        body: the request body.

    Returns:
        The column as sent (one array), its values as bytes, and as a large_binary array.

    Raises:
        ApiError: 400 ``bad_arrow`` for a body that is not an Arrow IPC stream, has no ``key``
            column, a column of another type, or nulls.
    """
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ApiError(400, "bad_arrow", f"the body is not an Arrow IPC stream: {exc}") from None
    if "key" not in table.column_names:
        raise ApiError(400, "bad_arrow", "the Arrow stream has no \"key\" column (it has "
                       f"{', '.join(table.column_names) or 'no columns'})")
    column = table.column("key")
    if column.type not in _KEY_TYPES:
        raise ApiError(400, "bad_arrow", f"the \"key\" column must be binary or string, not "
                       f"{column.type}")
    if column.null_count:
        raise ApiError(400, "bad_arrow", f"the \"key\" column has {column.null_count} null(s)")
    array = column.combine_chunks()
    large = array.cast(pa.large_binary())
    return array, large.to_pylist(), large


class ArrowStreamEncoder:
    """An Arrow IPC stream written piece by piece: :meth:`take` returns the bytes written since
    the last call (the schema first), so a response streams batch by batch."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._sink = io.BytesIO()
        self._writer = pa.ipc.new_stream(self._sink, schema)

    def take(self) -> bytes:
        data = self._sink.getvalue()
        self._sink.seek(0)
        self._sink.truncate()
        return data

    def write(self, batch: pa.RecordBatch) -> bytes:
        if batch.schema != self.schema:  # e.g. merged pieces: same types, other nullability
            batch = pa.RecordBatch.from_arrays(batch.columns, schema=self.schema)
        self._writer.write_batch(batch)
        return self.take()

    def close(self) -> bytes:
        """The end-of-stream marker."""
        self._writer.close()
        return self.take()


def batch_json(version: str, values: list[str | None], encoding: str) -> bytes:
    """The body of a JSON batch-get answer, ``{"version": V, "values": [...]}``, as
    :func:`json_bytes` renders it. Base64 strings need no escaping, so with base64 the list is
    joined directly (about twice as fast as ``json.dumps`` for 1,000 values)."""
    if encoding != BASE64:
        return json_bytes({"version": version, "values": values})
    items = ",".join(["null" if v is None else f'"{v}"' for v in values])
    return f'{{"version":{json.dumps(version, ensure_ascii=False)},"values":[{items}]}}'.encode()


def batch_json_base64(version: str, values: pa.Array) -> bytes:
    """:func:`batch_json` of values still in an Arrow array (null = absent), base64 encoded
    all at once (:func:`kvio.b64.json_list`)."""
    head = f'{{"version":{json.dumps(version, ensure_ascii=False)},"values":'.encode()
    return b64.json_list(values, head, b"}")


def json_bytes(doc: Any) -> bytes:
    """A JSON answer's body, as Starlette's JSONResponse renders it."""
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def arrow_table_bytes(table: pa.Table) -> bytes:
    """A whole table as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
