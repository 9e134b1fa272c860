"""The proof of issue 11's live stores and pins: 4 reader processes follow a store (random
gets, batch gets and scans) while a writer publishes 50 versions (overwrite, append, rollback)
and garbage collection runs after each publish (a grace of 1 s; pins protect the readers).
Zero errors; every answer is the answer of one published version (the one the snapshot names,
or some version for calls made directly on the live store); versions only move forward in each
reader; every reader ends on the newest version."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvio import KeyValueSystem

from .liveproof import KEYS, digest

pytestmark = pytest.mark.slow

ROOT = str(Path(__file__).resolve().parents[1])
READERS = 4
VERSIONS = 50
DEADLINE = 120.0  # generous: waits end as soon as their condition holds


def expected(model: dict[bytes, bytes], op: str, args) -> str:
    if op == "get_many":
        return digest([model.get(bytes.fromhex(k)) for k in args])
    if op == "get":
        return digest(model.get(bytes.fromhex(args)))
    if op == "prefix":
        prefix = bytes.fromhex(args)
        return digest([(k, model[k]) for k in sorted(model) if k.startswith(prefix)])
    start, stop = (bytes.fromhex(a) for a in args)
    return digest([(k, model[k]) for k in sorted(model) if start <= k < stop])


def test_readers_follow_a_busy_writer_and_gc(tmp_path):
    uri, work = str(tmp_path / "store"), str(tmp_path / "work")
    os.makedirs(work)
    # Small partitions, and readers keep at most 2 open (tests/liveproof.py): they open partition
    # files while they read, so a version gc removed under them would fail their reads. A
    # grace of 1 s covers the instant between reading the current version and pinning it.
    kvs = KeyValueSystem(conf={"kvio.gc.grace": "1s", "kvio.versions.retain": "3",
                               "kvio.partition.size.max": "2KB", "kvio.block.size": "512B"})
    rng = random.Random(11)
    gen = 0

    def values(keys) -> dict[bytes, bytes]:
        return {k: b"g%03d|%s" % (gen, k) for k in sorted(keys)}

    models: dict[str, dict[bytes, bytes]] = {}
    order: list[str] = []  # versions in publish order
    first = values(rng.sample(KEYS, 250))
    with kvs.create_store(uri) as writer:
        writer.put_many(sorted(first.items()))
    order.append(writer.record["version"])
    models[order[-1]] = first

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    logs = [open(os.path.join(work, f"r{i}.stderr"), "w") for i in range(READERS)]
    readers = [subprocess.Popen([sys.executable, "-m", "tests.liveproof", uri, work, f"r{i}",
                                 str(i)], cwd=ROOT, env=env, stderr=logs[i])
               for i in range(READERS)]
    try:
        end = time.monotonic() + DEADLINE
        while not all(os.path.exists(os.path.join(work, f"r{i}.ready")) for i in range(READERS)):
            assert time.monotonic() < end and all(p.poll() is None for p in readers), \
                "a reader did not start"
        ops = []
        while len(order) < VERSIONS:
            gen += 1
            current = models[order[-1]]
            op = rng.choice(["overwrite", "append", "append", "rollback"])
            if op == "rollback" and (len(order) < 2 or ops[-1] == "rollback"):
                op = "overwrite"
            if op == "overwrite":
                model = values(rng.sample(KEYS, rng.randint(150, 300)))
                with kvs.create_store(uri, mode="overwrite") as writer:
                    writer.put_many(sorted(model.items()))
                version = writer.record["version"]
            elif op == "append":
                added = values(rng.sample(KEYS, rng.randint(10, 80)))
                with kvs.create_store(uri, mode="append") as writer:
                    writer.put_many(sorted(added.items()))
                version, model = writer.record["version"], {**current, **added}
            else:  # back to the version before the current one (a new version of its files)
                source = order[-2]
                version, model = kvs.rollback(uri)["version"], dict(models[source])
            ops.append(op)
            order.append(version)
            models[version] = model
            kvs.gc(uri, older_than=0)  # pins keep the versions readers still use
        assert {"overwrite", "append", "rollback"} <= set(ops)
        with open(os.path.join(work, "done.json.tmp"), "w") as handle:
            json.dump({"version": order[-1]}, handle)
        os.rename(os.path.join(work, "done.json.tmp"), os.path.join(work, "done.json"))
        codes = [p.wait(timeout=DEADLINE) for p in readers]
    finally:
        for p in readers:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    errors = {f"r{i}": Path(work, f"r{i}.error").read_text()
              for i in range(READERS) if Path(work, f"r{i}.error").exists()}
    assert errors == {} and codes == [0] * READERS, \
        errors or [Path(work, f"r{i}.stderr").read_text()[-2000:] for i in range(READERS)]

    index = {v: i for i, v in enumerate(order)}
    digests = {v: {} for v in order}  # (op, args) -> digest, per version, computed lazily
    for i in range(READERS):
        summary = json.loads(Path(work, f"r{i}.summary.json").read_text())
        assert summary["final"] == order[-1] and summary["swap_errors"] == 0, summary
        assert summary["swaps"] >= 5, summary  # the reader really followed the writer
        seen = []
        lines = Path(work, f"r{i}.jsonl").read_text().splitlines()
        assert len(lines) > 100
        for line in lines:
            rec = json.loads(line)
            key = (rec["op"], json.dumps(rec["args"]))
            if rec["v"] is not None:
                v = rec["v"]
                seen.append(index[v])
                want = digests[v].setdefault(key, expected(models[v], rec["op"], rec["args"]))
                assert rec["d"] == want, f"r{i}: {rec} is not the answer of version {v}"
            else:
                assert any(rec["d"] == digests[v].setdefault(
                    key, expected(models[v], rec["op"], rec["args"])) for v in order), \
                    f"r{i}: {rec} is the answer of no published version"
        assert seen == sorted(seen), f"r{i} went back to an older version"
    # Every superseded version was collected once no reader used it.
    no_grace = KeyValueSystem(conf={"kvio.gc.grace": "0", "kvio.versions.retain": "3"})
    assert no_grace.gc(uri, older_than=0)["pinned"] == []
    assert [r["available"] for r in kvs.versions(uri)].count(True) == 3
