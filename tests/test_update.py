"""SET and DEL as delta versions (kvio/update.py), tombstones on every read path, compaction."""
from __future__ import annotations

import contextlib
import io
import multiprocessing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvio
from kvio import ConcurrentCommitError, cli
from kvio.format.partition_reader import TOMBSTONE

KEYS = st.binary(min_size=0, max_size=3)
OP = st.one_of(st.tuples(st.just("set"), KEYS, st.binary(max_size=4)),
               st.tuples(st.just("del"), KEYS, st.just(b"")))


def _check(kvs, uri: str, model: dict[bytes, bytes]) -> None:
    """Every read path of the reader and ``kvio scan`` agree with the model."""
    probes = sorted(model) + [b"\x00\x00\x00\x00", b"", b"\x01", b"\xff\xff"]
    with kvs.open_store(uri) as r:
        assert dict(r.items()) == model
        assert list(r.keys()) == sorted(model)
        assert len(r) == len(model)
        assert [r.get(k) for k in probes] == [model.get(k) for k in probes]
        assert r.get_many(probes * 20) == [model.get(k) for k in probes] * 20
        lo = sorted(model)[len(model) // 2] if model else b"\x01"
        assert dict(r.items(start=lo)) == {k: v for k, v in model.items() if k >= lo}
        r.verify()
    assert _kvio_scan(uri) == model


def _kvio_scan(uri: str) -> dict[bytes, bytes]:
    """What ``kvio scan --hex`` prints, parsed back."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["scan", "--hex", "--no-progress", uri]) == 0
    pairs = [line.split("\t") for line in out.getvalue().splitlines()]
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in pairs}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.dictionaries(KEYS, st.binary(max_size=4), max_size=20),
       updates=st.lists(st.lists(OP, max_size=15), min_size=1, max_size=4),
       compact_at=st.integers(min_value=-1, max_value=3))
def test_updates_match_a_dict(tmp_path_factory, initial, updates, compact_at):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path_factory.mktemp("s") / "store")
    with kvs.create_store(uri) as w:
        w.put_many(sorted(initial.items()))
    model = dict(initial)
    for n, ops in enumerate(updates):
        with kvs.update_store(uri) as u:
            for op, key, value in ops:
                if op == "set":
                    u.set(key, value)
                    model[key] = value
                else:
                    u.delete(key)
                    model.pop(key, None)
        _check(kvs, uri, model)
        if n == compact_at:
            kvs.compact(uri)
            with kvs.open_store(uri) as r:
                assert r.manifest.disjoint and not any(p.tombstones for p in r.manifest.partitions)
            _check(kvs, uri, model)


def test_last_operation_wins_and_order_does_not_matter(kvs, tmp_path):
    uri = str(tmp_path / "s")
    with kvs.update_store(uri) as u:
        u.set_many([(b"c", b"3"), (b"a", b"1"), (b"b", b"2")])
        u.delete(b"a")
        u.set(b"b", b"two")
        u.delete_many([b"c", b"zz"])
        u.set(b"c", b"back")
    _check(kvs, uri, {b"b": b"two", b"c": b"back"})


def test_delta_carries_the_base_and_adds_one_layer(kvs, tmp_path):
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many((b"k%04d" % i, b"v") for i in range(1000))
    with kvs.open_store(uri) as r:
        base = [p.footer_checksum for p in r.manifest.partitions]
    with kvs.update_store(uri) as u:
        u.delete(b"k0005")
        u.set(b"k0006", b"new")
    with kvs.open_store(uri) as r:
        parts = r.manifest.partitions
        assert [p.footer_checksum for p in parts[:len(base)]] == base
        assert [(p.count, p.tombstones) for p in parts[len(base):]] == [(1, False), (1, True)]
        assert r.commit.op == "update"
        # the tombstone file answers TOMBSTONE, the reader "absent"
        tomb = [pr for pr in r.partition_readers() if pr.tombstones][0]
        assert tomb.get(b"k0005") is TOMBSTONE and tomb.get(b"k0004", 7) == 7
        assert tomb.get_many([b"k0005", b"x"], 0) == [TOMBSTONE, 0]
        assert r.get(b"k0005") is None and b"k0005" not in r and r[b"k0006"] == b"new"


def test_exception_publishes_nothing(kvs, tmp_path):
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put(b"a", b"1")
    with pytest.raises(RuntimeError), kvs.update_store(uri) as u:
        u.delete(b"a")
        raise RuntimeError("boom")
    with kvs.open_store(uri) as r:
        assert dict(r.items()) == {b"a": b"1"} and r.commit.seq == 1


def test_empty_update_publishes_nothing(kvs, tmp_path):
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put(b"a", b"1")
    with kvs.update_store(uri) as u:
        pass
    assert u.record is None and len(kvs.versions(uri)) == 1


def test_update_losing_a_race_applies_again_on_the_new_version(kvs, tmp_path, monkeypatch):
    """Another update publishes between this update's setup and its commit: this one re-applies
    on top, so both changes are in the result. Without retries it raises, publishing nothing."""
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    from kvio import update as update_module
    real_setup = update_module.Job.setup
    raced = []

    def setup_then_race(*args, **kwargs):
        job = real_setup(*args, **kwargs)
        if not raced:
            raced.append(True)
            with kvs.update_store(uri) as other:
                other.set(b"c", b"3")
        return job

    monkeypatch.setattr(update_module.Job, "setup", setup_then_race)
    with kvs.update_store(uri) as u:
        u.delete(b"a")
    _check(kvs, uri, {b"b": b"2", b"c": b"3"})
    raced.clear()
    with pytest.raises(ConcurrentCommitError), kvs.update_store(uri, retries=0) as u:
        u.delete(b"b")
    _check(kvs, uri, {b"b": b"2", b"c": b"3"})


def _update_in_process(uri: str, worker: int, rounds: int) -> None:
    kvs = kvio.KeyValueSystem()
    for n in range(rounds):
        with kvs.update_store(uri, retries=50) as u:
            u.set(b"w%d-%d" % (worker, n), b"x")
            u.delete(b"base%d" % worker)


def test_two_processes_updating_lose_nothing(kvs, tmp_path):
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as w:
        w.put_many([(b"base0", b"0"), (b"base1", b"1"), (b"keep", b"k")])
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_update_in_process, args=(uri, i, 4)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    model = {b"keep": b"k", **{b"w%d-%d" % (i, n): b"x" for i in range(2) for n in range(4)}}
    _check(kvs, uri, model)
    assert len([v for v in kvs.versions(uri) if v.get("op") == "update"]) == 8


def test_compaction_losing_a_race_publishes_nothing(kvs, tmp_path, monkeypatch):
    uri = str(tmp_path / "s")
    with kvs.update_store(uri) as u:
        u.set_many([(b"a", b"1"), (b"b", b"2")])
    with kvs.update_store(uri) as u:
        u.delete(b"a")
    from kvio import compact as compact_module
    real = compact_module.SortedPairWriter

    def writer_then_race(*args, **kwargs):
        with kvs.update_store(uri) as other:
            other.set(b"z", b"26")
        return real(*args, **kwargs)

    monkeypatch.setattr(compact_module, "SortedPairWriter", writer_then_race)
    with pytest.raises(ConcurrentCommitError):
        kvs.compact(uri)
    monkeypatch.undo()
    _check(kvs, uri, {b"b": b"2", b"z": b"26"})
    kvs.compact(uri)
    _check(kvs, uri, {b"b": b"2", b"z": b"26"})


def test_many_updates_in_a_row(kvs, tmp_path):
    """Each update carries the files of the one before; carried names used to grow by six
    characters each time, and the 38th update failed with 'File name too long'."""
    uri = str(tmp_path / "s")
    model: dict[bytes, bytes] = {}
    for n in range(45):
        with kvs.update_store(uri) as u:
            u.set(b"k%02d" % n, b"v")
            u.delete(b"k%02d" % (n - 3))
        model[b"k%02d" % n] = b"v"
        model.pop(b"k%02d" % (n - 3), None)
    with kvs.open_store(uri) as r:
        assert max(len(p.path) for p in r.manifest.partitions) < 60
    _check(kvs, uri, model)
