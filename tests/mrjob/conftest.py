"""Fixtures of the mrjob tests: stores with hostile bytes and a way to run kvio jobs."""
from __future__ import annotations

import random
import stat
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from kvio import KeyValueSystem

HERE = Path(__file__).resolve().parent
HOSTILE = b"\t\n\r\x00\xff\\ a"


def hostile_pairs(n: int, seed: int = 5) -> list[tuple[bytes, bytes]]:
    """Sorted, unique pairs whose keys and values are full of record separators: prefixes of
    each other, empty key and value, every byte value, CR LF at the ends."""
    rng = random.Random(seed)
    keys = {b"", b"\x00", b"\t", b"\n", b"\r", b"\r\n", b"\xff", b"\xff\xff", b"a", b"a\x00",
            b"a\t", b"a\n", b"\\t", bytes(range(256))}
    while len(keys) < n:
        length = rng.randint(1, 12)
        keys.add(bytes(rng.choice(HOSTILE) if rng.random() < 0.6 else rng.randrange(256)
                       for _ in range(length)))
    out = []
    for i, key in enumerate(sorted(keys)[:n]):
        value = b"" if i % 17 == 0 else bytes(rng.choice(HOSTILE) for _ in range(rng.randint(1, 40)))
        out.append((key, value + b"\r\n" if i % 5 == 0 else value))
    return out


def build_store(uri, pairs, conf: dict | None = None) -> KeyValueSystem:
    """Write ``pairs`` (sorted) as a store; ``conf`` e.g. {"kvio.partition.size.max": "4KB"}."""
    kvs = KeyValueSystem(conf=conf)
    with kvs.create_store(str(uri)) as writer:
        writer.put_many(pairs)
    return kvs


def run_kv_job(job_cls, runner: str, inputs, dest: str, *extra: str) -> dict:
    """Run a KVStoreJob the way the command line does (driver, runner, commit)."""
    args = ["-r", runner, "--no-conf", *[str(i) for i in inputs], "--output-store", str(dest), *extra]
    return job_cls(args).run_kv_job()


def store_items(uri: str) -> list[tuple[bytes, bytes]]:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return list(reader.items())


def assert_disjoint_ranges(uri: str) -> dict:
    """The manifest says disjoint, and key ranges really are in order without overlap."""
    with KeyValueSystem().open_store(str(uri)) as reader:
        manifest = reader.manifest
    parts = [p for p in manifest.partitions if p.count]
    ranges = sorted((p.min_key, p.max_key) for p in parts)
    assert manifest.disjoint
    assert all(prev[1] < cur[0] for prev, cur in pairwise(ranges))
    return manifest


def store_files(uri) -> list[str]:
    """Everything under a store directory, relative (to check for debris)."""
    root = Path(uri)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def hadoop_standin(tmp_path, monkeypatch):
    """A ``hadoop`` executable (a real script running hadoop_standin.py) with a directory
    standing in for HDFS. Returns (mrjob args for -r hadoop, log of jar command lines)."""
    bin_dir = tmp_path / "hadoop-bin"
    bin_dir.mkdir()
    hadoop = bin_dir / "hadoop"
    hadoop.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'hadoop_standin.py'} \"$@\"\n")
    hadoop.chmod(hadoop.stat().st_mode | stat.S_IXUSR)
    jar = bin_dir / "hadoop-streaming.jar"
    jar.write_bytes(b"stand-in")
    hdfs = tmp_path / "hdfs"
    hdfs.mkdir()
    log = tmp_path / "hadoop-commands.jsonl"
    monkeypatch.setenv("KVIO_STANDIN_HDFS", str(hdfs))
    monkeypatch.setenv("KVIO_STANDIN_LOG", str(log))
    args = ["--hadoop-bin", str(hadoop), "--hadoop-streaming-jar", str(jar),
            "--python-bin", sys.executable, "--hadoop-tmp-dir", "hdfs:///tmp/mrjob"]
    return args, log


@pytest.fixture(autouse=True)
def _no_user_mrjob_conf(monkeypatch):
    monkeypatch.delenv("MRJOB_CONF", raising=False)
    monkeypatch.delenv("KVIO_TEST_FAIL_AT", raising=False)
