"""The speed paths give the same answers as the plain ones: vectorised get_many, early-stopping
probes under heavy hash collisions, the row -> block table, and put_many's bulk block cutting
(which must roll partitions exactly where a loop of put() does). Nothing here is timed."""
from __future__ import annotations

import io
import random

import pyarrow as pa
import pytest
import xxhash

import kvio.format.partition_reader as partition_reader
import kvio.format.partition_writer as partition_writer
from kvio.format.partition_reader import PartitionReader
from kvio.format.partition_writer import PartitionWriter
from kvio.format.source import BufferSource, RangeSource

from .helpers import key4


def _partition(pairs, block_rows=64, load_factor=0.7, codec="none") -> bytes:
    out = io.BytesIO()
    writer = PartitionWriter(out, codec=codec, load_factor=load_factor)
    for i in range(0, len(pairs), block_rows):
        chunk = pairs[i:i + block_rows]
        writer.write_pairs([k for k, _ in chunk], [v for _, v in chunk])
    writer.finish()
    return out.getvalue()


def _sources(data: bytes):
    yield BufferSource(data)
    yield RangeSource(lambda o, n: data[o:o + n], len(data), "<ranged>")


@pytest.fixture
def weak_hash(monkeypatch):
    """Only 16 distinct hash values: long probe runs, page crossings and many keys whose
    stored hash equals the probe's hash but whose key differs."""
    def weak(data) -> int:
        return xxhash.xxh3_64_intdigest(data) & 0xF

    monkeypatch.setattr(partition_writer, "_xxh", weak)
    monkeypatch.setattr(partition_reader, "_xxh", weak)


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_colliding_hashes_get_and_get_many(weak_hash, codec):
    pairs = [(key4(i * 3), b"v%d" % i) for i in range(3000)]
    data = _partition(pairs, block_rows=50, load_factor=0.9, codec=codec)
    absent = [key4(i * 3 + 1) for i in range(500)]
    for source in _sources(data):
        reader = PartitionReader(source)
        assert all(reader.get(k) == v for k, v in pairs)
        assert [reader.get(k) for k in absent] == [None] * len(absent)
        asked = [k for k, _ in pairs] + absent
        random.Random(1).shuffle(asked)
        model = dict(pairs)
        assert reader.get_many(asked, default=b"-") == [model.get(k, b"-") for k in asked]


@pytest.mark.parametrize("source_kind", ["mapped", "ranged"])
def test_get_many_duplicates_defaults_and_key_types(source_kind):
    pairs = [(key4(i), b"%d" % i * (i % 7)) for i in range(5000)]
    data = _partition(pairs, block_rows=100)
    source = (BufferSource(data) if source_kind == "mapped"
              else RangeSource(lambda o, n: data[o:o + n], len(data), "r"))
    reader = PartitionReader(source)
    model = dict(pairs)
    asked = [key4(i) for i in random.Random(2).choices(range(6000), k=3000)]  # repeats and misses
    asked += [bytearray(key4(5)), memoryview(key4(6)), b"", key4(10) + b"\x00"]
    default = []  # any object, returned as is
    got = reader.get_many(asked, default=default)
    assert got == [model.get(bytes(k), default) for k in asked]
    assert all(g is default for k, g in zip(asked, got, strict=True) if bytes(k) not in model)
    with pytest.raises(TypeError):
        reader.get_many([key4(1)] * 40 + ["text"])
    with pytest.raises(TypeError):
        reader.get("text")


def test_row_to_block_table_with_uneven_blocks():
    # blocks of 1, 2, 3, ... rows: the bucket size must follow the smallest block
    pairs = [(key4(i), key4(i)) for i in range(2000)]
    out = io.BytesIO()
    writer = PartitionWriter(out)
    start, size = 0, 1
    while start < len(pairs):
        chunk = pairs[start:start + size]
        writer.write_pairs([k for k, _ in chunk], [v for _, v in chunk])
        start, size = start + size, size % 97 + 1
    writer.finish()
    reader = PartitionReader(BufferSource(out.getvalue()))
    assert all(reader.get(k) == v for k, v in pairs)
    assert reader.get_many([k for k, _ in pairs]) == [v for _, v in pairs]


@pytest.mark.parametrize("layout", ["disjoint", "overlapping"])
def test_store_get_many_across_partitions(make_kvs, tmp_path, layout):
    kvs = make_kvs({"kvio.partition.size.max": "16KB", "kvio.block.size": "1KB"})
    base = str(tmp_path / "base")
    pairs = [(key4(i), b"base-%d" % i) for i in range(0, 4000, 2)]
    with kvs.create_store(base) as w:
        w.put_many(pairs)
    model = dict(pairs)
    if layout == "overlapping":
        newer = str(tmp_path / "newer")
        extra = [(key4(i), b"new-%d" % i) for i in range(0, 4000, 3)]
        with kvs.create_store(newer) as w:
            w.put_many(extra)
        kvs.merge_store(newer, base)
        model.update(extra)
    with kvs.open_store(base) as reader:
        assert len(reader.info()["partitions"]) > 2
        asked = [key4(i) for i in random.Random(3).choices(range(-10, 4100), k=5000) if i >= 0]
        asked += [b"", b"\xff" * 8]
        assert reader.get_many(asked) == [model.get(k) for k in asked]
        assert [reader.get(k) for k in asked[:500]] == [model.get(k) for k in asked[:500]]


def _partitions(kvs, uri):
    with kvs.open_store(uri) as reader:
        return [(p["count"], p["min_key"], p["max_key"]) for p in reader.info()["partitions"]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_put_many_rolls_partitions_where_put_does(make_kvs, tmp_path, seed):
    rnd = random.Random(seed)
    kvs = make_kvs({"kvio.partition.size.max": "24KB", "kvio.block.size": "2KB"})
    pairs = [(key4(i), bytes(rnd.randrange(0, 600))) for i in range(0, 20000, 7)]
    one_by_one = str(tmp_path / "put")
    with kvs.create_store(one_by_one) as w:
        for k, v in pairs:
            w.put(k, v)
    mixed = str(tmp_path / "mixed")
    with kvs.create_store(mixed) as w:
        i = 0
        while i < len(pairs):
            step = rnd.choice([1, 3, 50, 400, 1500])
            part = pairs[i:i + step]
            how = rnd.choice(["put", "list", "iter", "arrow"])
            if how == "put":
                for k, v in part:
                    w.put(k, v)
            elif how == "list":
                w.put_many(part)
            elif how == "iter":
                w.put_many(iter(part))
            else:
                w.put_many(pa.table({"key": pa.array([k for k, _ in part], pa.binary()),
                                     "value": pa.array([v for _, v in part], pa.binary())}))
            i += step
        assert w.count == len(pairs)
    assert _partitions(kvs, mixed) == _partitions(kvs, one_by_one)
    with kvs.open_store(mixed) as reader:
        assert list(reader.items()) == pairs


def test_put_many_bad_pair_in_a_later_chunk_keeps_what_came_before(kvs, store_uri):
    pairs = [(key4(i), b"v") for i in range(70000)]
    pairs[50000] = (key4(50000), "text")
    with kvs.create_store(store_uri) as w:
        with pytest.raises(TypeError):
            w.put_many(pairs)
        assert w.count == 50000  # as with a loop of put(): everything before the bad pair
        w.put_many(pairs[50001:])
    with kvs.open_store(store_uri) as reader:
        assert len(reader) == 69999
        assert reader.get(key4(49999)) == b"v" and reader.get(key4(50000)) is None


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_get_many_array_with_colliding_hashes(weak_hash, codec):
    """get_many_array answers as get_many: windows that do not decide a key (long runs), hash
    collisions, absent and repeated keys, on mapped (gathered by Arrow) and other files."""
    pairs = [(key4(i * 3), b"v%d" % i) for i in range(3000)]
    data = _partition(pairs, block_rows=50, load_factor=0.9, codec=codec)
    model = dict(pairs)
    asked = [k for k, _ in pairs] + [key4(i * 3 + 1) for i in range(500)] + [key4(9)] * 3
    random.Random(3).shuffle(asked)
    for source in _sources(data):
        reader = PartitionReader(source)
        got = reader.get_many_array(asked)
        assert got.type == pa.large_binary()
        assert got.to_pylist() == [model.get(k) for k in asked]
        with_array = reader.get_many_array(asked, pa.array(asked, pa.large_binary()))
        assert with_array.to_pylist() == got.to_pylist()
        for small in (asked[:5], asked[:200], []):  # the loop and the vectorised path
            assert reader.get_many_array(small).to_pylist() == [model.get(k) for k in small]


def test_get_many_array_of_a_store(make_kvs, tmp_path):
    """StoreReader.get_many_array: one partition (the Arrow gather), several partitions and
    a store with tombstones (through get_many) give the same answers as get_many."""
    kvs = make_kvs()
    uri = str(tmp_path / "s.kv")
    with kvs.create_store(uri) as w:
        w.put_many((key4(i), b"x%d" % i) for i in range(0, 4000, 2))
    rng = random.Random(4)
    asked = [key4(rng.randrange(4200)) for _ in range(1000)]
    with kvs.open_store(uri) as r:
        assert r.get_many_array(asked).to_pylist() == r.get_many(asked)
    with kvs.update_store(uri) as u:
        u.delete_many([key4(i) for i in range(0, 400, 4)])
        u.set_many([(key4(i), b"new") for i in range(1, 200, 2)])
    with kvs.open_store(uri) as r:
        expected = r.get_many(asked)
        assert r.get_many_array(asked).to_pylist() == expected
        assert expected.count(b"new") and None in expected
