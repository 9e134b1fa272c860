"""Writes one partition file: header, sorted data blocks, hash index, footer, trailer.

The caller guarantees keys arrive strictly increasing (the store writer checks and names the
store); this class only lays bytes out. Memory use is one block plus 8 bytes per key for the
index hashes, so it is bounded by the partition size limit, not by the store size.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import IO

import numpy as np
import pyarrow as pa
import xxhash

from .. import __version__
from .hash_index import build_index
from .spec import (
    FLAG_TOMBSTONES,
    FORMAT_VERSION,
    HEADER,
    INDEX_ALIGN,
    PARTITION_MAGIC,
    TOMBSTONE_FORMAT_VERSION,
    TRAILER,
    align,
    checksum,
    pad8,
)

_xxh = xxhash.xxh3_64_intdigest

_ZEROS = bytes(INDEX_ALIGN)
_FLUSH_BYTES = 1 << 20
_IOV_MAX = 512


def key_hashes(keys) -> np.ndarray:
    """XXH3-64 of each key as uint64 (0 not yet replaced by 1: the writer does that in bulk)."""
    return np.fromiter(map(_xxh, keys), dtype=np.uint64, count=len(keys))


def _offsets_of(items: Sequence[bytes]) -> np.ndarray:
    offsets = np.zeros(len(items) + 1, dtype="<i8")
    np.cumsum(np.fromiter(map(len, items), dtype=np.int64, count=len(items)), out=offsets[1:])
    return offsets


class PartitionWriter:
    """Lays out one partition file on ``out``.

    Args:
        out: a binary file object (or buffer) written front to back.
        codec: block codec, ``none``, ``zstd`` or ``lz4``.
        level: compression level (0: the codec's default).
        load_factor: hash index load factor.
        tombstones: write a tombstone file (format version 2, docs/FORMAT.md §3.8): every row
            deletes its key and every value must be empty. Other files stay version 1.
    """

    def __init__(self, out: IO[bytes], *, codec: str = "none", level: int = 0,
                 load_factor: float = 0.7, tombstones: bool = False):
        self._out = out
        self.tombstones = tombstones
        self._version = TOMBSTONE_FORMAT_VERSION if tombstones else FORMAT_VERSION
        self._flags = FLAG_TOMBSTONES if tombstones else 0
        self._pos = 0
        self._pending: list = []
        self._pending_bytes = 0
        try:
            out.flush()
            self._fd: int | None = out.fileno()
        except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is an OSError)
            self._fd = None
        self._codec_name = codec
        self._codec = None if codec == "none" else pa.Codec(codec, compression_level=level or None)
        self._load_factor = load_factor
        self._block_offset: list[int] = []
        self._block_stored: list[int] = []
        self._block_raw: list[int] = []
        self._block_checksum: list[int] = []
        self._first_rows: list[int] = [0]
        self._first_keys: list[bytes] = []
        self._hashes: list[np.ndarray] = []
        self.count = 0
        self.min_key: bytes | None = None
        self.max_key: bytes | None = None
        self._write(HEADER.pack(PARTITION_MAGIC, self._version, self._flags))

    def _write(self, data) -> None:
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        self._pending.append(data)
        self._pending_bytes += size
        self._pos += size
        if self._pending_bytes >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Hand the pending pieces to the file: one writev per ~1 MiB when the file has a
        descriptor (no joined copy, few syscalls), else ordinary writes."""
        pieces, self._pending, self._pending_bytes = self._pending, [], 0
        if self._fd is None:
            self._out.writelines(pieces)
            return
        views = [v for v in (memoryview(p).cast("B") for p in pieces) if v.nbytes]
        while views:
            done = os.writev(self._fd, views[:_IOV_MAX])
            while views and done >= views[0].nbytes:
                done -= views[0].nbytes
                views.pop(0)
            if done:
                views[0] = views[0][done:]

    @property
    def estimated_size(self) -> int:
        """Bytes the file will have if finished now (data so far + index + small footer)."""
        index = int(self.count / self._load_factor * 16) + INDEX_ALIGN
        return self._pos + index + 48 * (len(self._block_offset) + 1) + 1024

    def write_pairs(self, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        """One block from Python lists of keys and values (equal lengths, keys sorted)."""
        if not keys:
            return
        self.write_block(_offsets_of(keys), b"".join(keys), _offsets_of(values), b"".join(values),
                         key_hashes(keys), keys[0], keys[-1])

    def write_columns(self, keys: Sequence[bytes], key_offsets: np.ndarray, key_data,
                      value_offsets: np.ndarray, value_data) -> None:
        """One block from Arrow-style columns (int64 offsets starting at 0, data buffers);
        ``keys`` are the same keys as Python bytes, used for hashing and the block's first key."""
        if not keys:
            return
        self.write_block(key_offsets, key_data, value_offsets, value_data, key_hashes(keys),
                         keys[0], keys[-1])

    def write_block(self, koffs: np.ndarray, kdata, voffs: np.ndarray, vdata, hashes: np.ndarray,
                    first_key: bytes, last_key: bytes) -> None:
        """One block of ``n = len(hashes)`` rows: int64 offsets starting at 0 and data buffers
        for keys and values, the keys' XXH3-64 hashes (``key_hashes``; 0 is allowed here) and
        the first and last key."""
        self._write_block(koffs, kdata, voffs, vdata, hashes, first_key, last_key)

    def _write_block(self, koffs, kdata, voffs, vdata, hashes, first_key, last_key) -> None:
        n = len(hashes)
        if not n:
            return
        klen, vlen = int(koffs[-1]), int(voffs[-1])
        if self.tombstones and vlen:
            raise ValueError("a tombstone partition holds empty values only")
        pieces = (koffs.astype("<i8", copy=False).data, kdata, _ZEROS[:pad8(klen) - klen],
                  voffs.astype("<i8", copy=False).data, vdata, _ZEROS[:pad8(vlen) - vlen])
        raw_len = 16 * (n + 1) + pad8(klen) + pad8(vlen)
        offset = self._pos
        if self._codec is not None:
            stored = self._codec.compress(b"".join(pieces), asbytes=True)
            stored_sum = checksum(stored)
            self._write(stored)
            stored_len = len(stored)
        else:
            # Uncompressed: hash and write the pieces as they are (no joined copy of the block).
            hasher = xxhash.xxh3_64()
            for piece in pieces:
                hasher.update(piece)
            stored_sum = hasher.intdigest()
            for piece in pieces:
                self._write(piece)
            stored_len = raw_len
        self._write(_ZEROS[:pad8(stored_len) - stored_len])
        self._block_offset.append(offset)
        self._block_stored.append(stored_len)
        self._block_raw.append(raw_len)
        self._block_checksum.append(stored_sum)
        self._hashes.append(hashes)
        self.count += n
        self._first_rows.append(self.count)
        self._first_keys.append(bytes(first_key))
        if self.min_key is None:
            self.min_key = bytes(first_key)
        self.max_key = bytes(last_key)

    def finish(self) -> dict:
        """Write index, footer and trailer; return what the manifest records about the file."""
        self._write(_ZEROS[:align(self._pos, INDEX_ALIGN) - self._pos])
        index_offset = self._pos
        hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.uint64)
        hashes[hashes == 0] = 1  # spec.key_hash: 0 marks an empty slot
        self._hashes = []
        index = build_index(hashes, self._load_factor)
        page_checksums = [checksum(page) for page in index.pages()]
        self._write(index.table.data.cast("B"))

        nb = len(self._block_offset)
        first_key_offsets = _offsets_of(self._first_keys)
        first_key_data = b"".join(self._first_keys)
        meta = {
            "format_version": self._version,
            "codec": self._codec_name,
            "count": self.count,
            "min_key": self.min_key.hex() if self.min_key is not None else None,
            "max_key": self.max_key.hex() if self.max_key is not None else None,
            "blocks": nb,
            "first_key_bytes": len(first_key_data),
            "index": {"offset": index_offset, "home_slots": index.home_slots,
                      "total_slots": index.total_slots, "pages": len(page_checksums),
                      "hash": "xxh3_64"},
            "writer": f"kvio {__version__}",
        }
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        arrays = np.concatenate([
            np.asarray(self._block_offset, dtype="<u8"), np.asarray(self._block_stored, dtype="<u8"),
            np.asarray(self._block_raw, dtype="<u8"), np.asarray(self._block_checksum, dtype="<u8"),
            np.asarray(self._first_rows, dtype="<u8"), first_key_offsets.astype("<u8"),
            np.asarray(page_checksums, dtype="<u8"),
        ]).astype("<u8")
        footer = b"".join((len(meta_bytes).to_bytes(8, "little"), meta_bytes,
                           _ZEROS[:pad8(len(meta_bytes)) - len(meta_bytes)], arrays.tobytes(),
                           first_key_data, _ZEROS[:pad8(len(first_key_data)) - len(first_key_data)]))
        footer_offset = self._pos
        footer_checksum = checksum(footer)
        self._write(footer)
        head = TRAILER.pack(footer_offset, len(footer), footer_checksum, self._version,
                            self._flags, 0, PARTITION_MAGIC)
        trailer_checksum = checksum(head[:32])
        self._write(TRAILER.pack(footer_offset, len(footer), footer_checksum, self._version,
                                 self._flags, trailer_checksum, PARTITION_MAGIC))
        self._flush()
        info = {
            "count": self.count,
            "min_key": meta["min_key"],
            "max_key": meta["max_key"],
            "size": self._pos,
            "footer_checksum": f"{footer_checksum:016x}",
        }
        if self.tombstones:
            info["tombstones"] = True
        return info
