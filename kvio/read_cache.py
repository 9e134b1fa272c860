"""A local disk cache of pieces of remote partition files (``kvio.read.cache.dir``).

A reader of a store on an object store fetches small pieces of partition files: the header and
trailer, the footer, 4 KiB index pages and blocks. With this cache each piece is fetched once
per host: it is kept as one file under the cache directory, so a service that restarts, or
another process of the same user, warms up from local disk instead of the network.

* **Keyed by content identity.** A piece is named by its file's URI, path, size and footer
  checksum (from the manifest) plus its offset and length. Partition files are written once and
  never changed, and a replaced file has another footer checksum, so an entry is never stale.
* **Verified.** Every entry carries its length and an XXH3-64 checksum of its bytes; an entry
  that fails either check when read back (a torn write, a flipped bit on disk, a truncated
  file) is removed and the piece fetched again. A damaged entry is never served; the partition
  reader's own block and page checksums check the bytes once more.
* **Bounded, least recently used.** ``kvio.read.cache.bytes`` bounds the entries' total size.
  A hit refreshes the entry's modification time; when an insert takes the total past the
  bound, the oldest entries are removed until the total is 90% of it (so the directory scan
  that finds them runs once per tenth of the bound written, not once per insert).
* **Shared between processes of one host.** Entries are written to a temporary name and
  renamed into place (readers see a whole entry or none); inserts and evictions hold an
  exclusive ``flock`` on ``<dir>/.lock``, which also guards the running total in
  ``<dir>/.bytes``. Each eviction recounts the total from the directory, so a total left wrong
  by a process killed mid-insert is corrected at the next eviction. Reads take no lock: an
  entry removed under a reader is simply a miss.
* **Removes only its own files.** Eviction and cleanup touch only names this module creates
  (``<2 hex>/<32 hex>.kvc`` and its ``.tmp-`` files) inside the cache directory.

Pieces larger than the bound are not cached, and scans bypass the cache (their read-ahead
windows of several MiB would push out the index pages and blocks that lookups reuse).
"""
from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import xxhash

from .errors import ConfigError

#: entry header: magic | piece length u64 | XXH3-64 of the piece u64 | XXH3-64 of its name u64
_HEADER = struct.Struct("<8sQQQ")
_MAGIC = b"KVIOCACH"
_SUFFIX = ".kvc"
#: evictions stop when the total is at or below this fraction of the bound
_LOW_WATER = 0.9
#: temporary files older than this are left over by a killed process and may be removed
_STALE_TMP_SECONDS = 3600.0


@dataclass(frozen=True)
class DiskCacheStats:
    """Counters of one :class:`DiskCache` object (this process only).

    Attributes:
        hits: pieces served from disk.
        misses: pieces not on disk (fetched by the caller, then inserted).
        corrupt: entries that failed verification, were removed and fetched again.
        evictions: entries this process removed to stay within the bound.
        inserted_bytes: bytes of pieces this process inserted.
    """

    hits: int
    misses: int
    corrupt: int
    evictions: int
    inserted_bytes: int

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for JSON and logs)."""
        return asdict(self)


class DiskCache:
    """Pieces of immutable remote files in a local directory, bounded by bytes (LRU).

    Args:
        directory: the cache directory (created if missing).
        max_bytes: the bound on the entries' total size (headers included).

    Raises:
        ConfigError: ``max_bytes`` < 1 or the directory cannot be created.
    """

    def __init__(self, directory: str, max_bytes: int):
        if max_bytes < 1:
            raise ConfigError(f"kvio.read.cache.bytes must be at least 1, got {max_bytes}")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"kvio.read.cache.dir {self.directory} cannot be created: {exc}") from None
        self._lock_path = os.path.join(self.directory, ".lock")
        self._total_path = os.path.join(self.directory, ".bytes")
        self._counts = {"hits": 0, "misses": 0, "corrupt": 0, "evictions": 0, "inserted_bytes": 0}
        self._count_lock = threading.Lock()

    # ---- names ----------------------------------------------------------------------------
    @staticmethod
    def piece_name(identity: str, offset: int, length: int) -> str:
        """The entry name of a piece: 32 hex digits of XXH3-128 over identity, offset and length.

        Args:
            identity: the file's identity (see :func:`file_identity`).
            offset: the piece's first byte in the file.
            length: its length.

        Returns:
            The name (without directory or suffix).
        """
        return xxhash.xxh3_128_hexdigest(f"{identity}\0{offset}\0{length}".encode())

    def _path(self, name: str) -> str:
        # 256 subdirectories keep each directory small enough to list quickly.
        return os.path.join(self.directory, name[:2], name + _SUFFIX)

    # ---- reading --------------------------------------------------------------------------
    def get(self, identity: str, offset: int, length: int) -> bytes | None:
        """The cached bytes of a piece, or None (absent, or damaged and now removed).

        Args:
            identity: the file's identity.
            offset: the piece's first byte.
            length: its length.

        Returns:
            Exactly ``length`` verified bytes, or None.
        """
        name = self.piece_name(identity, offset, length)
        path = self._path(name)
        try:
            with open(path, "rb") as handle:
                blob = handle.read()
        except OSError:
            self._count("misses")
            return None
        data = self._verified(blob, name, length)
        if data is None:
            self._count("corrupt")
            self._remove(path)
            return None
        try:
            os.utime(path)  # most recently used
        except OSError:
            pass  # evicted meanwhile; the bytes are already verified
        self._count("hits")
        return data

    @staticmethod
    def _verified(blob: bytes, name: str, length: int) -> bytes | None:
        if len(blob) != _HEADER.size + length:
            return None
        magic, stored_len, data_sum, name_sum = _HEADER.unpack_from(blob)
        data = blob[_HEADER.size:]
        if magic != _MAGIC or stored_len != length or name_sum != xxhash.xxh3_64_intdigest(name.encode()) \
                or data_sum != xxhash.xxh3_64_intdigest(data):
            return None
        return data

    # ---- writing --------------------------------------------------------------------------
    def put(self, identity: str, offset: int, length: int, data: bytes) -> None:
        """Insert a piece (ignored when ``data`` is not ``length`` bytes or exceeds the bound).

        Args:
            identity: the file's identity.
            offset: the piece's first byte.
            length: its length.
            data: its bytes as fetched.

        A disk error while inserting is not the reader's problem: the piece is simply not
        cached (the caller already has its bytes).
        """
        size = _HEADER.size + length
        if len(data) != length or size > self.max_bytes:
            return
        name = self.piece_name(identity, offset, length)
        path = self._path(name)
        tmp = os.path.join(self.directory, name[:2], f".tmp-{os.getpid()}-{uuid.uuid4().hex}")
        header = _HEADER.pack(_MAGIC, length, xxhash.xxh3_64_intdigest(data),
                              xxhash.xxh3_64_intdigest(name.encode()))
        try:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(header)
                handle.write(data)
            with self._locked():
                total = self._read_total()  # (before the rename: a recount must not see it)
                try:
                    replaced = os.stat(path).st_size
                except OSError:
                    replaced = 0
                os.replace(tmp, path)
                total += size - replaced
                if total > self.max_bytes:
                    total = self._evict()
                self._write_total(total)
        except OSError:
            self._remove(tmp)
            return
        self._count("inserted_bytes", size)

    def discard(self, identity: str, offset: int, length: int) -> None:
        """Remove a piece whose bytes a reader found damaged (its checksum in the file failed),
        so that it is fetched again.

        Args:
            identity: the file's identity.
            offset: the piece's first byte.
            length: its length.
        """
        self._remove(self._path(self.piece_name(identity, offset, length)))

    def _evict(self) -> int:
        """Remove least recently used entries until the total is at most the low-water mark;
        return the recounted total. Called with the lock held."""
        entries, total = [], 0
        for path, stat in self._entries():
            entries.append((stat.st_mtime, path, stat.st_size))
            total += stat.st_size
        entries.sort()
        target = int(self.max_bytes * _LOW_WATER)
        for _, path, size in entries:
            if total <= target:
                break
            if self._remove(path):
                total -= size
                self._count("evictions")
        return total

    def _entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """(path, stat) of every entry; also removes stale temporary files of killed writers."""
        now = time.time()
        with os.scandir(self.directory) as top:
            subdirs = [d.path for d in top if len(d.name) == 2 and d.is_dir(follow_symlinks=False)]
        for sub in subdirs:
            with os.scandir(sub) as files:
                for f in files:
                    try:
                        stat = f.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if f.name.endswith(_SUFFIX) and len(f.name) == 32 + len(_SUFFIX):
                        yield f.path, stat
                    elif f.name.startswith(".tmp-") and now - stat.st_mtime > _STALE_TMP_SECONDS:
                        self._remove(f.path)

    def _read_total(self) -> int:
        try:
            with open(self._total_path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return sum(stat.st_size for _, stat in self._entries())

    def _write_total(self, total: int) -> None:
        with open(self._total_path, "w") as handle:
            handle.write(str(max(0, total)))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A new open file description per call: flock then excludes other threads of this
        # process as well as other processes.
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _remove(path: str) -> bool:
        try:
            os.unlink(path)
            return True
        except OSError:
            return False

    # ---- accounting -----------------------------------------------------------------------
    def _count(self, what: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[what] += n

    def stats(self) -> DiskCacheStats:
        """This process's counters."""
        with self._count_lock:
            return DiskCacheStats(**self._counts)

    def total_bytes(self) -> int:
        """The entries' total size on disk now, counted from the directory (headers included)."""
        return sum(stat.st_size for _, stat in self._entries())

    def wrap(self, identity: str, read_range: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
        """A ``read_range(offset, length)`` that asks the cache first and fills it on a miss.

        Args:
            identity: the file's identity.
            read_range: the uncached ranged read (one request).

        Returns:
            The caching ranged read.
        """
        def cached_read(offset: int, length: int) -> bytes:
            data = self.get(identity, offset, length)
            if data is None:
                data = bytes(read_range(offset, length))
                self.put(identity, offset, length, data)
            return data
        return cached_read


def file_identity(uri: str, size: int, footer_checksum: str | None) -> str:
    """What names a partition file's content: its URI, size and footer checksum.

    Args:
        uri: the file's full URI.
        size: its size (from the manifest).
        footer_checksum: its footer checksum (from the manifest).

    Returns:
        The identity string.
    """
    return f"{uri}|{size}|{footer_checksum}"


_CACHES: dict[tuple[str, int], DiskCache] = {}
_CACHES_LOCK = threading.Lock()


def disk_cache(directory: str, max_bytes: int) -> DiskCache:
    """The process's :class:`DiskCache` for ``directory`` (one object per directory and bound,
    so its counters cover every reader of the process).

    Args:
        directory: ``kvio.read.cache.dir``.
        max_bytes: ``kvio.read.cache.bytes``.

    Returns:
        The cache.

    Raises:
        ConfigError: see :class:`DiskCache`.
    """
    key = (os.path.abspath(directory), max_bytes)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = DiskCache(directory, max_bytes)
        return cache
