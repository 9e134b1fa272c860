"""Delta layers (kvio/layers.py): the key index that keeps gets cheap over stacked updates, and
the compaction policy applied after each update."""
from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvio
from kvio.layers import compaction_due, split_layers

KEYS = st.binary(min_size=0, max_size=3)
OP = st.one_of(st.tuples(st.just("set"), KEYS, st.binary(max_size=4)),
               st.tuples(st.just("del"), KEYS, st.just(b"")))
NO_POLICY = {"kvio.compact.max.layers": "0"}


def _apply(kvs, uri, ops, model):
    with kvs.update_store(uri) as u:
        for op, key, value in ops:
            if op == "set":
                u.set(key, value)
                model[key] = value
            else:
                u.delete(key)
                model.pop(key, None)
    return u


def _agrees(reader, model, probes):
    assert [reader.get(k) for k in probes] == [model.get(k) for k in probes]
    assert reader.get_many(probes * 3) == [model.get(k) for k in probes] * 3
    assert [k in reader for k in probes] == [k in model for k in probes]
    assert dict(reader.items()) == model


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.dictionaries(KEYS, st.binary(max_size=4), max_size=30),
       updates=st.lists(st.lists(OP, max_size=12), min_size=1, max_size=6))
def test_index_and_probing_give_the_same_answers(tmp_path_factory, initial, updates):
    """The same stacked versions read with the key index and without it (every layer asked)."""
    uri = str(tmp_path_factory.mktemp("s") / "store")
    kvs = kvio.KeyValueSystem(conf=NO_POLICY)
    probing = kvio.KeyValueSystem(conf={**NO_POLICY, "kvio.read.overlay.keys": "0"})
    with kvs.create_store(uri) as w:
        w.put_many(sorted(initial.items()))
    model = dict(initial)
    for ops in updates:
        _apply(kvs, uri, ops, model)
        probes = sorted(set(model) | {k for _, k, _ in ops} | {b"", b"\x00", b"\xff\xff\xff\xff"})
        with kvs.open_store(uri) as indexed, probing.open_store(uri) as plain:
            assert plain._layers is None
            if not indexed.manifest.disjoint and split_layers(indexed.manifest).deltas:
                assert indexed._layers is not None
            _agrees(indexed, model, probes)
            _agrees(plain, model, probes)


def test_split_layers_of_a_built_and_an_updated_store(tmp_path):
    kvs = kvio.KeyValueSystem(conf={**NO_POLICY, "kvio.partition.size.max": "4KB"})
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"k%05d" % i, b"v" * 40) for i in range(2000))
    with kvs.open_store(uri) as r:
        built = split_layers(r.manifest)
        assert len(built.base) == len(r.manifest.live()) > 1 and not built.deltas
    for n in range(3):
        with kvs.update_store(uri) as u:
            u.set(b"k%05d" % (n * 7), b"new")
            u.delete(b"k%05d" % (n * 7 + 1))
    with kvs.open_store(uri) as r:
        layers = split_layers(r.manifest)
        assert len(layers.base) == len(built.base)
        assert len(layers.deltas) == 6 and layers.delta_keys == 6
        assert sum(e.tombstones for _, e in layers.deltas) == 3
        # the index answers from the newest layer, the base answers everything else
        assert r.get(b"k00007") == b"new" and r.get(b"k00008") is None
        assert r.get(b"k00009") == b"v" * 40 and r.get(b"zzz") is None


def test_too_many_layer_keys_fall_back_to_asking_every_layer(tmp_path):
    kvs = kvio.KeyValueSystem(conf={**NO_POLICY, "kvio.read.overlay.keys": "10"})
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"%04d" % i, b"old") for i in range(100))
    with kvs.update_store(uri) as u:
        u.set_many((b"%04d" % i, b"new") for i in range(0, 100, 5))  # 20 keys > 10
    with kvs.open_store(uri) as r:
        assert r._layers is None
        assert r.get(b"0005") == b"new" and r.get(b"0006") == b"old"


def test_policy_compacts_after_too_many_layers(tmp_path):
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.max.layers": "4", "kvio.compact.size.ratio": "0"})
    uri = str(tmp_path / "s")
    model = {b"%04d" % i: b"v" for i in range(500)}
    with kvs.create_store(uri) as w:
        w.put_many(sorted(model.items()))
    compactions = []
    for n in range(6):
        u = _apply(kvs, uri, [("set", b"%04d" % n, b"new"), ("del", b"%04d" % (100 + n), b"")], model)
        compactions.append(u.compaction is not None)
    # each update adds a delta and a tombstone file: the third makes 6 > 4 and compacts
    assert compactions == [False, False, True, False, False, True]
    with kvs.open_store(uri) as r:
        assert r.manifest.disjoint and not any(p.tombstones for p in r.manifest.partitions)
        assert r.commit.op == "compact"
        assert dict(r.items()) == model


def test_policy_size_ratio(tmp_path):
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.size.ratio": "0.1"})
    uri = str(tmp_path / "s")
    model = {b"%04d" % i: b"v" for i in range(1000)}
    with kvs.create_store(uri) as w:
        w.put_many(sorted(model.items()))
    small = _apply(kvs, uri, [("set", b"%04d" % i, b"x", ) for i in range(50)], model)
    assert small.compaction is None  # 50 rows <= 0.1 x 1000
    big = _apply(kvs, uri, [("set", b"%04d" % i, b"y") for i in range(500, 600)], model)
    assert big.compaction is not None and big.compaction["op"] == "compact"
    with kvs.open_store(uri) as r:
        assert dict(r.items()) == model


@pytest.mark.parametrize("conf", [{"kvio.compact.max.layers": "0"},
                                  {"kvio.compact.max.layers": "1", "kvio.compact.auto.max.bytes": "1KB"}],
                         ids=["policy-off", "store-too-big"])
def test_policy_leaves_some_stores_alone(tmp_path, conf):
    kvs = kvio.KeyValueSystem(conf=conf)
    uri = str(tmp_path / "s")
    model = {b"%04d" % i: b"v" * 20 for i in range(200)}
    with kvs.create_store(uri) as w:
        w.put_many(sorted(model.items()))
    for n in range(4):
        assert _apply(kvs, uri, [("set", b"%04d" % n, b"n"), ("del", b"%04d" % (50 + n), b"")],
                      model).compaction is None
    with kvs.open_store(uri) as r:
        assert len(split_layers(r.manifest).deltas) == 8 and dict(r.items()) == model


def test_compaction_due_explains_itself(tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_POLICY)
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"%04d" % i, b"v") for i in range(100))
    with kvs.open_store(uri) as r:
        assert compaction_due(r.manifest, 1, 0.1, 1 << 30) is None  # nothing above the base
    _apply(kvs, uri, [("set", b"0001", b"x"), ("del", b"0002", b"")], {})
    with kvs.open_store(uri) as r:
        assert "kvio.compact.max.layers=1" in compaction_due(r.manifest, 1, 0, 1 << 30)
        assert compaction_due(r.manifest, 2, 0.0, 1 << 30) is None
        assert "kvio.compact.size.ratio" in compaction_due(r.manifest, 2, 0.01, 1 << 30)
        assert compaction_due(r.manifest, 0, 0.01, 1 << 30) is None


def test_policy_compaction_failure_keeps_the_update(tmp_path, monkeypatch, caplog):
    """A compaction that loses a race after the update landed is logged; the update stands."""
    import kvio.compact
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.max.layers": "1"})
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"%04d" % i, b"v") for i in range(100))

    def lose(uri, *args, **kwargs):
        # what compact_store does when another publish lands first: publish nothing, raise
        raise kvio.ConcurrentCommitError("another publish landed", store=uri, landed=False)
    monkeypatch.setattr(kvio.compact, "compact_store", lose)
    with caplog.at_level(logging.INFO, logger="kvio.update"):
        u = _apply(kvs, uri, [("set", b"0001", b"x"), ("del", b"0002", b"")], {})
    assert u.record is not None and u.compaction is None
    assert "changed while compacting" in caplog.text
    with kvs.open_store(uri) as r:
        assert r.commit.op == "update" and r.get(b"0001") == b"x" and r.get(b"0002") is None


def test_layered_get_survives_eviction_and_refuses_after_close(tmp_path):
    """The installed layered get reopens evicted partitions and stops working at close."""
    kvs = kvio.KeyValueSystem(conf={**NO_POLICY, "kvio.partition.size.max": "4KB",
                                    "kvio.read.open.partitions": "2"})
    uri = str(tmp_path / "s")
    model = {b"k%05d" % i: b"v%d" % i for i in range(1200)}
    with kvs.create_store(uri) as w:
        w.put_many(sorted(model.items()))
    for n in range(3):
        _apply(kvs, uri, [("set", b"k%05d" % (n * 300 + j), b"u%d" % n) for j in range(0, 300, 3)]
               + [("del", b"k%05d" % (n * 300 + j), b"") for j in range(1, 300, 7)], model)
    with kvs.open_store(uri) as r:
        assert r._layers is not None and len(r.manifest.live()) > 10
        for _ in range(2):  # twice: partitions were evicted in between
            assert [r.get(k) for k in sorted(model)] == [model[k] for k in sorted(model)]
            assert r.get(b"k00001") is None and r.get(b"zz") is None and r.get(b"") is None
    with pytest.raises(kvio.ReaderClosedError):
        r.get(b"k00002")


def test_rollback_after_a_policy_compaction_goes_back_past_the_update(tmp_path):
    """A compaction holds the pairs of the version it compacted (its record's source):
    rolling back after an update that the policy compacted restores the state before it."""
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.max.layers": "1", "kvio.versions.retain": "3"})
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"%04d" % i, b"v") for i in range(100))
    before = {b"%04d" % i: b"v" for i in range(100)}
    u = _apply(kvs, uri, [("set", b"0001", b"x"), ("del", b"0002", b"")], {})
    assert u.compaction is not None and u.compaction["source"] == u.record["version"]
    with pytest.raises(kvio.InvalidArgumentError, match="already a compact"):
        kvs.rollback(uri, u.record["version"])  # the same pairs as the current version
    kvs.rollback(uri)
    with kvs.open_store(uri) as r:
        assert dict(r.items()) == before
