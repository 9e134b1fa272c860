"""A near cache: recently read values kept in this process, bounded by bytes (LRU).

Entries are keyed by ``(store, version, key)``. A version never changes once published, so an
entry can never be stale: a new version is a new key, and the old version's entries simply age
out of the LRU. Absent keys are cached too (negative entries), so repeated misses stay local.

Two users:

* :func:`kvio.client.connect` keeps one per remote store (``cache_bytes=``);
* :func:`cached` wraps an in-process reader (a :class:`~kvio.reader.StoreReader` or a live
  store) of a remote store (object store, HDFS), where every block read may wait on the network.
  Local stores need no near cache: a get is already a microsecond or two from the page cache.

The cache is thread-safe (one lock around the LRU; a hit holds it for well under a microsecond).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .errors import InvalidArgumentError
from .reader import _key

#: what :meth:`NearCache.get` returns when it holds nothing for the key
MISS: Any = object()
#: bytes charged per entry on top of key and value (the tuple key, the dict slot, the objects)
ENTRY_OVERHEAD = 160


@dataclass(frozen=True)
class CacheStats:
    """Counters of a :class:`NearCache`.

    Attributes:
        hits: lookups answered from the cache (negative entries included).
        misses: lookups the cache could not answer.
        evictions: entries removed to stay within the byte bound.
        bytes: bytes held now (keys, values and :data:`ENTRY_OVERHEAD` per entry).
        entries: entries held now.
        max_bytes: the bound.
    """

    hits: int
    misses: int
    evictions: int
    bytes: int
    entries: int
    max_bytes: int

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for JSON and logs)."""
        return asdict(self)


class NearCache:
    """An LRU of ``(namespace, version, key) -> value`` bounded by bytes.

    Args:
        max_bytes: the most bytes to hold (an entry larger than this is never kept).

    Raises:
        InvalidArgumentError: ``max_bytes`` is negative.
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise InvalidArgumentError(f"the near cache needs max_bytes >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[Hashable, str, bytes], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0

    def get(self, namespace: Hashable, version: str, key: bytes) -> Any:
        """The cached value of ``key`` in ``version`` of ``namespace`` (a store).

        Args:
            namespace: which store (its URI or name).
            version: the store's version.
            key: the key.

        Returns:
            The value (``None`` for a cached absent key), or :data:`MISS`.
        """
        entry_key = (namespace, version, key)
        with self._lock:
            entry = self._entries.get(entry_key)
            if entry is None:
                self._misses += 1
                return MISS
            self._entries.move_to_end(entry_key)
            self._hits += 1
            return entry[0]

    def put(self, namespace: Hashable, version: str, key: bytes, value: Any,
            size: int | None = None) -> None:
        """Remember ``value`` (``None`` = absent) for ``key`` in ``version`` of ``namespace``,
        evicting the least recently used entries beyond the bound.

        Args:
            namespace: which store.
            version: the version the value was read from.
            key: the key.
            value: the value, or None for an absent key.
            size: the value's size in bytes when it is not bytes (default ``len(value)``).
        """
        if size is None:
            size = 0 if value is None else len(value)
        cost = len(key) + size + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        entry_key = (namespace, version, key)
        with self._lock:
            old = self._entries.pop(entry_key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[entry_key] = (value, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1

    def discard(self, namespace: Hashable, version: str, key: bytes) -> None:
        """Forget one entry (no error if it is not held)."""
        with self._lock:
            old = self._entries.pop((namespace, version, key), None)
            if old is not None:
                self._bytes -= old[1]

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        """The counters now."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._bytes,
                              len(self._entries), self.max_bytes)


class CachedReader(Mapping):
    """A reader with a near cache in front of its point lookups (see :func:`cached`).

    Args:
        reader: a StoreReader or a LiveStore (anything with ``get``, ``get_many`` and
            ``snapshot()`` or a fixed ``version``).
        max_bytes: the cache's bound in bytes.
    """

    def __init__(self, reader: Any, max_bytes: int):
        self.reader = reader
        self.cache = NearCache(max_bytes)
        self._live = hasattr(reader, "snapshot")

    # Each miss reads the version and the value from one snapshot, so an entry is always filed
    # under the version it was read from, even when a live store swaps meanwhile.
    def _read(self, key: bytes) -> Any:
        if self._live:
            with self.reader.snapshot() as snap:
                version, value = snap.version, snap.get(key)
        else:
            version, value = self.reader.version, self.reader.get(key)
        self.cache.put(self.reader.uri, version, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` (see StoreReader.get); cached."""
        if type(key) is not bytes:
            key = _key(key)
        value = self.cache.get(self.reader.uri, self.reader.version, key)
        if value is MISS:
            value = self._read(key)
        return default if value is None else value

    def get_many(self, keys: Any, default: Any = None) -> list:
        """Values (or ``default``) for many keys, in input order, all from one version; the
        keys not cached are read in one ``get_many``."""
        keys = [k if type(k) is bytes else _key(k) for k in keys]
        if self._live:
            with self.reader.snapshot() as snap:
                return self._get_many(snap, keys, default)
        return self._get_many(self.reader, keys, default)

    def _get_many(self, reader: Any, keys: list[bytes], default: Any) -> list:
        uri, version = self.reader.uri, reader.version
        out = [self.cache.get(uri, version, k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is MISS]
        if todo:
            values = reader.get_many([keys[i] for i in todo])
            for i, value in zip(todo, values, strict=True):
                out[i] = value
                self.cache.put(uri, version, keys[i], value)
        return [default if v is None else v for v in out]

    def __getitem__(self, key: Any) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.reader)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.reader)

    def items(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """As the reader's ``items`` (scans are not cached)."""
        return self.reader.items(start, stop, prefix)

    def keys(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """As the reader's ``keys`` (not cached)."""
        return self.reader.keys(start, stop, prefix)

    def values(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """As the reader's ``values`` (not cached)."""
        return self.reader.values(start, stop, prefix)

    @property
    def version(self) -> str:
        """The reader's version (a live store's current one)."""
        return str(self.reader.version)

    def cache_stats(self) -> CacheStats:
        """Hits, misses, evictions, bytes and entries of the near cache."""
        return self.cache.stats()

    def info(self) -> dict[str, Any]:
        """The reader's description."""
        return dict(self.reader.info())

    def close(self) -> None:
        """Close the reader and drop the cache."""
        self.cache.clear()
        self.reader.close()

    def __enter__(self) -> CachedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cached(reader: Any, max_bytes: int) -> CachedReader:
    """Put a near cache in front of an in-process reader of a remote store.

    Args:
        reader: a :class:`~kvio.reader.StoreReader` or a live store
            (``kvs.open_store(uri, follow=True)``); closed with the wrapper.
        max_bytes: the cache's bound in bytes.

    Returns:
        A read-only Mapping with the reader's read API and ``cache_stats()``.

    Raises:
        InvalidArgumentError: ``max_bytes`` is negative.
    """
    return CachedReader(reader, max_bytes)
