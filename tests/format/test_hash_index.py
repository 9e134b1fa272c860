"""The per-partition hash index never loses a key, at any load factor and under collisions."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from kvio.format.hash_index import build_index
from kvio.format.partition_reader import PartitionReader
from kvio.format.partition_writer import PartitionWriter
from kvio.format.source import BufferSource
from kvio.format.spec import INDEX_PAGE_SLOTS, key_hash

LOAD_FACTORS = [0.1, 0.5, 0.7, 0.9, 0.95]


def probe(index, h: int) -> int | None:
    """Reference lookup: linear probing from the home slot, stopping at an empty slot."""
    s = h % index.home_slots
    while True:
        assert s < index.total_slots, "probe ran off the end of the table"
        hv, row = (int(x) for x in index.table[s])
        if hv == h:
            return row
        if hv == 0:
            return None
        s += 1


def assert_every_hash_findable(index, hashes: np.ndarray) -> None:
    """Whole-table invariant: each row is stored once, at or after its home slot, with no empty
    slot in between (so a probe from home reaches it), and the table ends with an empty slot."""
    n = len(hashes)
    table = index.table
    assert table.shape == (index.total_slots, 2)
    assert index.total_slots % INDEX_PAGE_SLOTS == 0
    occupied = table[:, 0] != 0
    assert int(occupied.sum()) == n
    assert not occupied[-1]
    rows = table[occupied, 1].astype(np.int64)
    assert np.array_equal(np.sort(rows), np.arange(n))
    pos = np.empty(n, dtype=np.int64)
    pos[rows] = np.nonzero(occupied)[0]
    assert np.array_equal(table[pos, 0], hashes)
    home = (hashes % np.uint64(index.home_slots)).astype(np.int64)
    assert (pos >= home).all()
    empty_before = np.concatenate([[0], np.cumsum(~occupied)])
    assert (empty_before[pos] == empty_before[home]).all(), "an empty slot interrupts a probe run"


def random_hashes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)


@pytest.mark.parametrize("load_factor", LOAD_FACTORS)
@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, 257, 5000])
def test_random_hashes_are_all_findable(n, load_factor):
    hashes = random_hashes(n, seed=n)
    index = build_index(hashes, load_factor)
    assert index.home_slots == max(1, math.ceil(n / load_factor))
    assert_every_hash_findable(index, hashes)
    for row in range(0, n, max(1, n // 200)):
        assert probe(index, int(hashes[row])) == row
    present = set(hashes.tolist())
    for h in random_hashes(200, seed=n + 1000).tolist():
        if h not in present:
            assert probe(index, h) is None


@pytest.mark.parametrize("home", ["first", "last"])
def test_all_keys_with_the_same_home_slot(home):
    n, load_factor = 3000, 0.95
    home_slots = math.ceil(n / load_factor)
    slot = 0 if home == "first" else home_slots - 1
    hashes = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(home_slots) + np.uint64(slot)
    index = build_index(hashes, load_factor)
    assert index.home_slots == home_slots
    assert_every_hash_findable(index, hashes)
    # the run starting at the last home slot spills far past home_slots: the table grows
    assert index.total_slots > slot + n
    for row in (0, 1, n // 2, n - 1):
        assert probe(index, int(hashes[row])) == row


def test_table_ends_with_an_empty_slot_even_when_the_last_home_slot_is_taken():
    # 256 keys at load factor 0.5: 512 home slots, exactly two pages. Occupying every slot of
    # the second page would leave a probe for an absent key homed there nowhere to stop.
    home_slots = 512
    hashes = np.arange(256, 512, dtype=np.uint64) + np.uint64(home_slots) * np.uint64(5)
    index = build_index(hashes, 0.5)
    assert index.home_slots == home_slots
    assert_every_hash_findable(index, hashes)
    for home in (256, 400, 511):
        assert probe(index, home + home_slots * 9) is None


def test_clustered_homes_and_equal_hashes():
    n, load_factor = 20000, 0.95
    home_slots = math.ceil(n / load_factor)
    rng = np.random.default_rng(7)
    # every key in one of 50 home slots, plus pairs of rows with identical 64-bit hashes
    homes = rng.choice(rng.integers(0, home_slots, size=50), size=n).astype(np.uint64)
    hashes = rng.integers(1, 1 << 40, size=n, dtype=np.uint64) * np.uint64(home_slots) + homes
    hashes[1::1000] = hashes[0::1000][:len(hashes[1::1000])]
    index = build_index(hashes, load_factor)
    assert_every_hash_findable(index, hashes)


def _partition_bytes(keys, values, *, load_factor, codec="none", block_rows=1000) -> bytes:
    out = io.BytesIO()
    writer = PartitionWriter(out, codec=codec, load_factor=load_factor)
    for i in range(0, len(keys), block_rows):
        writer.write_pairs(keys[i:i + block_rows], values[i:i + block_rows])
    info = writer.finish()
    data = out.getvalue()
    assert info["size"] == len(data)
    return data


def test_200k_keys_in_one_partition_at_load_factor_095():
    n = 200_000
    keys = [b"key-%08d" % i for i in range(n)]
    values = [b"%d" % (i * 7) for i in range(n)]
    reader = PartitionReader(BufferSource(_partition_bytes(keys, values, load_factor=0.95)))
    assert reader.count == n
    assert reader.meta["index"]["home_slots"] == math.ceil(n / 0.95)
    get = reader.get
    missing = [k for k, v in zip(keys, values, strict=True) if get(k) != v]
    assert missing == []
    assert [get(b"key-%08d" % i) for i in range(n, n + 2000)] == [None] * 2000
    assert get(b"key-") is None and get(b"") is None


@pytest.mark.parametrize("load_factor", [0.1, 0.7, 0.95])
@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_every_key_found_through_the_reader(load_factor, codec):
    n = 20_000
    keys = sorted({(i * 2654435761 % (1 << 32)).to_bytes(4, "big") + b"\xff" * (i % 3) for i in range(n)})
    values = [k[::-1] for k in keys]
    reader = PartitionReader(BufferSource(_partition_bytes(keys, values, load_factor=load_factor,
                                                           codec=codec, block_rows=512)))
    assert [reader.get(k) for k in keys] == values
    assert all(reader.get(k + b"\x00") is None for k in keys[:2000])


def test_key_hash_is_never_the_empty_slot_marker():
    for i in range(10000):
        assert key_hash(b"%d" % i) != 0
    assert key_hash(b"") != 0
