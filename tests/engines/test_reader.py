"""kvio's StoreReader against the model: every read API, every store, local disk and memory://."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from kvio import KeyValueSystem

from .model import RANGE_NAMES, absent_keys, expected_range, range_bounds


@pytest.fixture
def reader(store):
    with KeyValueSystem().open_store(store.uri) as r:
        yield r


def test_the_stores_have_their_intended_shapes(store, reader):
    """Guards the fixtures: a builder that produced a trivial store would make the suite prove
    nothing."""
    info = reader.info()
    live = [p for p in info["partitions"] if p["count"]]
    if store.kind == "single":
        assert len(live) == 1
    if store.kind in ("disjoint", "hostile"):
        assert info["disjoint"] and len(live) > 5
    if store.kind in ("merged", "appended"):
        assert not info["disjoint"] and len(live) > 5
        assert sum(p["count"] for p in live) > len(store.model)  # superseded values are stored
    if store.kind == "merged-disjoint":
        mins = [bytes.fromhex(p["min_key"]) for p in live]
        assert info["disjoint"] and mins != sorted(mins)  # priority order is not key order
    if store.kind == "empty":
        assert not store.model
    if store.kind == "hostile":
        assert {b"", b"\xff", b"\t", b"\n", b"\r", b"\x00"} <= set(store.model)
        assert max(map(len, store.model)) >= 3000 and b"" in store.model.values()


def test_iteration_and_mapping_views(store, reader):
    expected = sorted(store.model.items())
    assert len(reader) == len(store.model)
    assert list(reader) == [k for k, _ in expected]
    assert list(reader.items()) == expected
    assert list(reader.keys()) == [k for k, _ in expected]
    assert list(reader.values()) == [v for _, v in expected]
    assert dict(reader) == store.model
    table = reader.to_table()
    assert table.column("key").to_pylist() == [k for k, _ in expected]
    assert table.column("value").to_pylist() == [v for _, v in expected]


def test_get_every_key_and_absent_keys(store, reader):
    for k, v in store.model.items():
        assert reader.get(k) == v
        assert reader[k] == v
        assert k in reader
    for k in absent_keys(store.model):
        assert reader.get(k) is None
        assert reader.get(k, b"default") == b"default"
        assert k not in reader
        with pytest.raises(KeyError):
            reader[k]


def test_get_many(store, reader):
    probes = list(store.model) + absent_keys(store.model)
    random.Random(4).shuffle(probes)
    probes += probes[:50]  # repeated keys
    assert reader.get_many(probes) == [store.model.get(k) for k in probes]
    assert reader.get_many(probes, b"?") == [store.model.get(k, b"?") for k in probes]
    assert reader.get_many([]) == []


@pytest.mark.parametrize("name", RANGE_NAMES)
def test_ranges(store, reader, name):
    start, stop, prefix = range_bounds(name, store.model)
    expected = expected_range(store.model, start, stop, prefix)
    assert list(reader.items(start, stop, prefix)) == expected
    assert list(reader.keys(start, stop, prefix)) == [k for k, _ in expected]
    batches = list(reader.batches(start, stop, prefix))
    for batch in batches:
        assert batch.schema.names == ["key", "value"]
        assert all(pa.types.is_large_binary(t) or pa.types.is_binary(t) for t in batch.schema.types)
    got = [pair for b in batches
           for pair in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True)]
    assert got == expected
    table = reader.to_table(start, stop, prefix)
    keys, values = table.column("key").to_pylist(), table.column("value").to_pylist()
    assert list(zip(keys, values, strict=True)) == expected
