"""Transactions across stores on real object-store servers (moto's S3 server, Azurite): the
transaction record is a create-only put like a commit record, the decision copies and the
resolution read through the same client, and a race or a crash publishes nothing."""
from __future__ import annotations

import pytest

from kvio import ConcurrentCommitError, txn_state
from kvio.format.txn_record import TxnRef

from . import test_object_stores
from .test_object_stores import ObjectStore, content, write

object_store = test_object_stores.object_store  # the fixture: S3 server and Azurite

pytestmark = pytest.mark.slow


def test_a_transaction_over_three_object_stores(object_store: ObjectStore):  # noqa: F811
    kvs = object_store.kvs()
    a, b, c = (object_store.uri(n) for n in ("a", "b", "c"))
    write(kvs, b, {b"k": b"b0", b"gone": b"x"})
    write(kvs, c, {b"k": b"c0"})
    with kvs.transaction() as tx:
        tx.create_store(a).put(b"k", b"a1")
        u = tx.update_store(b)
        u.set(b"k", b"b1")
        u.delete(b"gone")
        tx.create_store(c, mode="overwrite").put(b"k", b"c1")
    assert tx.decision is not None and tx.decision.committed
    txn_state.forget()  # resolve from the objects, not this process's cache
    assert [content(kvs, u) for u in (a, b, c)] == [{b"k": b"a1"}, {b"k": b"b1"}, {b"k": b"c1"}]
    assert f"_txns/{tx.id}.txn" in object_store.objects(a)
    assert f"_txns/{tx.id}.txn" in object_store.objects(c)  # the decision's copy
    readers = kvs.open_stores([a, b, c])
    try:
        assert [r[b"k"] for r in readers] == [b"a1", b"b1", b"c1"]
    finally:
        for r in readers:
            r.close()


def test_a_race_and_a_crash_publish_nothing_on_object_stores(object_store: ObjectStore):  # noqa: F811
    kvs = object_store.kvs()
    a, b = object_store.uri("a"), object_store.uri("b")
    write(kvs, a, {b"k": b"0"})
    write(kvs, b, {b"k": b"0"})
    with pytest.raises(ConcurrentCommitError, match="nothing published"), \
            kvs.transaction() as tx:
        tx.create_store(a, mode="overwrite").put(b"k", b"txn")
        tx.create_store(b, mode="overwrite").put(b"k", b"txn")
        write(kvs, b, {b"k": b"other"}, mode="overwrite")
    assert content(kvs, a) == {b"k": b"0"} and content(kvs, b) == {b"k": b"other"}
    # A crash after the pending records: nothing visible until gc decides it aborted.
    crashed = kvs.transaction()
    for u in (a, b):
        crashed.create_store(u, mode="overwrite").put(b"k", b"crashed")
    ref = TxnRef(crashed.id, txn_state.record_uri(crashed._ios[0], crashed.id))
    for part in crashed._parts:
        part._stage("/tmp")
    for part in crashed._parts:
        part._pending(ref)
    assert content(kvs, a) == {b"k": b"0"}
    assert kvs.gc(b, older_than=0)["txns"] == [crashed.id]
    txn_state.forget()
    assert content(kvs, a) == {b"k": b"0"} and content(kvs, b) == {b"k": b"other"}
    versions_named = {r["version"] for r in kvs.versions(b) if not r.get("void")}
    assert {o.split("/")[1] for o in object_store.objects(b) if o.startswith("_versions/")} \
        <= versions_named
