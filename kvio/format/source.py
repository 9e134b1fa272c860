"""Random-access byte sources that partition readers read from.

A mapped source exposes the whole file as one zero-copy buffer (local files, via a memory map).
A ranged source issues one ranged read per call (remote filesystems) and counts requests and
bytes, which the remote-lookup benchmark reports.
"""
from __future__ import annotations

import mmap
from collections.abc import Callable

import pyarrow as pa


class Source:
    size: int
    mapped: bool = False
    name: str = "<bytes>"

    def read(self, offset: int, length: int) -> memoryview:
        raise NotImplementedError

    def read_buffer(self, offset: int, length: int) -> pa.Buffer:
        return pa.py_buffer(self.read(offset, length))

    def read_bytes(self, offset: int, length: int) -> bytes:
        return bytes(self.read(offset, length))

    def read_uncached(self, offset: int, length: int) -> bytes:
        """Like :meth:`read_bytes`, for reads a cache should not keep (scan read-ahead)."""
        return self.read_bytes(offset, length)

    def discard(self, offset: int, length: int) -> None:
        """Forget a piece read earlier whose checksum failed (a cache below drops it)."""

    def close(self) -> None:
        pass


class BufferSource(Source):
    """The whole file in memory or memory-mapped: reads are zero-copy slices.

    ``raw`` is the same bytes as an object whose slices are ``bytes`` (the file's ``mmap`` or a
    ``bytes`` object): point lookups slice keys and values straight out of it, one copy each.
    """

    mapped = True

    def __init__(self, buffer: pa.Buffer | bytes | mmap.mmap, name: str = "<bytes>", handle=None):
        if isinstance(buffer, (bytes, mmap.mmap)):
            self.raw = buffer
            self.buffer = pa.py_buffer(buffer)
        else:
            self.buffer = buffer if isinstance(buffer, pa.Buffer) else pa.py_buffer(buffer)
            self.raw = self.buffer.to_pybytes()
        self.view = memoryview(self.buffer)
        self.size = self.buffer.size
        self.name = name
        self._handle = handle

    @classmethod
    def map_file(cls, path: str) -> BufferSource:
        with open(path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                return cls(b"", name=path)
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return cls(mapped, name=path, handle=mapped)

    def read(self, offset: int, length: int) -> memoryview:
        return self.view[offset:offset + length]

    def read_buffer(self, offset: int, length: int) -> pa.Buffer:
        return self.buffer.slice(offset, length)

    def read_bytes(self, offset: int, length: int) -> bytes:
        return self.raw[offset:offset + length]

    def close(self) -> None:
        self.view.release()
        self.buffer = None
        if self._handle is not None:
            # Raises BufferError while Arrow batches handed out still reference the mapping;
            # the map is then unmapped when the last of them is freed.
            self._handle.close()


class RangeSource(Source):
    """One ranged read per call through a callable ``read_range(offset, length) -> bytes``.

    ``uncached`` (default ``read_range``) serves :meth:`read_uncached`: when ``read_range`` goes
    through a disk cache, scans read past it; ``discard(offset, length)`` drops a piece from
    that cache when the reader finds it damaged.
    """

    def __init__(self, read_range: Callable[[int, int], bytes], size: int, name: str,
                 uncached: Callable[[int, int], bytes] | None = None,
                 discard: Callable[[int, int], None] | None = None):
        self._read_range = read_range
        self._uncached = uncached or read_range
        self._discard = discard
        self.size = size
        self.name = name
        self.requests = 0
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> memoryview:
        return memoryview(self.read_bytes(offset, length))

    def read_bytes(self, offset: int, length: int) -> bytes:
        return self._counted(self._read_range(offset, length))

    def read_uncached(self, offset: int, length: int) -> bytes:
        return self._counted(self._uncached(offset, length))

    def discard(self, offset: int, length: int) -> None:
        if self._discard is not None:
            self._discard(offset, length)

    def _counted(self, data: bytes) -> bytes:
        self.requests += 1
        self.bytes_read += len(data)
        return bytes(data) if type(data) is not bytes else data
