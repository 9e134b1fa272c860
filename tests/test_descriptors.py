"""File descriptors stay bounded: a store with far more partitions than the descriptor limit
opens, answers gets in every partition, scans and verifies (issue 10 item 6)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

from kvio import KeyValueSystem

PARTITIONS = 10_000
LIMIT = 256

CHILD = textwrap.dedent("""
    import json, os, random, resource, sys
    from kvio import KeyValueSystem
    uri, n = sys.argv[1], int(sys.argv[2])
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == int(sys.argv[3])
    kvs = KeyValueSystem()
    out = {}
    with kvs.open_store(uri) as r:
        out["partitions"] = len(r.manifest.partitions)
        keys = [b"k%06d" % i for i in range(n)]
        random.Random(1).shuffle(keys)
        value = lambda k: b"v" + k[1:] + b"." * 600
        out["gets_ok"] = all(r[k] == value(k) for k in keys)
        out["get_many_ok"] = r.get_many(keys[:3000]) == [value(k) for k in keys[:3000]]
        out["scan"] = sum(b.num_rows for b in r.batches())
        r.verify()
        out["verified"] = True
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def many_partitions(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("fds") / "store")
    kvs = KeyValueSystem(conf={"kvio.partition.size.max": "1KB", "kvio.block.size": "64B"})
    with kvs.create_store(uri) as w:
        # ~1 KB per pair: each pair rolls over to a new partition file
        w.put_many([(b"k%06d" % i, b"v%06d" % i + b"." * 600) for i in range(PARTITIONS)])
    return uri


@pytest.mark.slow
def test_ten_thousand_partitions_under_a_small_descriptor_limit(many_partitions):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    proc = subprocess.run([sys.executable, "-c", CHILD, many_partitions, str(PARTITIONS), str(LIMIT)],
                          capture_output=True, text=True, preexec_fn=limit, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out == {"partitions": PARTITIONS, "gets_ok": True, "get_many_ok": True,
                   "scan": PARTITIONS, "verified": True, "open_fds": out["open_fds"]}
    assert out["open_fds"] < LIMIT


def test_open_partition_limit_is_respected(tmp_path):
    """With kvio.read.open.partitions = 4 a reader never holds more than 4 partitions open,
    and still answers from every partition (closed ones are reopened)."""
    uri = str(tmp_path / "s")
    kvs = KeyValueSystem(conf={"kvio.partition.size.max": "1KB", "kvio.read.open.partitions": "4"})
    pairs = [(b"k%04d" % i, b"x" * 900) for i in range(40)]
    with kvs.create_store(uri) as w:
        w.put_many(pairs)
    with kvs.open_store(uri) as r:
        assert len(r.manifest.partitions) >= 20
        for key, value in pairs + pairs[::-1]:
            assert r[key] == value
            assert len(r._cache) <= 4
        assert list(r.items()) == pairs
        assert len(r._cache) <= 4
        assert r._cache.opened > len(r.manifest.partitions)  # evicted files were reopened
    fds = len(os.listdir("/proc/self/fd"))
    assert fds < 200
