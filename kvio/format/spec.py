"""Constants and fixed-size structures of format version 1 (docs/FORMAT.md is the authority)."""
from __future__ import annotations

import struct

import xxhash

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

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

#: Flag bits (header and trailer ``flags``) defined by each supported format version. Version 1
#: defines none, so a set bit means a newer writer (docs/FORMAT.md §3.1).
KNOWN_FLAGS = {1: 0}


def checksum(data) -> int:
    """XXH3-64 (seed 0) of a bytes-like object: every checksum in the format."""
    return xxhash.xxh3_64_intdigest(data)


def key_hash(key: bytes) -> int:
    """The index hash of a key: XXH3-64, with 0 (the empty-slot marker) mapped to 1."""
    return xxhash.xxh3_64_intdigest(key) or 1


def pad8(n: int) -> int:
    return (n + 7) & ~7


def align(n: int, to: int) -> int:
    return (n + to - 1) // to * to
