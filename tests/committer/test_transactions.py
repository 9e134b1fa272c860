"""Transactions across stores (docs/COMMIT.md, "Transactions across stores"): the resolution
rules of pending records, the ``kvs.transaction()`` API, ``kvs.open_stores`` snapshots and gc of
a crashed transaction's leftovers. Real stores on local disk, real threads."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from kvio import KeyValueSystem, layout, txn_state, versions
from kvio.cli import main
from kvio.errors import ConcurrentCommitError, UnsupportedFormatError
from kvio.format import envelope
from kvio.format.commit_record import KIND as COMMIT_KIND
from kvio.format.txn_record import ABORTED, COMMITTED, TxnRef
from kvio.fs import FileIO
from kvio.transaction import Transaction

CONF = {"kvio.gc.grace": "0"}


@pytest.fixture
def kvs() -> KeyValueSystem:
    return KeyValueSystem(conf=CONF)


def _make(kvs: KeyValueSystem, uri: str, value: bytes) -> str:
    with kvs.create_store(uri, mode="overwrite") as w:
        w.put(b"k", value)
    return kvs.versions(uri)[-1]["version"]


def _value(kvs: KeyValueSystem, uri: str) -> bytes:
    with kvs.open_store(uri) as r:
        return r[b"k"]


def _pending_only(kvs: KeyValueSystem, uris: list[str], value: bytes) -> Transaction:
    """A transaction stopped after step 2 (pending records, no decision): what a crash leaves."""
    tx = kvs.transaction()
    for uri in uris:
        tx.create_store(uri, mode="overwrite").put(b"k", value)
    coordinator = tx._ios[0]
    ref = TxnRef(tx.id, txn_state.record_uri(coordinator, tx.id))
    for part in tx._parts:
        part._stage(str(Path(tx._ios[0].root).parent))
    for part in tx._parts:
        part._pending(ref)
    tx.done = True
    return tx


# ---- resolution rules --------------------------------------------------------------------
def test_undecided_records_are_void_then_count_once_committed(tmp_path, kvs):
    a, b = str(tmp_path / "a ü"), str(tmp_path / "b")
    old = {u: _make(kvs, u, b"old") for u in (a, b)}
    tx = _pending_only(kvs, [a, b], b"new")
    io_a = FileIO(a)
    state = versions.read_state(io_a)
    assert state.version == old[a] and state.seq == 1 and state.newest_seq == 2
    assert [r.seq for r in state.undecided] == [2]
    assert _value(kvs, a) == _value(kvs, b) == b"old"
    rows = kvs.versions(a)
    assert rows[-1]["void"] == "undecided transaction" and not rows[-1]["current"]
    assert rows[0]["current"]
    # The commit point: one record for both stores.
    decided = txn_state.decide(io_a, tx.id, COMMITTED)
    assert decided.committed
    assert _value(kvs, a) == _value(kvs, b) == b"new"
    assert all("void" not in row for row in kvs.versions(b))


def test_aborted_records_stay_void_and_the_next_writer_publishes_after_them(tmp_path, kvs):
    a = str(tmp_path / "a")
    v1 = _make(kvs, a, b"v1")
    tx = _pending_only(kvs, [a], b"lost")
    txn_state.decide(FileIO(a), tx.id, ABORTED)
    assert _value(kvs, a) == b"v1"
    # CAS over the void record: the writer starts from seq 2 (newest) but version v1.
    with kvs.create_store(a, mode="append") as w:
        w.put(b"j", b"x")
    rows = kvs.versions(a)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[1]["void"] == "aborted transaction" and rows[2]["current"]
    with kvs.open_store(a) as r:
        assert dict(r.items()) == {b"k": b"v1", b"j": b"x"}  # appended to v1, not to "lost"
    assert v1 in {row["version"] for row in rows}


def test_a_writer_aborts_an_undecided_transaction_before_publishing(tmp_path, kvs):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for u in (a, b):
        _make(kvs, u, b"old")
    tx = _pending_only(kvs, [a, b], b"txn")
    _make(kvs, b, b"writer")  # setup finds b's record undecided: aborts the transaction
    found = txn_state.decision(FileIO(b), TxnRef(tx.id, txn_state.record_uri(FileIO(a), tx.id)))
    assert found is not None and found.status == ABORTED
    # The transaction can no longer commit: its decision is taken.
    assert txn_state.decide(FileIO(a), tx.id, COMMITTED).status == ABORTED
    assert _value(kvs, a) == b"old" and _value(kvs, b) == b"writer"


def test_a_writer_that_started_before_the_pending_record_loses_the_race(tmp_path, kvs):
    a = str(tmp_path / "a")
    _make(kvs, a, b"old")
    early = kvs.create_store(a, mode="overwrite")
    early.put(b"k", b"early")
    tx = _pending_only(kvs, [a], b"txn")
    with pytest.raises(ConcurrentCommitError):
        early.commit()
    txn_state.decide(FileIO(a), tx.id, COMMITTED)
    assert _value(kvs, a) == b"txn"


def test_records_of_transactions_are_refused_by_readers_without_transactions(tmp_path, kvs):
    a = str(tmp_path / "a")
    with kvs.transaction() as tx:
        tx.create_store(a).put(b"k", b"v")
    blob = FileIO(a).read_bytes(layout.commit_name(1))
    assert blob.startswith(b"KVIOCOMMIT 2 ")
    # What kvio before transactions does with it (document versions {1}): a clear refusal.
    with pytest.raises(UnsupportedFormatError, match="format version 2"):
        envelope.decode(COMMIT_KIND, blob)


# ---- the API -----------------------------------------------------------------------------
def test_create_and_update_over_three_stores(tmp_path, kvs):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    _make(kvs, c, b"c0")
    with kvs.transaction() as tx:
        with tx.create_store(a) as w:
            w.put_many([(b"k", b"a1"), (b"m", b"a2")])
        w = tx.create_store(b)
        w.put(b"k", b"b1")
        u = tx.update_store(c)
        u.set(b"k", b"c1")
        u.delete(b"nothing")
        assert _value(kvs, c) == b"c0"  # nothing visible inside the block
    assert tx.decision is not None and tx.decision.committed
    assert {s.uri for s in tx.decision.stores} == {a, b, c}
    assert (_value(kvs, a), _value(kvs, b), _value(kvs, c)) == (b"a1", b"b1", b"c1")
    # The decision is in the first store; the others keep a copy.
    for u in (a, b, c):
        assert os.listdir(os.path.join(u, layout.TXNS)) == [f"{tx.id}.txn"]
    assert tx.commit() is tx.decision  # idempotent


def test_an_exception_in_the_block_publishes_nothing(tmp_path, kvs):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _make(kvs, b, b"b0")
    with pytest.raises(RuntimeError), kvs.transaction() as tx:
        tx.create_store(a).put(b"k", b"a1")
        tx.update_store(b).set(b"k", b"b1")
        raise RuntimeError("boom")
    assert not os.path.exists(a)
    assert _value(kvs, b) == b"b0" and len(kvs.versions(b)) == 1
    assert not os.path.exists(os.path.join(b, layout.TXNS))
    assert os.listdir(os.path.join(b, layout.STAGING)) == []


def test_a_race_on_one_store_aborts_all(tmp_path, kvs):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    for u in (a, b, c):
        _make(kvs, u, b"0")
    with pytest.raises(ConcurrentCommitError, match="nothing published"), \
            kvs.transaction() as tx:
        for u in (a, b, c):
            tx.create_store(u, mode="overwrite").put(b"k", b"txn")
        _make(kvs, b, b"other")  # another job publishes on b meanwhile
    assert (_value(kvs, a), _value(kvs, b), _value(kvs, c)) == (b"0", b"other", b"0")
    # a got a pending record before b failed: it is void for good (aborted), never current.
    rows = kvs.versions(a)
    assert rows[-1]["void"] == "aborted transaction" and rows[0]["current"]
    assert kvs.gc(a, older_than=0)["versions"] == [rows[-1]["version"]]
    assert _value(kvs, a) == b"0"
    # c was staged (every store is, before any pending record) and never published: its
    # version directory went with the abort; b's lost the race and went too.
    for u in (b, c):
        named = {row["version"] for row in kvs.versions(u)}
        assert set(os.listdir(os.path.join(u, layout.VERSIONS))) <= named
        assert os.listdir(os.path.join(u, layout.STAGING)) == []


def test_stores_of_one_transaction_must_differ(tmp_path, kvs):
    a = str(tmp_path / "a")
    tx = kvs.transaction()
    tx.create_store(a)
    with pytest.raises(ValueError, match="already part of this transaction"):
        tx.update_store(a + "/")
    tx.abort()
    assert not os.path.exists(a)


def test_open_stores_never_mixes_a_transactions_versions(tmp_path, kvs):
    """A thread publishes transactions A+B with the same counter value; readers check A == B on
    every open_stores snapshot."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with kvs.transaction() as tx:
        tx.create_store(a).put(b"n", b"0")
        tx.create_store(b).put(b"n", b"0")
    stop = threading.Event()
    errors: list[BaseException] = []
    published = [0]

    def publish() -> None:
        try:
            for n in range(1, 41):
                with kvs.transaction() as tx:
                    tx.update_store(a).set(b"n", str(n).encode())
                    tx.update_store(b).set(b"n", str(n).encode())
                published[0] = n
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            stop.set()

    snapshots: list[tuple[bytes, bytes]] = []
    thread = threading.Thread(target=publish)
    thread.start()
    while not stop.is_set():
        readers = kvs.open_stores([a, b])
        try:
            snapshots.append((readers[0][b"n"], readers[1][b"n"]))
        finally:
            for r in readers:
                r.close()
    thread.join()
    assert not errors, errors
    assert published[0] == 40
    assert all(x == y for x, y in snapshots), [s for s in snapshots if s[0] != s[1]][:5]
    assert len({x for x, _ in snapshots}) > 1  # the readers saw the counter move
    values = [int(x) for x, _ in snapshots]
    assert values == sorted(values)  # and never go back


# ---- gc and the CLI ------------------------------------------------------------------------
def test_gc_aborts_a_crashed_transaction_and_removes_its_versions(tmp_path, kvs):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for u in (a, b):
        _make(kvs, u, b"old")
    tx = _pending_only(kvs, [a, b], b"crashed")
    pending = {u: kvs.versions(u)[-1]["version"] for u in (a, b)}
    # Young undecided records are kept (the transaction may still be running).
    assert kvs.gc(a, older_than=3600)["txns"] == []
    assert os.path.isdir(os.path.join(a, layout.version_dir(pending[a])))
    report = kvs.gc(b, older_than=0)
    assert report["txns"] == [tx.id] and report["versions"] == [pending[b]]
    assert kvs.gc(a, older_than=0)["versions"] == [pending[a]]  # decided by gc of b already
    assert _value(kvs, a) == _value(kvs, b) == b"old"
    assert txn_state.decide(FileIO(a), tx.id, COMMITTED).status == ABORTED


def test_kvio_versions_marks_void_records(tmp_path, kvs, capsys):
    a = str(tmp_path / "a")
    _make(kvs, a, b"old")
    tx = _pending_only(kvs, [a], b"x")
    txn_state.decide(FileIO(a), tx.id, ABORTED)
    assert main(["versions", a]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "overwrite (aborted transaction)" in out[-1] and out[-1].rstrip().endswith("void")
    assert out[-2].rstrip().endswith("current")


def test_a_live_store_follows_a_transaction(tmp_path):
    kvs = KeyValueSystem(conf={**CONF, "kvio.follow.interval": "1h"})
    a = str(tmp_path / "a")
    _make(kvs, a, b"old")
    live = kvs.open_store(a, follow=True)
    try:
        tx = _pending_only(kvs, [a], b"new")
        assert live.refresh() is False and live[b"k"] == b"old"
        txn_state.decide(FileIO(a), tx.id, COMMITTED)
        assert live.refresh() is True and live[b"k"] == b"new"
    finally:
        live.close()


def test_relative_paths_name_the_record_absolutely(tmp_path: Path, kvs, monkeypatch):
    """Relative store paths: the transaction record's URI is absolute, so a process in another
    working directory resolves it."""
    monkeypatch.chdir(tmp_path)
    with kvs.transaction() as tx:
        tx.create_store("rel a").put(b"k", b"1")
        tx.create_store("rel b").put(b"k", b"1")
    record = versions.read_commit(FileIO("rel b"), 1)
    assert record.txn is not None and record.txn.record.startswith(str(tmp_path))
    txn_state.forget()
    monkeypatch.chdir("/")
    assert _value(kvs, str(tmp_path / "rel b")) == b"1"


def test_deleting_the_first_store_keeps_the_others_resolvable(tmp_path, kvs):
    """The decision lives in the first store; deleting that store first copies it into the
    others, so their records keep counting (even in a fresh process: the cache is dropped)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with kvs.transaction() as tx:
        tx.create_store(a).put(b"k", b"1")
        tx.create_store(b).put(b"k", b"1")
    os.remove(os.path.join(b, layout.txn_path(tx.id)))  # as if the copy had not been made
    kvs.delete_store(a)
    txn_state.forget()
    assert _value(kvs, b) == b"1"
    assert os.listdir(os.path.join(b, layout.TXNS)) == [f"{tx.id}.txn"]
    _make(kvs, b, b"2")  # a writer finds the record decided: nothing to abort
    assert [r.get("void") for r in kvs.versions(b)] == [None, None]


def test_the_reader_written_from_the_spec_agrees(tmp_path, kvs):
    """tests/format/spec_reader.py (written from docs/FORMAT.md §1.3/§1.5) resolves pending
    records the same way."""
    from tests.format.spec_reader import SpecStore
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    old = {u: _make(kvs, u, b"old") for u in (a, b)}
    tx = _pending_only(kvs, [a, b], b"new")
    assert {u: SpecStore(u).version for u in (a, b)} == old
    txn_state.decide(FileIO(a), tx.id, COMMITTED)
    new = {u: kvs.versions(u)[-1]["version"] for u in (a, b)}
    assert {u: SpecStore(u).version for u in (a, b)} == new
    assert SpecStore(b).get(b"k") == b"new"


def test_kvio_gc_says_which_transaction_it_aborted(tmp_path, kvs, capsys):
    a = str(tmp_path / "a")
    _make(kvs, a, b"old")
    tx = _pending_only(kvs, [a], b"x")
    assert main(["gc", "--older-than", "0", a]) == 0
    out = capsys.readouterr().out
    assert f"aborted transaction {tx.id}: a crashed writer left it undecided" in out
    assert "removed 1 version(s)" in out
