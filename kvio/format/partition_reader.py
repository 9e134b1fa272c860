"""Reads one partition file: point lookups through the hash index, ordered scans as Arrow.

Checksums are verified the first time each block or index page is touched (and the footer at
open), so a flipped byte raises CorruptStoreError instead of being returned. Files are
immutable, so a verified piece stays verified for the reader's lifetime.
"""
from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from struct import Struct
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..errors import CorruptStoreError, UnsupportedFormatError
from .source import Source
from .spec import (HEADER, INDEX_PAGE_BYTES, PARTITION_MAGIC, SUPPORTED_VERSIONS, TRAILER,
                   checksum, key_hash, pad8)

_PAIR = Struct("<qq")
_unpack_pair = _PAIR.unpack_from
_unpack_slot = Struct("<QQ").unpack_from
SCHEMA = pa.schema([pa.field("key", pa.large_binary(), nullable=False),
                    pa.field("value", pa.large_binary(), nullable=False)])


class _Block:
    """A verified, decoded block: byte positions of its four regions inside ``view``."""

    __slots__ = ("n", "view", "buffer", "kd", "vo", "vd")

    def __init__(self, n, view, buffer, kd, vo, vd):
        self.n, self.view, self.buffer, self.kd, self.vo, self.vd = n, view, buffer, kd, vo, vd


class _LRU:
    """Evicts from a plain list cache (list lookup keeps the hot path fast)."""

    def __init__(self, slots: list, capacity: int):
        self.slots, self.capacity, self.order = slots, max(1, capacity), OrderedDict()

    def add(self, i: int) -> None:
        self.order[i] = None
        self.order.move_to_end(i)
        while len(self.order) > self.capacity:
            old, _ = self.order.popitem(last=False)
            self.slots[old] = None


class PartitionReader:
    def __init__(self, source: Source, *, store: str | None = None, expected: dict | None = None,
                 verify: bool = True, cache_blocks: int = 256):
        self.source = source
        self.store = store
        self.name = source.name
        self.verify = verify
        self._open(expected)
        self._blocks: list = [None] * self.block_count
        self._pages: list = [None] * self.index_pages
        bounded = not source.mapped or self.codec != "none"
        self._block_lru = _LRU(self._blocks, cache_blocks) if bounded else None
        self._page_lru = _LRU(self._pages, cache_blocks * 4) if not source.mapped else None
        self._codec = None if self.codec == "none" else pa.Codec(self.codec)

    def _corrupt(self, what: str, key: bytes | None = None) -> CorruptStoreError:
        return CorruptStoreError(what, store=self.store, file=self.name, key=key)

    # ---- open: header, trailer, footer ---------------------------------------------------
    def _open(self, expected: dict | None) -> None:
        size = self.source.size
        if expected is not None and expected.get("size") is not None and size != expected["size"]:
            raise self._corrupt(f"file is {size} bytes, manifest says {expected['size']}")
        if size < HEADER.size + TRAILER.size:
            raise self._corrupt(f"file too small to be a partition ({size} bytes)")
        magic, version, _ = HEADER.unpack(self.source.read(0, HEADER.size))
        if magic != PARTITION_MAGIC:
            raise self._corrupt("bad magic number in header (not a kvio partition file)")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedFormatError(f"partition format version {version} not supported",
                                         store=self.store, file=self.name)
        trailer = bytes(self.source.read(size - TRAILER.size, TRAILER.size))
        f_off, f_len, f_sum, t_version, _flags, t_sum, t_magic = TRAILER.unpack(trailer)
        if t_magic != PARTITION_MAGIC or checksum(trailer[:32]) != t_sum:
            raise self._corrupt("trailer is damaged (magic or trailer checksum mismatch)")
        if t_version != version:
            raise self._corrupt("header and trailer disagree on the format version")
        if f_off + f_len + TRAILER.size != size:
            raise self._corrupt("footer position does not match the file size")
        if expected is not None and expected.get("footer_checksum") is not None \
                and f"{f_sum:016x}" != expected["footer_checksum"]:
            raise self._corrupt("footer checksum differs from the manifest (wrong or replaced file)")
        footer = bytes(self.source.read(f_off, f_len))
        if checksum(footer) != f_sum:
            raise self._corrupt("footer checksum mismatch")
        meta_len = int.from_bytes(footer[:8], "little")
        try:
            meta = json.loads(footer[8:8 + meta_len])
            nb, np_ = meta["blocks"], meta["index"]["pages"]
            pos = 8 + pad8(meta_len)
            counts = [nb, nb, nb, nb, nb + 1, nb + 1, np_]
            arrays = np.frombuffer(footer, dtype="<u8", count=sum(counts), offset=pos)
            pos += 8 * sum(counts)
            first_key_data = footer[pos:pos + meta["first_key_bytes"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(f"footer cannot be parsed: {exc}") from None
        parts, start = [], 0
        for c in counts:
            parts.append(arrays[start:start + c].tolist())
            start += c
        (self._block_offset, self._block_stored, self._block_raw, self._block_checksum,
         self._first_rows, fk_offsets, self._page_checksums) = parts
        self.first_keys = [first_key_data[fk_offsets[i]:fk_offsets[i + 1]] for i in range(nb)]
        self.meta = meta
        self.codec = meta["codec"]
        self.count = meta["count"]
        self.block_count = nb
        self.min_key = bytes.fromhex(meta["min_key"]) if meta["min_key"] is not None else None
        self.max_key = bytes.fromhex(meta["max_key"]) if meta["max_key"] is not None else None
        index = meta["index"]
        self._index_offset = index["offset"]
        self._home_slots = index["home_slots"]
        self.index_pages = np_
        self.footer_checksum = f"{f_sum:016x}"
        self.size = size
        if self._first_rows[-1] != self.count or index["total_slots"] != np_ * 256:
            raise self._corrupt("footer is inconsistent (row or slot counts)")
        if expected is not None:
            for field in ("count", "min_key", "max_key"):
                if field in expected and expected[field] != meta[field]:
                    raise self._corrupt(f"{field} in the file ({meta[field]}) differs from the manifest ({expected[field]})")

    # ---- verified pieces -----------------------------------------------------------------
    def _load_page(self, p: int) -> memoryview:
        if p >= self.index_pages:
            raise self._corrupt("hash index probe ran past the end of the index")
        page = self.source.read(self._index_offset + p * INDEX_PAGE_BYTES, INDEX_PAGE_BYTES)
        if len(page) != INDEX_PAGE_BYTES or (self.verify and checksum(page) != self._page_checksums[p]):
            raise self._corrupt(f"index page {p} checksum mismatch")
        self._pages[p] = page
        if self._page_lru is not None:
            self._page_lru.add(p)
        return page

    def _load_block(self, b: int) -> _Block:
        off, stored_len, raw_len = self._block_offset[b], self._block_stored[b], self._block_raw[b]
        stored_buf = self.source.read_buffer(off, stored_len)
        if stored_buf.size != stored_len or (self.verify and checksum(stored_buf) != self._block_checksum[b]):
            raise self._corrupt(f"block {b} checksum mismatch")
        if self._codec is not None:
            try:
                buf = self._codec.decompress(stored_buf, decompressed_size=raw_len)
            except (OSError, pa.ArrowException) as exc:
                raise self._corrupt(f"block {b} does not decompress: {exc}") from None
        else:
            buf = stored_buf
        n = self._first_rows[b + 1] - self._first_rows[b]
        view = memoryview(buf)
        try:
            koffs = np.frombuffer(buf, dtype="<i8", count=n + 1)
            kd = 8 * (n + 1)
            vo = kd + pad8(int(koffs[-1]))
            voffs = np.frombuffer(buf, dtype="<i8", count=n + 1, offset=vo)
            vd = vo + 8 * (n + 1)
            ok = (koffs[0] == 0 and voffs[0] == 0 and vd + pad8(int(voffs[-1])) == raw_len == buf.size
                  and bool(np.all(koffs[1:] >= koffs[:-1])) and bool(np.all(voffs[1:] >= voffs[:-1])))
        except ValueError:
            ok = False
        if not ok:
            raise self._corrupt(f"block {b} layout is inconsistent")
        block = _Block(n, view, buf, kd, vo, vd)
        self._blocks[b] = block
        if self._block_lru is not None:
            self._block_lru.add(b)
        return block

    # ---- point lookups ---------------------------------------------------------------------
    def get(self, key: bytes, default=None):
        h = key_hash(key)
        s = h % self._home_slots
        pages = self._pages
        while True:
            page = pages[s >> 8] or self._load_page(s >> 8)
            hv, row = _unpack_slot(page, (s & 255) << 4)
            if hv == h:
                if row >= self.count:
                    raise self._corrupt("index points past the last row", key)
                b = bisect_right(self._first_rows, row) - 1
                blk = self._blocks[b] or self._load_block(b)
                i = row - self._first_rows[b]
                view = blk.view
                ka, kb = _unpack_pair(view, i << 3)
                if view[blk.kd + ka:blk.kd + kb] == key:
                    va, vb = _unpack_pair(view, blk.vo + (i << 3))
                    return view[blk.vd + va:blk.vd + vb].tobytes()
            elif hv == 0:
                return default
            s += 1

    # ---- ordered access ---------------------------------------------------------------------
    def block(self, b: int) -> _Block:
        return self._blocks[b] or self._load_block(b)

    def key_at(self, blk: _Block, i: int) -> bytes:
        ka, kb = _unpack_pair(blk.view, i << 3)
        return blk.view[blk.kd + ka:blk.kd + kb].tobytes()

    def _row_at_or_after(self, key: bytes) -> tuple[int, int]:
        """(block, row in block) of the first key >= ``key``."""
        b = max(0, bisect_right(self.first_keys, key) - 1)
        while b < self.block_count:
            blk = self.block(b)
            lo, hi = 0, blk.n
            while lo < hi:
                mid = (lo + hi) // 2
                if self.key_at(blk, mid) < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < blk.n:
                return b, lo
            b += 1
        return self.block_count, 0

    def batch(self, b: int) -> pa.RecordBatch:
        """Block ``b`` as a RecordBatch of large_binary key/value columns (zero-copy)."""
        blk = self.block(b)
        n, buf = blk.n, blk.buffer
        keys = pa.Array.from_buffers(pa.large_binary(), n, [None, buf.slice(0, 8 * (n + 1)),
                                                            buf.slice(blk.kd, blk.vo - blk.kd)])
        values = pa.Array.from_buffers(pa.large_binary(), n, [None, buf.slice(blk.vo, 8 * (n + 1)),
                                                              buf.slice(blk.vd)])
        return pa.RecordBatch.from_arrays([keys, values], schema=SCHEMA)

    def block_range(self, start: bytes | None = None, stop: bytes | None = None) -> tuple[int, int]:
        """Blocks [first, last) that may hold keys in [start, stop)."""
        first = 0 if start is None else max(0, bisect_right(self.first_keys, start) - 1)
        last = self.block_count if stop is None else bisect_left(self.first_keys, stop)
        return first, max(first, last)

    def iter_batches(self, start: bytes | None = None, stop: bytes | None = None,
                     blocks: tuple[int, int] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches of keys in [start, stop), in key order, one per block touched.
        ``blocks`` restricts the scan to a block range (input splits)."""
        if self.count == 0:
            return
        lo_block, hi_block = blocks if blocks is not None else (0, self.block_count)
        first_b, last_b = self.block_range(start, stop)
        first_b, last_b = max(first_b, lo_block), min(last_b, hi_block)
        begin_row = 0
        if start is not None and first_b < last_b:
            rb, rr = self._row_at_or_after(start)
            if rb > first_b:
                first_b, begin_row = rb, rr
            elif rb == first_b:
                begin_row = rr
        for b in range(first_b, last_b):
            batch = self.batch(b)
            lo = begin_row if b == first_b else 0
            hi = batch.num_rows
            if stop is not None and (b == last_b - 1 or (b + 1 < self.block_count and self.first_keys[b + 1] >= stop)):
                blk = self.block(b)
                l2, h2 = lo, hi
                while l2 < h2:
                    mid = (l2 + h2) // 2
                    if self.key_at(blk, mid) < stop:
                        l2 = mid + 1
                    else:
                        h2 = mid
                hi = l2
            if hi > lo:
                yield batch.slice(lo, hi - lo) if (lo, hi) != (0, batch.num_rows) else batch
            if hi < batch.num_rows:
                return

    def verify_all(self) -> None:
        """Check every index page and block checksum and the key order (for `kvio verify`)."""
        for p in range(self.index_pages):
            page = self.source.read(self._index_offset + p * INDEX_PAGE_BYTES, INDEX_PAGE_BYTES)
            if checksum(page) != self._page_checksums[p]:
                raise self._corrupt(f"index page {p} checksum mismatch")
        previous = None
        for b in range(self.block_count):
            self._blocks[b] = None
            batch = self.batch(b)
            keys = batch.column(0)
            if self.key_at(self.block(b), 0) != self.first_keys[b]:
                raise self._corrupt(f"block {b} first key differs from the block index")
            if previous is not None and not previous < self.first_keys[b]:
                raise self._corrupt(f"block {b} starts at or before the previous block's last key",
                                    self.first_keys[b])
            if len(keys) > 1:
                import pyarrow.compute as pc
                ok = pc.all(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1))).as_py()
                if not ok:
                    raise self._corrupt(f"keys in block {b} are not strictly increasing")
            previous = self.key_at(self.block(b), batch.num_rows - 1)
        if self.count and (self.first_keys[0] != self.min_key or previous != self.max_key):
            raise self._corrupt("min/max keys in the footer differ from the data")

    def close(self) -> None:
        self._blocks = [None] * self.block_count
        self._pages = [None] * self.index_pages
        try:
            self.source.close()
        except BufferError:
            pass  # batches handed out still reference the mapping; Arrow frees it with them
