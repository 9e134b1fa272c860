"""Constants and fixed-size structures of the format (docs/FORMAT.md is the authority)."""
from __future__ import annotations

import struct

import xxhash

#: The version of documents and of partition files without tombstones. Writers keep writing 1
#: for those, so that readers that know only version 1 keep reading them.
FORMAT_VERSION = 1
#: The partition format version of files holding tombstones (docs/FORMAT.md §3.8).
TOMBSTONE_FORMAT_VERSION = 2
#: Partition format versions this reader knows.
SUPPORTED_VERSIONS = frozenset({1, 2})
#: Document (marker, commit record, manifest, pin) format versions this reader knows.
DOCUMENT_VERSIONS = frozenset({1})

PARTITION_MAGIC = b"KVIOPART"
PARTITION_SUFFIX = ".kvp"

#: header: magic (8) | format version u32 | flags u32
HEADER = struct.Struct("<8sII")
#: trailer: footer offset u64 | footer length u64 | footer checksum u64 | format version u32 |
#: flags u32 | trailer checksum u64 (over the 32 bytes before it) | magic (8)
TRAILER = struct.Struct("<QQQIIQ8s")

INDEX_PAGE_SLOTS = 256          # 256 slots x 16 bytes = one 4 KiB page, the unit of index checksums
SLOT = struct.Struct("<QQ")     # key hash (0 = empty slot), row number within the partition
INDEX_PAGE_BYTES = INDEX_PAGE_SLOTS * SLOT.size
INDEX_ALIGN = 4096

CODECS = ("none", "zstd", "lz4")
INDEX_HASH = "xxh3_64"

#: Flag bit of format version 2: every row of the file is a tombstone (a deletion marker whose
#: value is empty), docs/FORMAT.md §3.8.
FLAG_TOMBSTONES = 1

#: Flag bits (header and trailer ``flags``) defined by each supported format version. Version 1
#: defines none, so a set bit means a newer writer (docs/FORMAT.md §3.2).
KNOWN_FLAGS = {1: 0, 2: FLAG_TOMBSTONES}


def checksum(data) -> int:
    """Every checksum in the format (docs/FORMAT.md conventions).

    Args:
        data: a bytes-like object.

    Returns:
        XXH3-64 with seed 0, as an unsigned 64-bit integer.
    """
    return xxhash.xxh3_64_intdigest(data)


def key_hash(key: bytes) -> int:
    """The hash index's hash of a key (docs/FORMAT.md §3.6).

    Args:
        key: the key.

    Returns:
        XXH3-64 of the key, with 0 (the empty-slot marker) replaced by 1.
    """
    return xxhash.xxh3_64_intdigest(key) or 1


def pad8(n: int) -> int:
    """``n`` rounded up to a multiple of 8.

    Args:
        n: a length or offset (>= 0).

    Returns:
        The padded value.
    """
    return (n + 7) & ~7


def align(n: int, to: int) -> int:
    """``n`` rounded up to a multiple of ``to``.

    Args:
        n: a length or offset (>= 0).
        to: the alignment (> 0).

    Returns:
        The aligned value.
    """
    return (n + to - 1) // to * to
