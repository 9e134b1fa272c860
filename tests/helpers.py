"""Helpers shared by the core tests: a reference parser of partition files (written from the
format spec, independent of kvio's reader), a dict model of a store and comparison routines."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

import kvio
from kvio.format.spec import HEADER, INDEX_PAGE_BYTES, TRAILER, pad8


def key4(i: int) -> bytes:
    """4-byte big-endian keys sort like their integers (the Alluxio smoke test's keys)."""
    return i.to_bytes(4, "big")


def write_store(kvs: kvio.KeyValueSystem, uri: str, pairs, mode: str = "error") -> dict:
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(pairs)
    return writer.record


# ---- the model ------------------------------------------------------------------------------
def prefix_bounds(prefix: bytes) -> tuple[bytes, bytes | None]:
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return prefix, None
    return prefix, trimmed[:-1] + bytes([trimmed[-1] + 1])


def model_range(model: dict[bytes, bytes], start=None, stop=None, prefix=None) -> list[tuple[bytes, bytes]]:
    """What items(start, stop, prefix) must return, computed the slow, obvious way."""
    out = []
    for k in sorted(model):
        if start is not None and k < start:
            continue
        if stop is not None and k >= stop:
            continue
        if prefix is not None and not k.startswith(prefix):
            continue
        out.append((k, model[k]))
    return out


def assert_matches_model(reader, model: dict[bytes, bytes], absent=(), ranges=(), prefixes=()) -> None:
    """Every read API of ``reader`` agrees with the dict ``model``."""
    expected = sorted(model.items())
    assert len(reader) == len(model)
    assert list(reader) == [k for k, _ in expected]
    assert list(reader.items()) == expected
    assert list(reader.keys()) == [k for k, _ in expected]
    for k, v in expected:
        assert reader.get(k) == v
        assert reader[k] == v
        assert k in reader
    for k in absent:
        if k in model:
            continue
        assert reader.get(k) is None
        assert reader.get(k, b"default") == b"default"
        assert k not in reader
    probes = [k for k, _ in expected] + [k for k in absent]
    assert reader.get_many(probes) == [model.get(k) for k in probes]
    for start, stop in ranges:
        assert list(reader.items(start, stop)) == model_range(model, start, stop), (start, stop)
    for prefix in prefixes:
        assert list(reader.items(prefix=prefix)) == model_range(model, prefix=prefix), prefix
        for start, stop in list(ranges)[:3]:  # a prefix narrows [start, stop) further
            assert list(reader.items(start, stop, prefix)) == model_range(model, start, stop, prefix), \
                (start, stop, prefix)
    if expected:
        table = reader.to_table()
        assert table.column("key").to_pylist() == [k for k, _ in expected]
        assert table.column("value").to_pylist() == [v for _, v in expected]


def sizes_in(message: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", message)]


# ---- reference parser of partition files -------------------------------------------------------
@dataclass
class PartitionLayout:
    size: int
    version: int
    meta: dict
    block_offset: list[int]
    block_stored: list[int]
    block_raw: list[int]
    block_checksum: list[int]
    first_rows: list[int]
    first_keys: list[bytes]
    page_checksums: list[int]
    index_offset: int
    footer_offset: int
    footer_length: int
    footer_checksum: int
    regions: list[tuple[str, int, int]] = field(default_factory=list)


def parse_partition(data: bytes) -> PartitionLayout:
    """Parse a partition file by the spec: header | blocks | 4 KiB aligned index | footer | trailer."""
    magic, version, _flags = HEADER.unpack_from(data, 0)
    assert magic == b"KVIOPART"
    trailer = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    f_off, f_len, f_sum, t_version, _t_flags, _t_sum, t_magic = trailer
    assert t_magic == b"KVIOPART" and t_version == version
    footer = data[f_off:f_off + f_len]
    meta_len = int.from_bytes(footer[:8], "little")
    meta = json.loads(footer[8:8 + meta_len])
    nb, npages = meta["blocks"], meta["index"]["pages"]
    counts = [nb, nb, nb, nb, nb + 1, nb + 1, npages]
    arrays = np.frombuffer(footer, dtype="<u8", count=sum(counts), offset=8 + pad8(meta_len))
    parts, pos = [], 0
    for c in counts:
        parts.append([int(x) for x in arrays[pos:pos + c]])
        pos += c
    offset, stored, raw, sums, first_rows, fk_offsets, pages = parts
    fk_start = 8 + pad8(meta_len) + 8 * sum(counts)
    fk_data = footer[fk_start:fk_start + meta["first_key_bytes"]]
    first_keys = [fk_data[fk_offsets[i]:fk_offsets[i + 1]] for i in range(nb)]
    index_offset = meta["index"]["offset"]
    regions = [("header", 0, HEADER.size)]
    regions += [(f"block {b}", offset[b], offset[b] + stored[b]) for b in range(nb)]
    regions += [(f"index page {p}", index_offset + p * INDEX_PAGE_BYTES,
                 index_offset + (p + 1) * INDEX_PAGE_BYTES) for p in range(npages)]
    regions += [("footer", f_off, f_off + f_len), ("trailer", len(data) - TRAILER.size, len(data))]
    return PartitionLayout(len(data), version, meta, offset, stored, raw, sums, first_rows, first_keys,
                           pages, index_offset, f_off, f_len, f_sum, regions)


def decode_block(raw: bytes, n: int) -> tuple[list[bytes], list[bytes]]:
    """Decode an uncompressed block by the spec: int64 key offsets, key bytes (padded to 8),
    int64 value offsets, value bytes (padded to 8)."""
    koffs = np.frombuffer(raw, dtype="<i8", count=n + 1)
    kd = 8 * (n + 1)
    keys = [raw[kd + int(koffs[i]):kd + int(koffs[i + 1])] for i in range(n)]
    vo = kd + pad8(int(koffs[-1]))
    voffs = np.frombuffer(raw, dtype="<i8", count=n + 1, offset=vo)
    vd = vo + 8 * (n + 1)
    values = [raw[vd + int(voffs[i]):vd + int(voffs[i + 1])] for i in range(n)]
    assert vd + pad8(int(voffs[-1])) == len(raw)
    return keys, values



def require_module(name: str, reason: str):
    """Import ``name`` for a test module, or skip it with ``reason`` — except in CI
    (``CI=true``), where the project's own scripts install every extra, so a missing module is
    a failure, never a silent skip."""
    import importlib
    import os

    import pytest
    if os.environ.get("CI") == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)
