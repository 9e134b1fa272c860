"""The core read planner (kvio.plan) and key ranges (kvio.keyranges): range algebra, split
planning and split reading, on real stores (no engine involved)."""
from __future__ import annotations

import itertools
import random

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kvio.plan
from kvio import KeyValueSystem
from kvio import keyranges as kr
from kvio.config import Config
from kvio.errors import KvioError
from kvio.format.partition_reader import SCHEMA
from kvio.partitions import open_partition, version_file
from kvio.plan import merge_by_priority, read_split

# Every key over {00, 01, ff} up to 3 bytes: range boundaries drawn from here always have a
# witness key here, so membership over this universe decides set equality of range lists.
UNIVERSE = sorted({bytes(p) for n in range(4) for p in itertools.product([0, 1, 255], repeat=n)})
bound = st.one_of(st.none(), st.sampled_from(UNIVERSE))
ranges_st = st.lists(st.tuples(bound, bound), max_size=4)


def members(ranges) -> set[bytes]:
    return {k for k in UNIVERSE
            if any((s is None or s <= k) and (e is None or k < e) for s, e in ranges)}


@settings(max_examples=300, deadline=None)
@given(ranges_st, ranges_st)
def test_range_algebra_matches_sets(a, b):
    na, nb = kr.normalize(a), kr.normalize(b)
    assert members(na) == members(a)
    assert all(kr.nonempty(s, e) for s, e in na)
    assert all(x[1] is not None and y[0] is not None and x[1] < y[0] for x, y in itertools.pairwise(na))
    assert members(kr.intersect(na, nb)) == members(a) & members(b)
    assert members(kr.union(na, nb)) == members(a) | members(b)
    assert members(kr.complement(na)) == set(UNIVERSE) - members(a)
    assert kr.normalize(kr.complement(kr.complement(na))) == na


@settings(max_examples=200, deadline=None)
@given(ranges_st, st.sampled_from(UNIVERSE), st.sampled_from(UNIVERSE))
def test_touches(a, low, high):
    low, high = min(low, high), max(low, high)  # a partition's [min_key, max_key]
    na = kr.normalize(a)
    inside = {k for k in members(na) if low <= k <= high}
    assert kr.touches(na, low, high) == bool(inside)


@pytest.mark.parametrize("key", UNIVERSE)
def test_point_prefix_and_bounds(key):
    assert members(kr.point(key)) == {key}
    assert members(kr.prefix(key)) == {k for k in UNIVERSE if k.startswith(key)}
    assert members(kr.at_least(key, True)) == {k for k in UNIVERSE if k >= key}
    assert members(kr.at_least(key, False)) == {k for k in UNIVERSE if k > key}
    assert members(kr.below(key, True)) == {k for k in UNIVERSE if k <= key}
    assert members(kr.below(key, False)) == {k for k in UNIVERSE if k < key}


# ---- planning and reading real stores -------------------------------------------------------
def _pairs(n: int, seed: int, tag: bytes) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    keys = {bytes(rng.choice(b"\x00\x01a\xff") for _ in range(rng.randint(0, 6))) for _ in range(n)}
    return [(k, tag + k + bytes(rng.randrange(256) for _ in range(rng.randint(0, 30))))
            for k in sorted(keys)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A disjoint store of many small partitions, and a merged store whose partitions overlap."""
    root = tmp_path_factory.mktemp("scan")
    kvs = KeyValueSystem(conf={"kvio.partition.size.max": "6KB", "kvio.block.size": "512B"})
    model_a = dict(_pairs(700, 1, b"A"))
    model_b = dict(_pairs(500, 2, b"B"))
    for name, model in (("a", model_a), ("b", model_b)):
        with kvs.create_store(str(root / name)) as w:
            w.put_many(sorted(model.items()))
    with kvs.create_store(str(root / "m")) as w:
        w.put_many(sorted(model_a.items()))
    kvs.merge_store(str(root / "b"), str(root / "m"))  # b's values win on shared keys
    return kvs, {"a": (str(root / "a"), model_a), "m": (str(root / "m"), {**model_a, **model_b})}


def _read_all(kvs, uri, ranges, split_bytes, min_splits=1):
    with kvs.open_store(uri) as store:
        splits = store.plan(ranges, split_bytes, min_splits)
        rows = []
        for split in splits:  # each split read on its own, as an engine's task does
            part = []
            for batch in read_split(store._partition, split, ranges):
                part.extend(zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True))
            rows.append(part)
    return splits, rows


@pytest.mark.parametrize("name", ["a", "m"])
@pytest.mark.parametrize("split_bytes", [1 << 30, 20_000, 3_000])
def test_splits_cover_every_key_once_in_order(stores, name, split_bytes):
    kvs, models = stores
    uri, model = models[name]
    splits, rows = _read_all(kvs, uri, kr.ALL, split_bytes)
    flat = [pair for part in rows for pair in part]
    assert flat == sorted(model.items())
    if split_bytes < 1 << 30:
        assert len(splits) > 2
    assert all(s.pieces for s in splits)


@settings(max_examples=30, deadline=None)
@given(ranges=ranges_st)
def test_pruned_reads_return_exactly_the_ranges(stores, ranges):
    kvs, models = stores
    wanted = kr.normalize(ranges)
    for name in ("a", "m"):
        uri, model = models[name]
        _, rows = _read_all(kvs, uri, wanted, 4_000)
        expected = [(k, v) for k, v in sorted(model.items())
                    if any((s is None or s <= k) and (e is None or k < e) for s, e in wanted)]
        assert [pair for part in rows for pair in part] == expected


def test_min_splits_cuts_a_single_partition(tmp_path):
    kvs = KeyValueSystem(conf={"kvio.block.size": "1KB"})
    pairs = [(b"%06d" % i, b"x" * 50) for i in range(3000)]
    with kvs.create_store(str(tmp_path / "s")) as w:
        w.put_many(pairs)
    splits, rows = _read_all(kvs, str(tmp_path / "s"), kr.ALL, 64 << 20, min_splits=4)
    assert len(splits) == 4
    assert all(p.blocks is not None for s in splits for p in s.pieces)
    assert [pair for part in rows for pair in part] == pairs


def test_point_ranges_prune_partitions(stores):
    kvs, models = stores
    uri, model = models["a"]
    key = sorted(model)[123]
    splits, rows = _read_all(kvs, uri, kr.point(key), 1 << 30)
    assert rows == [[(key, model[key])]]
    assert sum(len(s.pieces) for s in splits) == 1


def test_merge_by_priority_keeps_highest():
    def batch(pairs):
        return pa.RecordBatch.from_arrays([pa.array([k for k, _ in pairs], pa.large_binary()),
                                           pa.array([v for _, v in pairs], pa.large_binary())],
                                          schema=SCHEMA)
    low = [batch([(b"a", b"1"), (b"c", b"1")])]
    high = [batch([(b"b", b"2"), (b"c", b"2")])]
    out = pa.Table.from_batches(list(merge_by_priority([low, high])))
    assert out.to_pylist() == [{"key": b"a", "value": b"1"}, {"key": b"b", "value": b"2"},
                               {"key": b"c", "value": b"2"}]


def _batches_of(pairs, sizes):
    """Sorted pairs cut into SCHEMA batches of the given sizes (cycled; empty batches too)."""
    out, i, n = [], 0, 0
    while i < len(pairs) or not out:
        size = sizes[n % len(sizes)]
        chunk = pairs[i:i + size]
        out.append(pa.RecordBatch.from_arrays([pa.array([k for k, _ in chunk], pa.large_binary()),
                                               pa.array([v for _, v in chunk], pa.large_binary())],
                                              schema=SCHEMA))
        i, n = i + size, n + 1
    return out


small_key = st.binary(max_size=2)


@settings(max_examples=200, deadline=None)
@given(base=st.dictionaries(small_key, st.binary(max_size=2), max_size=120),
       tops=st.lists(st.tuples(st.dictionaries(small_key, st.binary(max_size=2), max_size=6),
                               st.booleans()), max_size=3),
       sizes=st.lists(st.integers(0, 9), min_size=1, max_size=4),
       base_deletes=st.booleans(), padding=st.sampled_from([0, 200]),
       patch_rows=st.sampled_from([1, 7, 1 << 16]))
def test_merge_by_priority_matches_a_dict(base, tops, sizes, base_deletes, padding, patch_rows):
    """Both merges (a big base patched with small runs above it, and the full sort) give what
    applying the runs to a dict in priority order gives."""
    if not any(sizes):
        sizes = [3]
    # padding: enough base keys (interleaved with the generated ones) for the patch path
    base = {**{bytes([i % 256, 7]) + b"p": b"pad" for i in range(padding)}, **base}
    runs = [_batches_of(sorted(base.items()), sizes)]
    flags = [base_deletes]
    model = {} if base_deletes else dict(base)
    for top, deletes in tops:
        runs.append(_batches_of(sorted(top.items()), sizes))
        flags.append(deletes)
        for k, v in top.items():
            if deletes:
                model.pop(k, None)
            else:
                model[k] = v
    saved, kvio.plan._PATCH_ROWS = kvio.plan._PATCH_ROWS, patch_rows  # rows patched at once
    try:
        out = pa.Table.from_batches(list(merge_by_priority(runs, flags)), SCHEMA)
    finally:
        kvio.plan._PATCH_ROWS = saved
    assert list(zip(out.column("key").to_pylist(), out.column("value").to_pylist(),
                    strict=True)) == sorted(model.items())


def test_missing_partition_file_is_named(tmp_path):
    kvs = KeyValueSystem()
    with kvs.create_store(str(tmp_path / "s")) as w:
        w.put(b"a", b"1")
    store = kvs.open_store(str(tmp_path / "s"))
    entry = store.manifest.partitions[0]
    with pytest.raises(KvioError, match="missing") as err:
        open_partition(store.io, version_file("nope", entry), entry, Config())
    assert entry.path in str(err.value)
