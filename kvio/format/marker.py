"""The store marker ``_kvio_store``: a checksummed document that says "this directory is a kvio
store" (docs/FORMAT.md §1.2). Its content is fixed: readers and ``kvio verify`` check it."""
from __future__ import annotations

from ..errors import CorruptStoreError
from . import envelope

KIND = "KVIOSTORE"
#: The only body format version 1 defines; a reader ignores fields it does not know.
BODY = {"format": "kvio-store"}


def encode() -> bytes:
    """The marker file's bytes (52 bytes in format version 1).

    Returns:
        The encoded document.
    """
    return envelope.encode(KIND, dict(BODY))


def check(blob: bytes, *, store: str | None = None, file: str | None = None) -> None:
    """Check a marker file's bytes.

    Args:
        blob: the file's content.
        store: the store URI, for error messages.
        file: the marker's path, for error messages.

    Raises:
        CorruptStoreError: not a valid marker document, or another ``format``.
        UnsupportedFormatError: written by a format version this kvio does not read.
    """
    doc = envelope.decode(KIND, blob, store=store, file=file)
    if doc.get("format") != BODY["format"]:
        raise CorruptStoreError(f"store marker names format {doc.get('format')!r}, expected "
                                f"{BODY['format']!r}", store=store, file=file)
