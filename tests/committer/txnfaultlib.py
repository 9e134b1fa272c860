"""More scenarios for the SIGKILL fault suite (tests/committer/test_txn_faults.py): an update
(SET/DEL), a compaction, and a transaction over three stores.

Run as a script (``python txnfaultlib.py '<json spec>'``) like faultlib.py: it installs
faultlib's kill points (every FileIO mutation, the protocol steps) plus the transaction's steps,
then runs one scenario. For the transaction, the commit point is the creation of the
transaction record (``_txns/<id>.txn`` linked into place); the pending commit records created
before it do not count, so this child marks "published" at that link only.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kvio import KeyValueSystem, transaction, txn_state  # noqa: E402
from kvio.update import StoreUpdate  # noqa: E402
from tests.committer import faultlib  # noqa: E402
from tests.committer.faultlib import NEW, OLD, _write, key, pairs  # noqa: E402

UPDATE_SET = pairs(range(150, 350), "upd")
UPDATE_DEL = [key(i) for i in range(0, 300, 7)]


def after_update(base: dict) -> dict:
    """Sets first, then deletes (the order _update applies them: the last operation wins)."""
    out = {**base, **dict(UPDATE_SET)}
    return {k: v for k, v in out.items() if k not in set(UPDATE_DEL)}


def _update(kvs: KeyValueSystem, uri: str, sets, dels) -> None:
    with kvs.update_store(uri) as u:
        u.set_many(reversed(sets))  # any order
        u.delete_many(dels)


class Update(faultlib.Scenario):
    """update_store: SET and DEL in any order, published as a delta over carried partitions."""
    name = "update"
    conf = {"kvio.compact.max.layers": "0"}  # no compaction after it (its own scenario)
    old = OLD
    new = after_update(OLD)

    def prepare(self, uri: str) -> None:
        _write(self.kvs(), uri, sorted(OLD.items()), "error")

    def run(self, uri: str) -> None:
        _update(self.kvs(), uri, UPDATE_SET, UPDATE_DEL)


LAYERED = after_update({**OLD, **dict(pairs(range(250, 320), "two"))})


class Compaction(faultlib.Scenario):
    """kvs.compact over three layers (two updates with tombstones): same content, one disjoint
    layer. Old and new differ by the current record's op, not by content."""
    name = "compact"
    old = LAYERED
    new = LAYERED
    conf = {"kvio.compact.max.layers": "0"}

    def prepare(self, uri: str) -> None:
        kvs = self.kvs()
        _write(kvs, uri, sorted(OLD.items()), "error")
        _update(kvs, uri, pairs(range(250, 320), "two"), [])
        _update(kvs, uri, UPDATE_SET, UPDATE_DEL)

    def run(self, uri: str) -> None:
        self.kvs().compact(uri)


TXN_STORES = ("a", "b", "c")
TXN_NEW = {"a": NEW, "b": after_update(OLD), "c": dict(pairs(range(0, 120), "cnew"))}
TXN_OLD: dict[str, dict | None] = {"a": OLD, "b": OLD, "c": None}


class Transaction3(faultlib.Scenario):
    """A transaction over three stores under one directory: a overwritten by a writer, b
    updated (SET/DEL), c created (mode overwrite, so a rerun after the commit point also
    publishes). ``uri`` is the directory holding the three stores."""
    name = "txn3"
    conf = {"kvio.compact.max.layers": "0"}

    def prepare(self, uri: str) -> None:
        kvs = self.kvs()
        _write(kvs, f"{uri}/a", sorted(OLD.items()), "error")
        _write(kvs, f"{uri}/b", sorted(OLD.items()), "error")

    def run(self, uri: str) -> None:
        with self.kvs().transaction() as tx:
            w = tx.create_store(f"{uri}/a", mode="overwrite")
            w.put_many(sorted(NEW.items()))
            u = tx.update_store(f"{uri}/b")
            u.set_many(UPDATE_SET)
            u.delete_many(UPDATE_DEL)
            c = tx.create_store(f"{uri}/c", mode="overwrite")
            c.put_many(sorted(TXN_NEW["c"].items()))


SCENARIOS = {s.name: s for s in (Update(), Compaction(), Transaction3())}


def install_txn_points(transactional: bool) -> None:
    """faultlib's kill points, the transaction's steps, and (for transactions) the commit
    point at the transaction record instead of at the commit records."""
    real_link = os.link
    faultlib.install_kill_points()
    marks = ("/_txns/", ".txn") if transactional else ("/_commits/", ".commit")

    def link(src, dst, *a, **k):
        real_link(src, dst, *a, **k)
        if marks[0] in str(dst) and str(dst).endswith(marks[1]):
            faultlib._STATE["published"] = True
        faultlib._event("after os.link", os.path.basename(str(dst)))
    os.link = link
    wrap = faultlib._wrap
    wrap(transaction.TxnStoreWriter, "_pending", before="before pending record",
         after="after pending record", phase="txn pending records")
    wrap(transaction.TxnStoreUpdate, "_pending", before="before pending record",
         after="after pending record", phase="txn pending records")
    wrap(txn_state, "decide", before="before txn decide", after="after txn decide",
         phase="txn commit point", phase_after="txn after commit")
    wrap(txn_state, "copy_decision", phase="txn decision copies")
    wrap(StoreUpdate, "_publish_once", phase="update publish")
    wrap(KeyValueSystem, "compact", phase="compaction")


def main() -> None:
    spec = json.loads(sys.argv[1])
    faultlib._STATE["kill"] = spec.get("kill")
    faultlib._STATE["expect"] = spec.get("expect")
    if spec.get("trace"):
        faultlib._STATE["trace"] = []
    install_txn_points(spec["scenario"] == "txn3")
    SCENARIOS[spec["scenario"]].run(spec["uri"])
    if spec.get("trace"):
        with open(spec["trace"], "w") as f:
            json.dump(faultlib._STATE["trace"], f)


if __name__ == "__main__":
    main()
