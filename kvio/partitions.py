"""The one way to open a partition file, and a bounded cache of open ones.

Every engine (the reader, the Spark scan, mrjob map tasks, the committer's validation and the
CLI) opens partition files through :func:`open_partition`: memory-mapped on local disk, small
ranged reads elsewhere, checked against the manifest entry, with the configured checksum
verification and block cache.

File descriptors stay bounded: Python's ``mmap`` keeps a duplicate descriptor for as long as the
mapping lives (before Python 3.13, whose ``trackfd=False`` avoids it), so a reader that mapped
every partition of a 10,000-partition store would need 10,000 descriptors. A
:class:`PartitionCache` keeps at most ``kvio.read.open.partitions`` readers open and closes the
least recently used.
"""
from __future__ import annotations

import mmap
import posixpath
import sys
from collections import OrderedDict
from collections.abc import Callable

from . import layout
from .config import Config
from .errors import CorruptStoreError
from .format.manifest import PartitionEntry
from .format.partition_reader import PartitionReader
from .format.source import BufferSource, RangeSource, Source
from .fs import FileIO
from .read_cache import disk_cache, file_identity


def version_file(version: str, entry: PartitionEntry) -> str:
    """The path of ``entry``'s file relative to the store root.

    Args:
        version: the version that lists the entry.
        entry: the partition's manifest entry.

    Returns:
        ``_versions/<version>/<entry.path>``.
    """
    return posixpath.join(layout.version_dir(version), entry.path)


def _map_local(path: str) -> BufferSource:
    with open(path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            return BufferSource(b"", name=path)
        # 3.13+ maps without keeping a descriptor for the mapping's lifetime. (A literal version
        # check, so that type checkers know ``trackfd`` exists in this branch.)
        if sys.version_info >= (3, 13):
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ, trackfd=False)
        else:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return BufferSource(mapped, name=path, handle=mapped)


def open_source(io: FileIO, rel: str, size: int, *, conf: Config | None = None,
                footer_checksum: str | None = None) -> Source:
    """A byte source over the file at ``rel``: mapped locally, ranged reads elsewhere (through
    the disk cache ``kvio.read.cache.dir`` when ``conf`` sets one).

    Args:
        io: the store's file I/O.
        rel: the file's path relative to the store root.
        size: the file's expected size (ranged sources do not stat the file).
        conf: settings; None: no disk cache.
        footer_checksum: the manifest's footer checksum of the file; with ``size`` it names
            the file's content in the disk cache (a file is cached only when it is given).

    Returns:
        The source.

    Raises:
        FileNotFoundError: a local file is missing (remote files are first read, and found
            missing, when the reader opens them).
        ConfigError: ``kvio.read.cache.dir`` cannot be created.
    """
    if io.is_local:
        return _map_local(io.local_path(rel))
    def fetch(offset: int, length: int) -> bytes:
        return io.read_range(rel, offset, length)

    if conf is not None and conf.read_cache_dir and footer_checksum is not None:
        cache = disk_cache(conf.read_cache_dir, conf.read_cache_bytes)
        identity = file_identity(io.path(rel), size, footer_checksum)
        return RangeSource(cache.wrap(identity, fetch), size, io.path(rel), uncached=fetch,
                           discard=lambda offset, length: cache.discard(identity, offset, length))
    return RangeSource(fetch, size, io.path(rel))


def open_partition(io: FileIO, rel: str, entry: PartitionEntry, conf: Config, *,
                   verify: bool | None = None) -> PartitionReader:
    """A reader of the partition file at ``rel``, checked against its manifest ``entry``.

    Args:
        io: the store's file I/O.
        rel: the file's path relative to the store root (see :func:`version_file`).
        entry: what the manifest (or a task's commit message) says about the file; its size,
            footer checksum, count and key range must match the file.
        conf: settings (checksum verification, block cache size).
        verify: override ``kvio.read.verify.checksums``.

    Returns:
        An open PartitionReader; close it when done.

    Raises:
        CorruptStoreError: the file is missing, or does not match ``entry`` or its checksums.
        UnsupportedFormatError: the file was written by an unknown format version.
    """
    try:
        source = open_source(io, rel, entry.size, conf=conf, footer_checksum=entry.footer_checksum)
        return PartitionReader(source, store=io.uri, expected=entry.to_json(),
                               verify=conf.verify_checksums if verify is None else verify,
                               cache_blocks=conf.cache_blocks, read_ahead=conf.read_ahead_bytes)
    except FileNotFoundError:
        raise CorruptStoreError("partition file listed in the manifest is missing (was the "
                                "version garbage-collected while it was read?)", store=io.uri,
                                file=io.path(rel)) from None


class PartitionCache:
    """Open partition readers of one store version, at most ``capacity`` at a time.

    Args:
        io: the store's file I/O.
        version: the version whose partitions are opened.
        conf: settings; ``kvio.read.open.partitions`` is the default capacity.
        capacity: override the capacity.
        on_evict: called with the entry of each reader closed to make room (a caller that
            keeps references to a reader's methods drops them here).
    """

    def __init__(self, io: FileIO, version: str, conf: Config, capacity: int | None = None,
                 on_evict: Callable[[PartitionEntry], None] | None = None):
        self.io = io
        self.version = version
        self.conf = conf
        self.capacity = max(1, capacity or conf.open_partitions)
        self._open: OrderedDict[str, tuple[PartitionEntry, PartitionReader]] = OrderedDict()
        self._on_evict = on_evict
        self.opened = 0  # files opened so far (reopening after eviction counts again)

    def get(self, entry: PartitionEntry) -> PartitionReader:
        """The open reader of ``entry``, opening it (and closing the least recently used
        reader beyond the capacity) if needed.

        Raises:
            CorruptStoreError: see :func:`open_partition`.
        """
        held = self._open.get(entry.path)
        if held is not None:
            self._open.move_to_end(entry.path)
            return held[1]
        reader = open_partition(self.io, version_file(self.version, entry), entry, self.conf)
        self.opened += 1
        self._open[entry.path] = (entry, reader)
        while len(self._open) > self.capacity:
            _, (old_entry, old) = self._open.popitem(last=False)
            old.close()
            if self._on_evict is not None:
                self._on_evict(old_entry)
        return reader

    __call__ = get

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Close every open reader (idempotent)."""
        while self._open:
            _, (_, reader) = self._open.popitem()
            reader.close()
