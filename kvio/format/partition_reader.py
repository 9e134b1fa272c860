"""Reads one partition file: point lookups through the hash index, ordered scans as Arrow.

Checksums are verified the first time each block or index page is touched (and the footer at
open), so a flipped byte raises CorruptStoreError instead of being returned. Files are
immutable, so a verified piece stays verified for the reader's lifetime.

Speed notes (docs/benchmarks.md and bench/NOTES.md have the figures and profiles). ``get`` is
a closure made once per reader with everything it needs in cells, so a lookup is one Python
call: XXH3 of the key, the home slot, slot reads through a ``memoryview`` cast to uint64 (no
struct unpacking; a probe stops early because slots are sorted by home slot), a small bucket
table from row to block, and key and value sliced straight from the ``mmap`` (one copy, the
returned value). A random hit is bound by memory latency: about five cold cache lines.
``get_many`` probes the index for all keys at once with numpy and gathers keys and values
with one Arrow ``take`` over the map.
"""
from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ..byteslike import as_bytes
from ..errors import CorruptStoreError, ReaderClosedError, UnsupportedFormatError
from .source import BufferSource, Source
from .spec import (
    CODECS,
    FLAG_TOMBSTONES,
    HEADER,
    INDEX_ALIGN,
    INDEX_HASH,
    INDEX_PAGE_BYTES,
    INDEX_PAGE_SLOTS,
    KNOWN_FLAGS,
    PARTITION_MAGIC,
    SUPPORTED_VERSIONS,
    TRAILER,
    align,
    checksum,
    pad8,
)

_xxh = xxhash.xxh3_64_intdigest
SCHEMA = pa.schema([pa.field("key", pa.large_binary(), nullable=False),
                    pa.field("value", pa.large_binary(), nullable=False)])
_PAGE_WORDS = INDEX_PAGE_BYTES // 8
#: below this many keys get_many loops over get (numpy set-up costs more than it saves: the
#: crossover measured on a 1M-key store with fresh random keys, bench/bench_serve.py)
_VECTOR_MIN = 150
#: hash-index slots get_many reads per key in one gather (a key whose run is longer is asked
#: of get); 8 slots of 16 bytes are two cache lines
_PROBE_WINDOW = 8
_PROBE_WORDS = np.arange(2 * _PROBE_WINDOW, dtype=np.int64)
_BYTES_TYPE = {bytes}
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})*")


class _Tombstone:
    """The type of :data:`TOMBSTONE`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TOMBSTONE"


#: What ``get``/``get_many`` of a tombstone file (docs/FORMAT.md §3.8) answer for a key the file
#: deletes: the key is absent, and partitions of lower priority must not be asked.
TOMBSTONE: Any = _Tombstone()
_ABSENT = object()


def as_key(obj: Any) -> bytes:
    return as_bytes(obj, "key")


class _Block:
    """A verified, decoded block.

    ``batch`` is the block as a RecordBatch of zero-copy large_binary arrays. ``hot`` is what
    point lookups need, as one tuple: (u64 view, bytes-sliceable raw, word index of the key
    offsets minus the block's first row, byte position of the key data, word index of the
    value offsets minus the first row, byte position of the value data), positions in ``raw``.
    """

    __slots__ = ("n", "r0", "batch", "hot")

    def __init__(self, n: int, r0: int, batch: pa.RecordBatch, hot: tuple):
        self.n, self.r0, self.batch, self.hot = n, r0, batch, hot


class _LRU:
    """Evicts from plain list caches (list lookup keeps the hot path fast)."""

    def __init__(self, slots: Sequence[list], capacity: int, on_evict: Callable[[int], None] | None = None):
        self.slots, self.capacity = slots, max(1, capacity)
        self.order: OrderedDict[int, None] = OrderedDict()
        self.on_evict = on_evict

    def add(self, i: int) -> None:
        self.order[i] = None
        self.order.move_to_end(i)
        while len(self.order) > self.capacity:
            old, _ = self.order.popitem(last=False)
            for slots in self.slots:
                slots[old] = None
            if self.on_evict is not None:
                self.on_evict(old)


class PartitionReader:
    #: ``get(key, default=None)``: the value of ``key`` or ``default`` (a closure per reader,
    #: made by ``_make_get``)
    get: Callable[..., Any]

    def __init__(self, source: Source, *, store: str | None = None, expected: dict | None = None,
                 verify: bool = True, cache_blocks: int = 256, read_ahead: int = 8 << 20):
        self.source = source
        #: bytes of consecutive blocks a scan of an unmapped (remote) file reads per request
        self.read_ahead = max(1, read_ahead)
        self.store = store
        self.name = source.name
        self.verify = verify
        self.closed = False
        self._open(expected)
        nb, npg = self.block_count, self.index_pages
        self._blocks: list = [None] * nb
        self._hot: list = [None] * nb
        # One spare None after the last page: a probe that runs off the end reaches
        # _load_page, which reports the corruption (a valid index always ends in an empty slot).
        self._pages: list = [None] * (npg + 1)
        self._page_ok = np.zeros(npg + 1, dtype=bool)
        self._page_ok_bytes = self._page_ok.data.cast("B")  # same flags, fast to index
        self._pages_verified = 0
        self._block_ok = np.zeros(nb, dtype=bool)
        self._all_blocks_ok = False  # (flat files only: their verified blocks are never evicted)
        self._codec = None if self.codec == "none" else pa.Codec(self.codec)
        self._mapped = source.mapped
        self._flat = self._mapped and self._codec is None  # blocks read in place from the map
        bounded = not self._flat
        self._block_lru = _LRU((self._blocks, self._hot), cache_blocks, self._evicted) if bounded else None
        self._page_lru = (None if self._mapped
                          else _LRU((self._pages,), cache_blocks * 4, self._page_evicted))
        self._first_rows_np = np.asarray(self._first_rows, dtype=np.int64)
        self._block_offset_np = self._block_offset
        if self._mapped:
            assert isinstance(source, BufferSource)  # the only Source whose ``mapped`` is True
            raw = source.raw
            self._raw = raw
            words = self.size // 8
            self._words = memoryview(raw)[:words * 8].cast("Q")
            self._u64 = np.frombuffer(self._words, dtype=np.uint64)
            ib = self._index_offset // 8
            self._table_words = self._u64[ib:ib + npg * _PAGE_WORDS]
            self._table = self._table_words.reshape(-1, 2)
            self._buffer = source.buffer
        self.get = self._make_get()
        if self.tombstones:
            self.get = self._tombstone_get(self.get)

    @staticmethod
    def _tombstone_get(lookup: Callable[..., Any]) -> Callable[..., Any]:
        def get(key: Any, default: Any = None) -> Any:
            return TOMBSTONE if lookup(key, _ABSENT) is not _ABSENT else default
        return get

    def _corrupt(self, what: str, key: bytes | None = None) -> CorruptStoreError:
        return CorruptStoreError(what, store=self.store, file=self.name, key=key)

    # ---- open: header, trailer, footer ---------------------------------------------------
    def _open(self, expected: dict | None) -> None:
        size = self.source.size
        if expected is not None and expected.get("size") is not None and size != expected["size"]:
            raise self._corrupt(f"file is {size} bytes, manifest says {expected['size']}")
        if size < HEADER.size + TRAILER.size:
            raise self._corrupt(f"file too small to be a partition ({size} bytes)")
        head = self.source.read_bytes(0, HEADER.size)
        trailer = self.source.read_bytes(size - TRAILER.size, TRAILER.size)
        if len(head) != HEADER.size or len(trailer) != TRAILER.size:  # remote: size is the manifest's
            raise self._corrupt(f"file is shorter than its recorded size of {size} bytes")
        magic, version, flags = HEADER.unpack(head)
        if magic != PARTITION_MAGIC:
            raise self._corrupt("bad magic number in header (not a kvio partition file)")
        f_off, f_len, f_sum, t_version, t_flags, t_sum, t_magic = TRAILER.unpack(trailer)
        if t_magic != PARTITION_MAGIC or checksum(trailer[:32]) != t_sum:
            self.source.discard(size - TRAILER.size, TRAILER.size)
            raise self._corrupt("trailer is damaged (magic or trailer checksum mismatch)")
        # The header has no checksum of its own: it is protected by agreeing with the
        # checksummed trailer. Only when both agree is an unknown version or flag a newer
        # writer rather than damage (docs/FORMAT.md §3.2, §7).
        if (version, flags) != (t_version, t_flags):
            raise self._corrupt(f"header (format version {version}, flags {flags:#x}) "
                                f"disagrees with the trailer (format version {t_version}, "
                                f"flags {t_flags:#x})")
        if version not in SUPPORTED_VERSIONS:
            raise UnsupportedFormatError(f"partition format version {version} not supported",
                                         store=self.store, file=self.name)
        if flags & ~KNOWN_FLAGS[version]:
            raise UnsupportedFormatError(f"partition uses flags {flags:#x} that format version "
                                         f"{version} does not define", store=self.store,
                                         file=self.name)
        #: True for a tombstone file: every row deletes its key (docs/FORMAT.md §3.8)
        self.tombstones = bool(flags & FLAG_TOMBSTONES)
        if expected is not None and bool(expected.get("tombstones", False)) != self.tombstones:
            raise self._corrupt(f"the file {'is' if self.tombstones else 'is not'} a tombstone "
                                "file, the manifest says otherwise")
        if f_off + f_len + TRAILER.size != size:
            raise self._corrupt("footer position does not match the file size")
        if expected is not None and expected.get("footer_checksum") is not None \
                and f"{f_sum:016x}" != expected["footer_checksum"]:
            raise self._corrupt("footer checksum differs from the manifest (wrong or replaced file)")
        footer = self.source.read_bytes(f_off, f_len)
        if checksum(footer) != f_sum:
            self.source.discard(f_off, f_len)
            raise self._corrupt("footer checksum mismatch")
        meta_len = int.from_bytes(footer[:8], "little")
        try:
            meta = json.loads(footer[8:8 + meta_len])
            nb, np_ = meta["blocks"], meta["index"]["pages"]
            fk_bytes = meta["first_key_bytes"]
            if not all(type(n) is int and n >= 0 for n in (nb, np_, fk_bytes)):
                raise ValueError("blocks, pages and first_key_bytes must be integers >= 0")
            pos = 8 + pad8(meta_len)
            counts = [nb, nb, nb, nb, nb + 1, nb + 1, np_]
            arrays = np.frombuffer(footer, dtype="<u8", count=sum(counts), offset=pos)
            pos += 8 * sum(counts)
            first_key_data = footer[pos:pos + fk_bytes]
            if pos + pad8(fk_bytes) != f_len:
                raise ValueError(f"footer is {f_len} bytes, its fields need {pos + pad8(fk_bytes)}")
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(f"footer cannot be parsed: {exc}") from None
        parts, start = [], 0
        for c in counts:
            parts.append(arrays[start:start + c])
            start += c
        self._check_meta(meta, version, parts[4], parts[5], fk_bytes, f_off)
        offsets, stored, raw, sums, first_rows, fk_offsets, page_sums = parts
        # Per-block fields stay numpy arrays (8 bytes an entry; a list of Python ints takes
        # about 36): remote stores have small blocks, so a partition has many. Only what every
        # lookup indexes (first rows) is a list, which indexes faster.
        self._block_offset = offsets.astype(np.int64)
        self._block_stored = stored.astype(np.int64)
        self._block_raw = raw.astype(np.int64)
        self._block_checksum = sums.copy()  # (a copy: a view would keep the whole footer)
        # (memory-mapped files answer lookups in about a microsecond, where a list's faster
        # indexing shows; ranged reads wait on the network)
        self._first_rows = first_rows.tolist() if self.source.mapped else first_rows.astype(np.int64)
        self._page_checksums = page_sums.tolist()
        fk_offsets = fk_offsets.tolist()
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
        if nb and self.first_keys[0] != self.min_key:
            raise self._corrupt("footer is inconsistent (first key of block 0 is not min_key)")
        if expected is not None:
            for field in ("count", "min_key", "max_key"):
                if field in expected and expected[field] != meta[field]:
                    raise self._corrupt(f"{field} in the file ({meta[field]}) differs from the manifest "
                                        f"({expected[field]})")

    def _check_meta(self, meta: dict, version: int, first_rows: np.ndarray, fk_offsets: np.ndarray,
                    fk_bytes: int, footer_offset: int) -> None:
        """The footer's fields against each other and the rules of docs/FORMAT.md §3.5: the
        footer checksum only says the writer wrote these bytes, not that it wrote them right."""
        index = meta.get("index")
        if meta.get("format_version") != version:
            raise self._corrupt(f"footer says format version {meta.get('format_version')}, "
                                f"header and trailer say {version}")
        if meta.get("codec") not in CODECS:
            raise UnsupportedFormatError(f"unknown block codec {meta.get('codec')!r}",
                                         store=self.store, file=self.name)
        if not isinstance(index, dict) or index.get("hash") != INDEX_HASH:
            raise UnsupportedFormatError(f"unknown index hash {index and index.get('hash')!r}",
                                         store=self.store, file=self.name)
        count, nb, np_ = meta.get("count"), meta["blocks"], index["pages"]
        if type(count) is not int or count < 0:
            raise self._corrupt(f"footer count {count!r} is not an integer >= 0")
        keys = (meta.get("min_key"), meta.get("max_key"))
        if count == 0:
            if nb or keys != (None, None):
                raise self._corrupt("footer is inconsistent (no rows, but blocks or key range)")
        elif not nb or not all(isinstance(k, str) and _LOWER_HEX.fullmatch(k) for k in keys):
            raise self._corrupt("footer is inconsistent (rows, but no blocks or min_key/max_key "
                                "not lowercase hex)")
        rows = np.diff(first_rows.astype(np.int64))
        if first_rows[0] != 0 or int(first_rows[-1]) != count or (rows <= 0).any():
            raise self._corrupt("footer is inconsistent (block first rows)")
        if fk_offsets[0] != 0 or int(fk_offsets[-1]) != fk_bytes \
                or (np.diff(fk_offsets.astype(np.int64)) < 0).any():
            raise self._corrupt("footer is inconsistent (first key offsets)")
        offset, home, total = index.get("offset"), index.get("home_slots"), index.get("total_slots")
        if not (type(offset) is int and type(home) is int and type(total) is int) \
                or total != np_ * INDEX_PAGE_SLOTS or not 0 < home < total:
            raise self._corrupt("footer is inconsistent (hash index slot counts)")
        if offset < INDEX_ALIGN or offset % INDEX_ALIGN \
                or offset + np_ * INDEX_PAGE_BYTES != footer_offset:
            raise self._corrupt("footer is inconsistent (hash index position)")

    # ---- verified pieces -----------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise ReaderClosedError("partition reader is closed", store=self.store, file=self.name)

    def _load_page(self, p: int) -> memoryview:
        self._check_open()
        if p >= self.index_pages:
            raise self._corrupt("hash index probe ran past the end of the index")
        start = self._index_offset + p * INDEX_PAGE_BYTES
        if self._mapped:
            data = self._words[start >> 3:(start >> 3) + _PAGE_WORDS]
        else:
            raw = self.source.read_bytes(start, INDEX_PAGE_BYTES)
            if len(raw) != INDEX_PAGE_BYTES:
                raise self._corrupt(f"index page {p} is truncated")
            data = memoryview(raw).cast("Q")
        if self.verify and checksum(data) != self._page_checksums[p]:
            self.source.discard(start, INDEX_PAGE_BYTES)
            raise self._corrupt(f"index page {p} checksum mismatch")
        if not self._page_ok[p]:
            self._pages_verified += 1
        self._pages[p] = data
        self._page_ok[p] = True
        if self._page_lru is not None:
            self._page_lru.add(p)
        return data

    def _page_evicted(self, p: int) -> None:
        self._page_ok[p] = False
        self._pages_verified -= 1

    def _evicted(self, b: int) -> None:
        self._block_ok[b] = False
        self._all_blocks_ok = False

    def _load_block(self, b: int, stored: Any = None) -> tuple:
        """Verify and decode block ``b`` (its stored bytes read now, or ``stored`` when a scan
        read them ahead); returns its ``hot`` tuple."""
        if self.closed:
            self._check_open()
        off, stored_len = int(self._block_offset[b]), int(self._block_stored[b])
        raw_len = int(self._block_raw[b])
        if off & 7 or off < HEADER.size or off + stored_len > self._index_offset:
            raise self._corrupt(f"block {b} lies outside the data region")
        if self._flat:
            stored = self._buffer.slice(off, stored_len)
        elif stored is None:
            stored = self.source.read_bytes(off, stored_len)
        if len(stored) != stored_len or (self.verify and checksum(stored) != int(self._block_checksum[b])):
            # A cache below the source must not keep serving these bytes: a damaged transfer
            # is then fetched again by the next reader instead of failing until evicted.
            self.source.discard(off, stored_len)
            raise self._corrupt(f"block {b} checksum mismatch")
        if self._codec is not None:
            try:
                stored = self._codec.decompress(stored, decompressed_size=raw_len, asbytes=True)
            except (OSError, pa.ArrowException) as exc:
                raise self._corrupt(f"block {b} does not decompress: {exc}") from None
        r0 = int(self._first_rows[b])
        n = int(self._first_rows[b + 1]) - r0
        kd = 8 * (n + 1)
        if len(stored) != raw_len or raw_len & 7 or raw_len < 2 * kd:
            raise self._corrupt(f"block {b} layout is inconsistent")
        if self._flat:
            words, raw, w, buffer = self._words, self._raw, off >> 3, stored
        else:
            words, raw, w, buffer = memoryview(stored).cast("Q"), stored, 0, pa.py_buffer(stored)
        # Region boundaries from the offsets' first and last entries; Arrow's full validation
        # then checks that each offsets array is monotonic and inside its data region.
        vo = kd + pad8(words[w + n])
        if vo + kd > raw_len:
            raise self._corrupt(f"block {b} layout is inconsistent")
        vd = vo + kd
        if words[w] or words[w + (vo >> 3)] or vd + pad8(words[w + (vo >> 3) + n]) != raw_len:
            raise self._corrupt(f"block {b} layout is inconsistent")
        keys = pa.Array.from_buffers(pa.large_binary(), n,
                                     [None, buffer.slice(0, kd), buffer.slice(kd, vo - kd)])
        values = pa.Array.from_buffers(pa.large_binary(), n, [None, buffer.slice(vo, kd), buffer.slice(vd)])
        try:
            keys.validate(full=True)
            values.validate(full=True)
        except pa.ArrowInvalid:
            raise self._corrupt(f"block {b} layout is inconsistent (offsets)") from None
        if self._flat:
            hot = (words, raw, w - r0, off + kd, w + (vo >> 3) - r0, off + vd)
        else:
            hot = (words, raw, -r0, kd, (vo >> 3) - r0, vd)
        self._blocks[b] = _Block(n, r0, pa.RecordBatch.from_arrays([keys, values], schema=SCHEMA), hot)
        self._hot[b] = hot
        self._block_ok[b] = True
        if self._block_lru is not None:
            self._block_lru.add(b)
        return hot

    # ---- point lookups ---------------------------------------------------------------------
    def _row_blocks(self) -> tuple[Any, int]:
        """(table, shift) for ``row -> block`` without a search: ``b = table[row >> shift]``,
        then at most one step to ``b + 1``. The shift makes a bucket of rows no larger than
        any block but the last, so a bucket straddles at most one block boundary; the table
        stays small (one entry per bucket) and in cache, so the lookup stays flat in size."""
        counts = np.diff(self._first_rows_np)
        smallest = int(counts[:-1].min()) if len(counts) > 1 else max(1, self.count)
        shift = min(16, max(0, smallest.bit_length() - 1))
        buckets = np.arange(0, self.count, 1 << shift, dtype=np.int64)
        dtype = np.uint16 if self.block_count <= 1 << 16 else np.uint32
        table = (np.searchsorted(self._first_rows_np, buckets, side="right") - 1).astype(dtype)
        return (table.data if len(table) else []), shift

    def _make_get(self) -> Callable[..., Any]:
        if self._mapped:
            return self._make_mapped_get()
        pages, load_page = self._pages, self._load_page
        hot_blocks, load_block = self._hot, self._load_block
        row_block, shift = self._row_blocks()
        first_rows, count, home_slots = self._first_rows, self.count, self._home_slots
        corrupt, xxh = self._corrupt, _xxh

        def get(key: bytes, default=None):
            """The value of ``key``, or ``default``."""
            try:
                h = xxh(key) or 1
            except TypeError:
                key = as_key(key)  # raises for str and other non-bytes
                h = xxh(key) or 1
            s = home = h % home_slots
            while True:
                page = pages[s >> 8] or load_page(s >> 8)
                o = (s & 255) << 1
                hv = page[o]
                if hv == h:
                    row = page[o + 1]
                    if row >= count:
                        raise corrupt("index points past the last row", key)
                    b = row_block[row >> shift]
                    if row >= first_rows[b + 1]:
                        b += 1
                    words, raw, kq, kd, vq, vd = hot_blocks[b] or load_block(b)
                    kq += row
                    vq += row
                    if raw[kd + words[kq]:kd + words[kq + 1]] == key:
                        return raw[vd + words[vq]:vd + words[vq + 1]]
                elif not hv or hv % home_slots > home:
                    # Slots are in home-slot order, so past our home's run the key is absent.
                    return default
                s += 1

        return get

    def _make_mapped_get(self) -> Callable[..., Any]:
        # The whole index is one uint64 view of the map; ``page_ok`` (one byte per page, kept
        # in step with ``_pages``) says which pages are verified. Few objects on the path means
        # few cache misses: a random lookup is bound by memory latency, not by bytecodes.
        words, page_ok, load_page = self._words, self._page_ok_bytes, self._load_page
        hot_blocks, load_block = self._hot, self._load_block
        row_block, shift = self._row_blocks()
        first_rows, home_slots, base = self._first_rows, self._home_slots, self._index_offset >> 3
        corrupt, xxh = self._corrupt, _xxh
        unverified = True  # until every index page is verified; then the check is skipped

        def verify_page(p: int) -> None:
            nonlocal unverified
            load_page(p)
            unverified = self._pages_verified < self.index_pages

        def get(key: bytes, default=None):
            """The value of ``key``, or ``default``."""
            try:  # (try blocks cost nothing until they catch)
                h = xxh(key) or 1
            except TypeError:
                key = as_key(key)  # raises for str and other non-bytes
                h = xxh(key) or 1
            home = h % home_slots
            if unverified and not page_ok[home >> 8]:
                verify_page(home >> 8)
            o = base + (home << 1)  # (``base`` is page-aligned: 512 words per index page)
            try:
                while True:
                    hv = words[o]
                    if hv == h:
                        row = words[o + 1]
                        b = row_block[row >> shift]  # IndexError past the last bucket
                        if row >= first_rows[b + 1]:
                            b += 1
                            if row >= first_rows[b + 1]:  # (IndexError past the last block)
                                raise IndexError(row)
                        bwords, raw, kq, kd, vq, vd = hot_blocks[b] or load_block(b)
                        kq += row
                        vq += row
                        # Both offset pairs, then both slices, before comparing: the loads
                        # are independent, so the CPU can overlap their cache misses.
                        ka, va = bwords[kq], bwords[vq]
                        found = raw[kd + ka:kd + bwords[kq + 1]]
                        value = raw[vd + va:vd + bwords[vq + 1]]
                        if found == key:
                            return value
                    elif not hv or hv % home_slots > home:
                        # Slots are in home-slot order: past our home's run the key is absent.
                        return default
                    o += 2
                    if not o & 511 and not page_ok[(o - base) >> 9]:
                        verify_page((o - base) >> 9)
            except IndexError:
                raise corrupt("index points past the last row", key) from None

        return get

    def get_many(self, keys: Sequence[bytes], default=None) -> list:
        """Values (or ``default``) for many keys, in order. On memory-mapped files the index is
        probed for all keys at once with numpy; only hashing, the key comparison and the value
        copy remain per key in Python.

        Args:
            keys: the keys (bytes-like).
            default: the answer for an absent key.

        Returns:
            One answer per key; in a tombstone file :data:`TOMBSTONE` for each key it deletes.

        Raises:
            CorruptStoreError: a checksum failed on the way.
            ReaderClosedError: the reader was closed.
        """
        if self.tombstones:
            return [default if v is _ABSENT else TOMBSTONE for v in self._get_many(keys, _ABSENT)]
        return self._get_many(keys, default)

    def _get_many(self, keys: Sequence[bytes], default=None) -> list:
        if type(keys) is not list or set(map(type, keys)) != _BYTES_TYPE:
            keys = [k if type(k) is bytes else as_key(k) for k in keys]
        n = len(keys)
        if not self._mapped or n < _VECTOR_MIN or self.count == 0:
            get = self.get
            return [get(k, default) for k in keys]
        self._check_open()
        fidx, rows, unresolved = self._probe(keys)
        out = [default] * n
        get = self.get
        if fidx.size and self._flat:
            fidx, values, same = self._gather_found(keys, fidx, rows)
            for i, value, ok in zip(fidx.tolist(), values.to_pylist(), same.tolist(), strict=True):
                # A differing key is a 64-bit hash collision: get() probes on past it.
                out[i] = value if ok else get(keys[i], default)
        elif fidx.size:
            if int(rows.max()) >= self.count:
                raise self._corrupt("index points past the last row")
            order = np.argsort(rows)  # file order: the reads walk the map forwards
            rows = rows[order].astype(np.int64)
            fidx = fidx[order]
            blocks = np.searchsorted(self._first_rows_np, rows, side="right") - 1
            hot_blocks, load_block = self._hot, self._load_block
            for i, row, b in zip(fidx.tolist(), rows.tolist(), blocks.tolist(), strict=True):
                key = keys[i]
                words, raw, kq, kd, vq, vd = hot_blocks[b] or load_block(b)
                kq += row
                if raw[kd + words[kq]:kd + words[kq + 1]] == key:
                    vq += row
                    out[i] = raw[vd + words[vq]:vd + words[vq + 1]]
                else:
                    out[i] = get(key, default)
        for i in unresolved.tolist():
            out[i] = get(keys[i], default)
        return out

    def get_many_array(self, keys: list[bytes], key_array: pa.Array | None = None) -> pa.Array:
        """The values of many keys as one ``large_binary`` Arrow array in input order, null for
        an absent key: :meth:`get_many` without a Python object per value (on an uncompressed
        mapped file the values are copied from the map by Arrow and never become ``bytes``).

        Args:
            keys: the keys, a list of ``bytes``.
            key_array: the same keys as a ``large_binary`` Arrow array, if the caller has one
                (the stored keys are compared with it without converting ``keys`` again).

        Returns:
            The values (a tombstone file answers as :meth:`get_many` would, so use this on
            files without tombstones).

        Raises:
            CorruptStoreError: a checksum failed on the way.
            ReaderClosedError: the reader was closed.
        """
        n = len(keys)
        if (self.tombstones or not self._flat or n < _VECTOR_MIN or self.count == 0
                or type(keys) is not list or set(map(type, keys)) != _BYTES_TYPE):
            return pa.array(self.get_many(keys), type=pa.large_binary())
        self._check_open()
        fidx, rows, unresolved = self._probe(keys)
        where = np.full(n, -1, dtype=np.int64)
        if fidx.size:
            fidx, values, same = self._gather_found(keys, fidx, rows, key_array)
            where[fidx] = np.arange(len(fidx), dtype=np.int64)
            if not same.all():
                unresolved = np.concatenate([unresolved, fidx[~same]])
        else:
            values = pa.array([], pa.large_binary())
        if unresolved.size:
            # A long probe run or a 64-bit hash collision: rare; get() settles those keys,
            # whose values are appended to the gathered ones.
            get = self.get
            extra = pa.array([get(keys[i]) for i in unresolved.tolist()], pa.large_binary())
            where[unresolved] = np.arange(len(values), len(values) + len(extra), dtype=np.int64)
            values = pa.concat_arrays([values, extra])
        # A null index takes a null: the absent keys.
        return values.take(pa.array(where, mask=where < 0))

    def _gather_found(self, keys: list[bytes], fidx: np.ndarray, rows: np.ndarray,
                      key_array: pa.Array | None = None) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """For keys whose hash the index found (uncompressed mapped files): the stored keys
        and values of their rows gathered from the map by Arrow.

        Returns:
            (the key indexes in file order, their stored values in that order, whether each
            stored key is the key asked: False only for a 64-bit hash collision).
        """
        if int(rows.max()) >= self.count:
            raise self._corrupt("index points past the last row")
        # In file order: the reads below then walk the map forwards (fewer cache/TLB misses).
        order = np.argsort(rows)
        rows = rows[order].astype(np.int64)
        fidx = fidx[order]
        blocks = np.searchsorted(self._first_rows_np, rows, side="right") - 1
        if not self._all_blocks_ok:
            self._ensure(blocks, self._block_ok, self._load_block)
            self._all_blocks_ok = bool(self._block_ok.all())
        words = self._u64
        # The positions of each row's offsets and data, as in _load_block's ``hot``.
        first = self._first_rows_np[blocks]
        off = self._block_offset_np[blocks]
        nrows = self._first_rows_np[blocks + 1] - first
        w = off >> 3
        kq = w - first + rows
        kd = off + 8 * (nrows + 1)
        vo = 8 * (nrows + 1) + ((words[w + nrows].astype(np.int64) + 7) & ~7)
        vq = w + (vo >> 3) - first + rows
        vd = off + vo + 8 * (nrows + 1)
        ks = kd + words[kq].astype(np.int64)
        ke = kd + words[kq + 1].astype(np.int64)
        vs = vd + words[vq].astype(np.int64)
        ve = vd + words[vq + 1].astype(np.int64)
        # Arrow gathers the stored keys and values (C loops, ascending addresses); rows are
        # unique here, so the ranges never overlap and stay in order.
        unique = np.ones(len(rows), dtype=bool)
        unique[1:] = rows[1:] != rows[:-1]
        if unique.all():
            stored_keys, stored_values = self._gather(ks, ke), self._gather(vs, ve)
        else:  # a key asked for more than once
            expand = pa.array(np.cumsum(unique) - 1)
            stored_keys = self._gather(ks[unique], ke[unique]).take(expand)
            stored_values = self._gather(vs[unique], ve[unique]).take(expand)
        if key_array is not None and key_array.type == pa.large_binary():
            asked = key_array.take(pa.array(fidx))
        else:
            asked = pa.array([keys[i] for i in fidx.tolist()], pa.large_binary())
        same = pc.equal(stored_keys, asked).to_numpy(zero_copy_only=False)
        return fidx, stored_values, same

    def _probe(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probe the (mapped) hash index for every key at once: each key's first
        :data:`_PROBE_WINDOW` slots from its home slot are read in one gather, and the first
        slot that holds its hash or ends its run (empty, or a later home slot) decides.

        Returns:
            (indexes of the keys whose hash was found, their rows, indexes of the keys the
            window did not decide: a longer run, or the end of the index; ask ``get``).
            Keys in neither are absent.

        Raises:
            CorruptStoreError: an index page that decided a key fails its checksum.
        """
        n = len(keys)
        hashes = np.fromiter(map(_xxh, keys), dtype=np.uint64, count=n)
        hashes[hashes == 0] = 1
        m = np.uint64(self._home_slots)
        homes = hashes % m
        first = homes.astype(np.int64)
        total = self.index_pages * INDEX_PAGE_SLOTS
        # Slots past the end are clipped to the last one; keys whose window reaches that far
        # are left to get(), which reports a probe that runs off the end.
        window = np.minimum(first[:, None] * 2 + _PROBE_WORDS, 2 * total - 1)
        # (np.take of the flat words: twice as fast as fancy indexing of the 2-D table)
        slots = np.take(self._table_words, window).reshape(n, _PROBE_WINDOW, 2)  # hash, row
        hv = slots[:, :, 0]
        hit = hv == hashes[:, None]
        decided = hit | (hv == 0) | (hv % m > homes[:, None])
        pos = decided.argmax(axis=1)                  # the first deciding slot (0 if none)
        keys_idx = np.arange(n)
        ok = decided[keys_idx, pos] & (first <= total - _PROBE_WINDOW)
        if self._pages_verified < self.index_pages:
            # Verify the pages the deciding probes read before using them: the home slot's
            # page and the deciding slot's (a window spans at most two pages).
            self._ensure(first[ok] >> 8, self._page_ok, self._load_page)
            self._ensure((first + pos)[ok] >> 8, self._page_ok, self._load_page)
        found = ok & hit[keys_idx, pos]
        fidx = np.flatnonzero(found)
        return fidx, slots[fidx, pos[fidx], 1], np.flatnonzero(~ok)

    def _gather(self, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
        """The byte ranges [starts[i], ends[i]) of the mapped file (ascending, disjoint) as
        one large_binary array, copying only those bytes."""
        m = len(starts)
        if m == 0:
            return pa.array([], pa.large_binary())
        offsets = np.empty(2 * m, dtype=np.int64)
        offsets[0::2] = starts
        offsets[1::2] = ends
        # Elements alternate between a wanted range and the gap before the next one.
        spans = pa.Array.from_buffers(pa.large_binary(), 2 * m - 1,
                                      [None, pa.py_buffer(offsets), self._buffer])
        return spans.take(pa.array(np.arange(0, 2 * m - 1, 2)))

    @staticmethod
    def _ensure(which: np.ndarray, ok: np.ndarray, load: Callable[[int], Any]) -> None:
        """Verify (load) every page or block in ``which`` that is not verified yet."""
        missing = which[~ok[which]]
        if missing.size:
            for i in np.unique(missing).tolist():
                load(i)

    # ---- ordered access ---------------------------------------------------------------------
    def block(self, b: int) -> _Block:
        blk = self._blocks[b]
        if blk is None:
            self._load_block(b)
            blk = self._blocks[b]
        return blk

    def _scan_blocks(self, first: int, last: int) -> Iterator[_Block]:
        """Blocks ``first`` to ``last - 1`` in order. An unmapped file is read ahead: one
        request fetches as many consecutive blocks as fit in ``read_ahead`` bytes (at least
        one), so a remote scan costs a request per few MiB, not one per (small) block. Each
        block is verified when it is decoded, as with :meth:`block`."""
        if self._mapped:
            for b in range(first, last):
                yield self.block(b)
            return
        offsets, stored = self._block_offset, self._block_stored
        window: bytes | None = None
        w_lo = w_hi = base = 0  # blocks [w_lo, w_hi) are in ``window`` (None: read one by one)
        for b in range(first, last):
            blk = self._blocks[b]
            if blk is None:
                if not w_lo <= b < w_hi:
                    end = b + 1
                    limit = offsets[b] + self.read_ahead
                    while end < last and self._blocks[end] is None \
                            and offsets[end] + stored[end] <= limit:
                        end += 1
                    base = int(offsets[b])
                    window = self.source.read_uncached(base, int(offsets[end - 1] + stored[end - 1]) - base) \
                        if end - b > 1 else None
                    w_lo, w_hi = b, end
                lo = int(offsets[b]) - base
                piece = None if window is None else window[lo:lo + int(stored[b])]
                self._load_block(b, piece)
                blk = self._blocks[b]
            yield blk

    def key_at(self, blk: _Block, i: int) -> bytes:
        words, raw, kq, kd, _, _ = blk.hot
        kq += blk.r0 + i
        return raw[kd + words[kq]:kd + words[kq + 1]]

    def batch(self, b: int) -> pa.RecordBatch:
        """Block ``b`` as a RecordBatch of large_binary key/value columns (zero-copy)."""
        return self.block(b).batch

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
        # The first block may start before ``start``: its first row is searched once the
        # block is read (with the blocks after it, when read ahead). A block whose keys are all
        # below ``start`` yields nothing; the next one then starts above it (bisect_right).
        begin = b"" if start is None else start
        search = begin != b"" and first_b < last_b and self.first_keys[first_b] < begin
        for b, blk in enumerate(self._scan_blocks(first_b, last_b), first_b):
            batch = blk.batch
            lo = 0
            if search and b == first_b:
                hi = blk.n
                while lo < hi:
                    mid = (lo + hi) // 2
                    if self.key_at(blk, mid) < begin:
                        lo = mid + 1
                    else:
                        hi = mid
            hi = blk.n
            if stop is not None and (b == last_b - 1 or (b + 1 < self.block_count
                                                         and self.first_keys[b + 1] >= stop)):
                l2, h2 = lo, hi
                while l2 < h2:
                    mid = (l2 + h2) // 2
                    if self.key_at(blk, mid) < stop:
                        l2 = mid + 1
                    else:
                        h2 = mid
                hi = l2
            if hi > lo:
                yield batch.slice(lo, hi - lo) if (lo, hi) != (0, blk.n) else batch
            if hi < blk.n:
                return

    def verify_all(self) -> None:
        """Check every byte of the file (for ``kvio verify``): every index page and block
        checksum, the key order, and the layout and zero padding between the blocks.

        Raises:
            CorruptStoreError: naming this file, at the first problem found.
            ReaderClosedError: the reader was closed.
        """
        self._check_open()
        self._verify_layout()
        read = self._forward_reader(self._index_offset + self.index_pages * INDEX_PAGE_BYTES)
        for p in range(self.index_pages):
            start = self._index_offset + p * INDEX_PAGE_BYTES
            page = read(start, INDEX_PAGE_BYTES)
            if len(page) != INDEX_PAGE_BYTES or checksum(page) != self._page_checksums[p]:
                raise self._corrupt(f"index page {p} checksum mismatch")
        previous = None
        self._blocks[:] = [None] * self.block_count  # (every block is verified again)
        self._hot[:] = [None] * self.block_count
        for b, blk in enumerate(self._scan_blocks(0, self.block_count)):
            batch = blk.batch
            keys = batch.column(0)
            if self.key_at(blk, 0) != self.first_keys[b]:
                raise self._corrupt(f"block {b} first key differs from the block index")
            if previous is not None and not previous < self.first_keys[b]:
                raise self._corrupt(f"block {b} starts at or before the previous block's last key",
                                    self.first_keys[b])
            if len(keys) > 1:
                ok = pc.all(pc.less(keys.slice(0, len(keys) - 1), keys.slice(1))).as_py()
                if not ok:
                    raise self._corrupt(f"keys in block {b} are not strictly increasing")
            if self.tombstones and pc.sum(pc.binary_length(batch.column(1))).as_py():
                raise self._corrupt(f"block {b} of a tombstone file holds a non-empty value")
            previous = self.key_at(blk, blk.n - 1)
        if self.count and (self.first_keys[0] != self.min_key or previous != self.max_key):
            raise self._corrupt("min/max keys in the footer differ from the data")

    def _verify_layout(self) -> None:
        """Blocks lie back to back from the header on, each followed by zero padding to 8 bytes,
        then zero padding up to the 4 KiB aligned index (docs/FORMAT.md §3.1). These padding
        bytes are the only ones no checksum covers; readers never use them, verify checks them
        so that no byte of a file escapes verification."""
        pos, gaps = HEADER.size, []
        for b in range(self.block_count):
            off = int(self._block_offset[b])
            end = off + int(self._block_stored[b])
            if off != pos:
                raise self._corrupt(f"block {b} starts at offset {off}, the layout puts it "
                                    f"at {pos}")
            gaps.append((end, pad8(end)))
            pos = pad8(end)
        if self._index_offset != align(pos, INDEX_ALIGN):
            raise self._corrupt(f"hash index starts at offset {self._index_offset}, the layout "
                                f"puts it at {align(pos, INDEX_ALIGN)}")
        gaps.append((pos, self._index_offset))
        read = self._forward_reader(self._index_offset)
        for lo, hi in gaps:
            if hi > lo and bytes(read(lo, hi - lo)) != bytes(hi - lo):
                raise self._corrupt(f"padding bytes {lo}..{hi - 1} are not zero")

    def _forward_reader(self, limit: int) -> Callable[[int, int], bytes]:
        """``read(offset, length)`` for one forward pass over pieces that end before ``limit``.
        A mapped file is sliced; an unmapped (remote) one is fetched ``read_ahead`` bytes at a
        time, so verifying a remote file costs a request per few MiB, not one per small piece
        (its data region is fetched twice: once for the padding, once for the blocks)."""
        if self._mapped:
            return self.source.read_bytes
        window: list = [0, b""]  # base offset, bytes

        def read(offset: int, length: int) -> bytes:
            base, data = window
            if not base <= offset or offset + length > base + len(data):
                size = max(length, min(self.read_ahead, limit - offset))
                base, data = offset, self.source.read_uncached(offset, size)
                window[:] = [base, data]
            return data[offset - base:offset - base + length]
        return read

    def _closed_get(self, key: Any, default: Any = None) -> Any:
        raise ReaderClosedError("partition reader is closed", store=self.store, file=self.name)

    def close(self) -> None:
        """Release the file (idempotent); later lookups raise ReaderClosedError."""
        if self.closed:
            return
        self.closed = True
        # Emptied in place: the lookup closure holds these lists and then fails cleanly.
        self._blocks[:] = [None] * len(self._blocks)
        self._hot[:] = [None] * len(self._hot)
        self._pages[:] = [None] * len(self._pages)
        self._page_ok[:] = False
        self._pages_verified = 0
        self._block_ok[:] = False
        # Drop everything that holds a buffer export of the mapping (the lookup closure, the
        # Arrow buffer, the LRUs' bound methods that make a reference cycle), so that the map
        # -- and, before Python 3.13, its file descriptor -- is released now, not at the next
        # garbage collection: a reader that keeps a bounded number of partitions open relies
        # on that.
        self.get = self._closed_get
        self._block_lru = self._page_lru = None
        if self._mapped:
            del self._table, self._table_words, self._u64, self._buffer, self._raw
            self._words.release()
        try:
            self.source.close()
        except BufferError:
            pass  # batches handed out still reference the mapping; it is freed with them
