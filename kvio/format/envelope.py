"""Checksummed JSON documents (manifests, commit records, the store marker).

A document is one ASCII header line ``<KIND> <format version> <xxh3-64 hex of body>\\n``
followed by the UTF-8 JSON body. Any flipped byte breaks the header, the checksum or both.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import CorruptStoreError, UnsupportedFormatError
from .spec import SUPPORTED_VERSIONS, FORMAT_VERSION, checksum


def encode(kind: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{kind} {FORMAT_VERSION} {checksum(data):016x}\n".encode() + data


def decode(kind: str, blob: bytes, *, store: str | None = None, file: str | None = None) -> dict[str, Any]:
    head, sep, body = blob.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] != kind.encode():
        raise CorruptStoreError(f"not a {kind} document (bad header line)", store=store, file=file)
    try:
        version = int(parts[1])
        expected = int(parts[2], 16)
    except ValueError:
        raise CorruptStoreError(f"bad {kind} header line {head[:80]!r}", store=store, file=file) from None
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedFormatError(
            f"{kind} format version {version} is not supported (this kvio reads {sorted(SUPPORTED_VERSIONS)})",
            store=store, file=file)
    if checksum(body) != expected:
        raise CorruptStoreError(f"{kind} checksum mismatch", store=store, file=file)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise CorruptStoreError(f"{kind} body is not JSON: {exc}", store=store, file=file) from None
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"{kind} body is not a JSON object", store=store, file=file)
    return doc
