"""Checksummed JSON documents (manifests, commit records, the store marker).

A document is one ASCII header line ``<KIND> <format version> <xxh3-64 hex of body>\\n``
followed by the UTF-8 JSON body (docs/FORMAT.md §2.1). Any flipped byte breaks the header, the
checksum or both.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..errors import CorruptStoreError, UnsupportedFormatError
from .spec import DOCUMENT_VERSIONS, FORMAT_VERSION, checksum

#: The header line exactly as writers write it: no sign, no leading zero, lowercase hex.
_HEADER = re.compile(rb"([A-Z]+) ([1-9][0-9]{0,9}) ([0-9a-f]{16})")


def encode(kind: str, body: dict[str, Any], version: int = FORMAT_VERSION) -> bytes:
    """The bytes of a document.

    Args:
        kind: the document kind (``KVIOSTORE``, ``KVIOCOMMIT``, ``KVIOMANIFEST``).
        body: a JSON-able object; written with sorted keys and no whitespace.
        version: the document format version of the header line.

    Returns:
        Header line and body.
    """
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f"{kind} {version} {checksum(data):016x}\n".encode() + data


def decode(kind: str, blob: bytes, *, store: str | None = None,
           file: str | None = None, accept: frozenset[int] = DOCUMENT_VERSIONS) -> dict[str, Any]:
    """Check and parse a document, in the order docs/FORMAT.md §2.1 gives.

    Args:
        kind: the kind the caller expects.
        blob: the file's bytes.
        store: the store URI, for error messages.
        file: the file's path, for error messages.
        accept: the format versions this kind may have.

    Returns:
        The body.

    Raises:
        CorruptStoreError: a malformed header line, another kind, a checksum mismatch, or a
            body that is not a JSON object.
        UnsupportedFormatError: a format version this kvio does not read.
    """
    head, sep, body = blob.partition(b"\n")
    match = _HEADER.fullmatch(head) if sep else None
    if match is None:
        raise CorruptStoreError(f"bad {kind} header line {head[:80]!r}", store=store, file=file)
    if match[1] != kind.encode():
        raise CorruptStoreError(f"not a {kind} document (header says {match[1][:20].decode()})",
                                store=store, file=file)
    version = int(match[2])
    if version not in accept:
        raise UnsupportedFormatError(f"{kind} format version {version} is not supported (this "
                                     f"kvio reads {sorted(accept)})",
                                     store=store, file=file)
    if checksum(body) != int(match[3], 16):
        raise CorruptStoreError(f"{kind} checksum mismatch", store=store, file=file)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise CorruptStoreError(f"{kind} body is not JSON: {exc}", store=store, file=file) from None
    if not isinstance(doc, dict):
        raise CorruptStoreError(f"{kind} body is not a JSON object", store=store, file=file)
    return doc
