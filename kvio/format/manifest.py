"""The manifest of one store version: which partition files it holds and how keys route to them.

Routing is by key range with priority: every partition has [min_key, max_key] (unsigned byte
order) and a priority (its position in the list; later = higher). A lookup consults every
partition whose range holds the key, highest priority first, and the first hit wins, so merged
or overlapping partitions are always correct. When ranges are disjoint (``"disjoint": true``)
one binary search finds the only candidate.
"""
from __future__ import annotations

from typing import Any

from ..errors import CorruptStoreError
from . import envelope
from .spec import FORMAT_VERSION

KIND = "KVIOMANIFEST"
_PARTITION_FIELDS = {"path": str, "count": int, "size": int, "footer_checksum": str}


def build(version: str, partitions: list[dict], options: dict, count: int | None = None) -> dict[str, Any]:
    """Partitions must already be in priority order (lowest first)."""
    ranges = sorted((bytes.fromhex(p["min_key"]), bytes.fromhex(p["max_key"]))
                    for p in partitions if p["count"])
    disjoint = all(prev[1] < cur[0] for prev, cur in zip(ranges, ranges[1:]))
    if count is None and disjoint:
        count = sum(p["count"] for p in partitions)
    return {
        "format": "kvio-manifest",
        "format_version": FORMAT_VERSION,
        "version": version,
        "routing": "key-range-priority",
        "disjoint": disjoint,
        "count": count,
        "options": options,
        "partitions": [{k: p[k] for k in ("path", "count", "min_key", "max_key", "size", "footer_checksum")}
                       for p in partitions],
    }


def encode(doc: dict[str, Any]) -> bytes:
    return envelope.encode(KIND, doc)


def decode(blob: bytes, *, store: str | None = None, file: str | None = None) -> dict[str, Any]:
    doc = envelope.decode(KIND, blob, store=store, file=file)
    try:
        parts = doc["partitions"]
        if not isinstance(parts, list):
            raise TypeError("partitions is not a list")
        for p in parts:
            for field, kind in _PARTITION_FIELDS.items():
                if not isinstance(p[field], kind):
                    raise TypeError(f"partition field {field} has the wrong type")
            if p["count"]:
                bytes.fromhex(p["min_key"])
                bytes.fromhex(p["max_key"])
            if "/" in p["path"].replace("/", "", 1) or p["path"].startswith(("/", "..")):
                raise ValueError(f"partition path {p['path']!r} leaves the version directory")
        if not isinstance(doc["disjoint"], bool):
            raise TypeError("disjoint is not a boolean")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptStoreError(f"manifest is malformed: {exc}", store=store, file=file) from None
    return doc
