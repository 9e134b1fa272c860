"""Random-access byte sources that partition readers read from.

A mapped source exposes the whole file as one zero-copy buffer (local files, via pyarrow's
memory map). A ranged source issues one ranged read per call (remote filesystems) and counts
requests and bytes, which the remote-lookup benchmark reports.
"""
from __future__ import annotations

from typing import Callable

import pyarrow as pa


class Source:
    size: int
    mapped: bool = False
    name: str = "<bytes>"

    def read(self, offset: int, length: int) -> memoryview:
        raise NotImplementedError

    def read_buffer(self, offset: int, length: int) -> pa.Buffer:
        return pa.py_buffer(self.read(offset, length))

    def close(self) -> None:
        pass


class BufferSource(Source):
    """The whole file in memory or memory-mapped: reads are zero-copy slices."""

    mapped = True

    def __init__(self, buffer: pa.Buffer | bytes, name: str = "<bytes>", handle=None):
        self.buffer = buffer if isinstance(buffer, pa.Buffer) else pa.py_buffer(buffer)
        self.view = memoryview(self.buffer)
        self.size = self.buffer.size
        self.name = name
        self._handle = handle

    @classmethod
    def map_file(cls, path: str) -> "BufferSource":
        handle = pa.memory_map(path, "r")
        return cls(handle.read_buffer(), name=path, handle=handle)

    def read(self, offset: int, length: int) -> memoryview:
        return self.view[offset:offset + length]

    def read_buffer(self, offset: int, length: int) -> pa.Buffer:
        return self.buffer.slice(offset, length)

    def close(self) -> None:
        # Arrow keeps the mapping alive while exported batches still reference it.
        self.view.release()
        if self._handle is not None:
            self._handle.close()


class RangeSource(Source):
    """One ranged read per call through a callable ``read_range(offset, length) -> bytes``."""

    def __init__(self, read_range: Callable[[int, int], bytes], size: int, name: str):
        self._read_range = read_range
        self.size = size
        self.name = name
        self.requests = 0
        self.bytes_read = 0

    def read(self, offset: int, length: int) -> memoryview:
        data = self._read_range(offset, length)
        self.requests += 1
        self.bytes_read += len(data)
        return memoryview(data)
