"""The manifest of one store version: which partition files it holds and how keys route to them.

Routing is by key range with priority: every partition has [min_key, max_key] (unsigned byte
order) and a priority (its position in the list; later = higher). A lookup consults every
partition whose range holds the key, highest priority first, and the first hit wins, so merged
or overlapping partitions are always correct. When ranges are disjoint (``"disjoint": true``)
one binary search over the partitions *sorted by min_key* finds the only candidate (the list
itself stays in priority order, which after a merge need not be key order).

The manifest is parsed and validated once, into the frozen :class:`Manifest` and
:class:`PartitionEntry` objects every other module uses; nothing reads the JSON by literal keys.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..errors import CorruptStoreError, UnsupportedFormatError
from . import envelope
from .spec import DOCUMENT_VERSIONS, FORMAT_VERSION

KIND = "KVIOMANIFEST"
ROUTING = "key-range-priority"
_ENTRY_FIELDS: dict[str, type] = {"path": str, "count": int, "size": int, "footer_checksum": str}


def _hex_key(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a hex string")
    if value != value.lower():
        raise ValueError(f"{name} must be lowercase hex")
    return bytes.fromhex(value)


@dataclass(frozen=True, slots=True)
class PartitionEntry:
    """One partition file of a version.

    Attributes:
        path: the file's path relative to the version directory (or, in a job's commit
            messages, relative to the job's staging directory).
        count: pairs in the file.
        min_key: smallest key (None when ``count`` is 0).
        max_key: largest key (None when ``count`` is 0).
        size: file size in bytes.
        footer_checksum: the footer checksum recorded in the file, 16 lowercase hex digits.
        tombstones: the file is a tombstone file: its rows delete their keys
            (docs/FORMAT.md §3.8).
    """

    path: str
    count: int
    min_key: bytes | None
    max_key: bytes | None
    size: int
    footer_checksum: str
    tombstones: bool = False

    @property
    def live(self) -> bool:
        """True when the partition holds at least one pair."""
        return self.count > 0

    def key_range(self) -> tuple[bytes, bytes]:
        """[min_key, max_key] of a non-empty partition.

        Returns:
            ``(min_key, max_key)``.

        Raises:
            ValueError: the partition is empty and has no key range.
        """
        if self.min_key is None or self.max_key is None:
            raise ValueError(f"partition {self.path} is empty and has no key range")
        return self.min_key, self.max_key

    def holds(self, key: bytes) -> bool:
        """Whether ``key`` lies inside [min_key, max_key] (not whether it is present)."""
        return self.count > 0 and self.min_key <= key <= self.max_key  # type: ignore[operator]

    def overlaps(self, start: bytes | None, stop: bytes | None) -> bool:
        """Whether [min_key, max_key] meets the half-open range [start, stop) (None: open)."""
        if self.count <= 0:
            return False
        return (stop is None or self.min_key < stop) and (start is None or self.max_key >= start)  # type: ignore[operator]

    def with_path(self, path: str) -> PartitionEntry:
        """The same partition under another path (files carried into a new version)."""
        return PartitionEntry(path, self.count, self.min_key, self.max_key, self.size,
                              self.footer_checksum, self.tombstones)

    def to_json(self) -> dict[str, Any]:
        """The JSON form written to manifests and commit messages (keys as lowercase hex)."""
        doc = {"path": self.path, "count": self.count,
               "min_key": None if self.min_key is None else self.min_key.hex(),
               "max_key": None if self.max_key is None else self.max_key.hex(),
               "size": self.size, "footer_checksum": self.footer_checksum}
        if self.tombstones:  # absent otherwise: manifests without tombstones stay as they were
            doc["tombstones"] = True
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> PartitionEntry:
        """Parse and validate one entry.

        Args:
            doc: the decoded JSON object.

        Returns:
            The entry.

        Raises:
            TypeError, ValueError, KeyError: the entry is malformed (callers turn these into
                CorruptStoreError or CommitError with the store and file named).
        """
        if not isinstance(doc, Mapping):
            raise TypeError("partition entry is not an object")
        for name, kind in _ENTRY_FIELDS.items():
            if not isinstance(doc[name], kind) or isinstance(doc[name], bool):
                raise TypeError(f"partition field {name} has the wrong type")
        count, size = doc["count"], doc["size"]
        if count < 0 or size < 0:
            raise ValueError("partition count and size must not be negative")
        low: bytes | None = None
        high: bytes | None = None
        if count:
            low, high = _hex_key(doc["min_key"], "min_key"), _hex_key(doc["max_key"], "max_key")
            if high < low:
                raise ValueError("partition max_key is below its min_key")
        tombstones = doc.get("tombstones", False)
        if not isinstance(tombstones, bool):
            raise TypeError("partition field tombstones is not a boolean")
        return cls(doc["path"], count, low, high, size, doc["footer_checksum"], tombstones)


@dataclass(frozen=True)
class Manifest:
    """A version's manifest.

    Attributes:
        version: the version id (also the name of its directory under ``_versions``).
        partitions: entries in priority order, lowest first.
        disjoint: True when no two non-empty partitions' key ranges overlap.
        count: pairs in the version when known (always known for disjoint versions).
        options: writer options recorded for information (compression, block size).
        format_version: the manifest's format version.
        routing: the routing rule; always ``key-range-priority``.
    """

    version: str
    partitions: tuple[PartitionEntry, ...]
    disjoint: bool
    count: int | None
    options: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    routing: str = ROUTING

    @classmethod
    def build(cls, version: str, partitions: Sequence[PartitionEntry],
              options: Mapping[str, Any], count: int | None = None) -> Manifest:
        """A new manifest; ``disjoint`` and (for disjoint partitions) ``count`` are derived.

        Args:
            version: the version id.
            partitions: entries in priority order (lowest first).
            options: writer options to record.
            count: the number of pairs if the caller knows it (overlapping partitions).

        Returns:
            The manifest.
        """
        ranges = sorted(p.key_range() for p in partitions if p.live)
        # Tombstones make a version "not disjoint" whatever the ranges: a reader then merges,
        # which is what drops deleted keys, and ``count`` (rows, not keys) is not derived.
        disjoint = all(prev[1] < cur[0] for prev, cur in pairwise(ranges)) \
            and not any(p.tombstones for p in partitions if p.live)
        if count is None and disjoint:
            count = sum(p.count for p in partitions)
        return cls(version, tuple(partitions), disjoint, count, dict(options))

    def live(self) -> list[tuple[int, PartitionEntry]]:
        """(priority, entry) of every non-empty partition, in priority order."""
        return [(i, p) for i, p in enumerate(self.partitions) if p.live]

    @property
    def size(self) -> int:
        """Bytes of all partition files."""
        return sum(p.size for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        """The JSON document stored in the manifest file."""
        return {"format": "kvio-manifest", "format_version": self.format_version,
                "version": self.version, "routing": self.routing, "disjoint": self.disjoint,
                "count": self.count, "options": dict(self.options),
                "partitions": [p.to_json() for p in self.partitions]}

    def encode(self) -> bytes:
        """The manifest file's bytes (checksummed envelope)."""
        return envelope.encode(KIND, self.to_json())

    @classmethod
    def decode(cls, blob: bytes, *, store: str | None = None, file: str | None = None) -> Manifest:
        """Parse and validate a manifest file.

        Args:
            blob: the file's bytes.
            store: the store URI, for error messages.
            file: the file's path, for error messages.

        Returns:
            The manifest.

        Raises:
            CorruptStoreError: checksum, envelope or structure is wrong.
            UnsupportedFormatError: written by an unknown format version.
        """
        doc = envelope.decode(KIND, blob, store=store, file=file)
        try:
            parts = doc["partitions"]
            if not isinstance(parts, list):
                raise TypeError("partitions is not a list")
            entries = tuple(PartitionEntry.from_json(p) for p in parts)
            for p in entries:
                names = p.path.split("/")
                if len(names) > 2 or any(n in ("", ".", "..") for n in names):
                    raise ValueError(f"partition path {p.path!r} leaves the version directory")
            if len({p.path for p in entries}) != len(entries):
                raise ValueError("a partition path is listed twice")
            if doc.get("format") != "kvio-manifest":
                raise ValueError(f"format is {doc.get('format')!r}, not 'kvio-manifest'")
            if not isinstance(doc["disjoint"], bool):
                raise TypeError("disjoint is not a boolean")
            count = doc.get("count")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
                raise TypeError("count is not an integer")
            if not isinstance(doc["version"], str):
                raise TypeError("version is not a string")
            options = doc.get("options") or {}
            if not isinstance(options, dict):
                raise TypeError("options is not an object")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptStoreError(f"manifest is malformed: {exc}", store=store, file=file) from None
        format_version = doc.get("format_version", FORMAT_VERSION)
        if format_version not in DOCUMENT_VERSIONS or doc.get("routing", ROUTING) != ROUTING:
            # Checksummed and well formed, so written by a newer kvio, not damaged.
            raise UnsupportedFormatError(
                f"manifest format version {format_version!r} with routing {doc.get('routing')!r} "
                f"is not supported (this kvio reads versions {sorted(DOCUMENT_VERSIONS)}, "
                f"routing {ROUTING!r})", store=store, file=file)
        manifest = cls(doc["version"], entries, doc["disjoint"], count, options, format_version)
        derived = cls.build(manifest.version, entries, options)
        if derived.disjoint != manifest.disjoint and manifest.disjoint:
            # A reader that trusted a wrong "disjoint" would binary-search and miss keys.
            raise CorruptStoreError("manifest says disjoint but partition key ranges overlap "
                                    "or a partition holds tombstones", store=store, file=file)
        return manifest
