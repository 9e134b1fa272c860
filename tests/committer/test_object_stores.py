"""The store API on real object-store servers: moto's S3 server and Azurite, on loopback.

On these stores kvio publishes with a create-only put (capability ``create-only``) and never
renames: jobs write in place under ``_versions/<job>`` and the commit record alone makes a
version visible (kvio/publish.py). The same behaviour as on local disk is checked here: modes,
versions, rollback, retention, pins, gc, merge, updates with deletes, compaction, and races of
eight writers of which exactly one wins. Filesystems without a real create-only write keep the
refusal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from kvio import (
    CommitError,
    ConcurrentCommitError,
    KeyValueSystem,
    StoreExistsError,
    UnsafeFilesystemError,
    layout,
    versions,
)
from kvio import fs as kvfs
from kvio.committer import Job
from kvio.fs import FileIO, detect_capability
from kvio.publish import JOB_MARKER, WRITE_IN_PLACE, strategy_for
from kvio.writer import SortedPairWriter

ROOT = Path(__file__).resolve().parent.parent.parent
NO_GRACE = {"kvio.gc.grace": "0"}


@dataclass
class ObjectStore:
    """A fresh bucket/container on one server and how to reach it."""

    name: str
    base: str                      # e.g. s3://bucket
    storage_options: dict[str, Any]

    def uri(self, name: str = "store") -> str:
        return f"{self.base}/{name}-{uuid.uuid4().hex[:8]}"

    def kvs(self, **conf: str) -> KeyValueSystem:
        return KeyValueSystem(conf={**NO_GRACE, **conf}, storage_options=self.storage_options)

    def io(self, uri: str) -> FileIO:
        return FileIO(uri, storage_options=self.storage_options)

    def objects(self, uri: str) -> list[str]:
        """Every object under a store, relative to it (asked of the server, no cache)."""
        io = self.io(uri)
        io.fs.invalidate_cache()
        try:
            found = io.fs.find(io.root)
        except FileNotFoundError:
            return []
        return sorted(p[len(io.root) + 1:] for p in found)


@pytest.fixture(params=["s3", "azure"])
def object_store(request) -> ObjectStore:
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return ObjectStore("s3", f"s3://{server.new_bucket()}", server.storage_options)
    azurite = request.getfixturevalue("azurite")
    return ObjectStore("azure", f"az://{azurite.new_container()}", azurite.storage_options)


def write(kvs: KeyValueSystem, uri: str, data: dict[bytes, bytes], mode: str = "error") -> Any:
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(sorted(data.items()))
    return writer.record


def content(kvs: KeyValueSystem, uri: str, version: str | None = None) -> dict[bytes, bytes]:
    with kvs.open_store(uri, version) as reader:
        reader.verify()
        items = dict(reader.items())
        assert len(reader) == len(items)
        assert all(reader.get(k) == v for k, v in items.items())
        return items


def data(tag: str, keys: range) -> dict[bytes, bytes]:
    return {b"k%05d" % i: b"%s-%d" % (tag.encode(), i) for i in keys}


# ---- capability --------------------------------------------------------------------------------
def test_the_real_clients_have_a_create_only_write(object_store):
    io = object_store.io(object_store.uri())
    assert io.capability == kvfs.CREATE_ONLY and io.can_publish_atomically
    assert strategy_for(io) is WRITE_IN_PLACE
    io.write_new_file("a/once", b"first")
    with pytest.raises(FileExistsError):
        io.write_new_file("a/once", b"second")
    assert io.read_bytes("a/once") == b"first"
    with pytest.raises(UnsafeFilesystemError, match="does not rename"):
        io.rename_dir("a", "b")


def test_filesystems_without_a_real_create_only_write_are_refused(monkeypatch):
    http = fsspec.get_filesystem_class("http")
    assert detect_capability(http)[0] == kvfs.NONE
    with pytest.raises(UnsafeFilesystemError, match="cannot publish atomically"):
        Job.setup("http://127.0.0.1:9/store", mode="overwrite")
    s3fs = pytest.importorskip("s3fs")

    class OwnCreate(s3fs.S3FileSystem):
        """A subclass that replaces the create path: kvio cannot know what it does."""

        async def _pipe_file(self, path, data, mode="overwrite", **kwargs):
            raise NotImplementedError

    assert detect_capability(OwnCreate)[0] == kvfs.NONE
    assert detect_capability(s3fs.S3FileSystem)[0] == kvfs.CREATE_ONLY
    # An s3fs older than 2024.12 sends no If-None-Match: refused with the reason.
    monkeypatch.setattr(kvfs, "_release", lambda package: (2024, 10, 0))
    capability, reason = detect_capability(s3fs.S3FileSystem)
    assert capability == kvfs.NONE and "2024.12" in reason


# ---- the store API -----------------------------------------------------------------------------
def test_modes_versions_rollback_and_gc(object_store):
    kvs, uri = object_store.kvs(**{"kvio.versions.retain": "3"}), object_store.uri()
    v1, v2, v3 = data("one", range(0, 300)), data("two", range(100, 200)), data("app", range(250, 400))
    write(kvs, uri, v1)
    assert content(kvs, uri) == v1
    with pytest.raises(StoreExistsError):
        write(kvs, uri, v2)
    write(kvs, uri, v2, mode="ignore")
    assert content(kvs, uri) == v1
    write(kvs, uri, v2, mode="overwrite")
    assert content(kvs, uri) == v2
    write(kvs, uri, v3, mode="append")
    assert content(kvs, uri) == {**v2, **v3}
    history = kvs.versions(uri)
    assert [h["op"] for h in history] == ["create", "overwrite", "append"]
    kvs.rollback(uri, history[0]["version"])
    assert content(kvs, uri) == v1
    assert content(kvs, uri, history[1]["version"]) == v2
    kvs.gc(uri, older_than=0)
    history = kvs.versions(uri)
    assert [h["available"] for h in history] == [False, True, True, True]
    # Nothing was ever staged or renamed: every object is the marker, a record or a file of a
    # retained version that its manifest lists.
    objects = object_store.objects(uri)
    assert not [o for o in objects if o.startswith(layout.STAGING)]
    io = object_store.io(uri)
    listed = {layout.MARKER} | {layout.commit_name(h["seq"]) for h in history}
    for h in history[1:]:
        manifest = versions.load_manifest(io, h["version"])
        listed |= {f"{layout.version_dir(h['version'])}/{p.path}" for p in manifest.partitions}
        listed.add(layout.manifest_path(h["version"]))
    assert set(objects) == listed


def test_updates_with_deletes_compaction_and_merge(object_store):
    kvs, uri = object_store.kvs(), object_store.uri()
    base = data("base", range(0, 100))
    write(kvs, uri, base)
    with kvs.update_store(uri) as update:
        update.set(b"k00005", b"changed")
        update.delete(b"k00006")
        update.set(b"new", b"value")
    expected = {**base, b"k00005": b"changed", b"new": b"value"}
    del expected[b"k00006"]
    assert content(kvs, uri) == expected
    kvs.compact(uri)
    assert content(kvs, uri) == expected
    assert kvs.versions(uri)[-1]["op"] == "compact"
    other = object_store.uri("other")
    write(kvs, other, {b"k00005": b"merged", b"zz": b"1"})
    kvs.merge_store(other, uri)
    assert content(kvs, uri) == {**expected, b"k00005": b"merged", b"zz": b"1"}


def test_a_pinned_version_survives_gc(object_store):
    kvs, uri = object_store.kvs(**{"kvio.versions.retain": "1"}), object_store.uri()
    old = data("old", range(50))
    write(kvs, uri, old)
    reader = kvs.open_store(uri)  # pins the version it reads
    write(kvs, uri, data("new", range(10)), mode="overwrite")
    removed = kvs.gc(uri, older_than=0)
    assert removed["pinned"] == [reader.version]
    assert dict(reader.items()) == old
    reader.close()  # releases the pin
    removed = kvs.gc(uri, older_than=0)
    assert reader.version in removed["versions"]


def test_files_of_failed_attempts_and_dead_jobs_are_never_listed_and_gc_removes_them(object_store):
    kvs, uri = object_store.kvs(), object_store.uri()
    write(kvs, uri, data("old", range(20)))
    conf = dict(NO_GRACE)
    dead = Job.setup(uri, mode="overwrite", conf=conf, storage_options=object_store.storage_options)
    w = SortedPairWriter(dead.task(0))
    w.put_many(sorted(data("dead", range(20)).items()))
    w.close()  # the driver of this job dies: it never commits
    job = Job.setup(uri, mode="overwrite", conf=conf, storage_options=object_store.storage_options)
    failed = job.task(0, "a0")
    _, handle = failed.new_partition_file()
    handle.write(b"KVIOPART half a file")
    handle.close()
    winner = SortedPairWriter(job.task(0, "a1"))
    winner.put_many(sorted(data("new", range(30)).items()))
    message = winner.close()
    duplicate = SortedPairWriter(job.task(0, "a2"))
    duplicate.put_many(sorted(data("dup", range(30)).items()))
    duplicate.close()
    vdir = layout.version_dir(job.ctx.job_id)
    assert any(o.startswith(vdir) for o in object_store.objects(uri))  # written in place
    record = job.commit([message])
    assert record is not None and content(kvs, uri) == data("new", range(30))
    manifest = versions.load_manifest(job.io, job.ctx.job_id)
    assert {p.path.split("/")[0] for p in manifest.partitions} == {message["dir"]}
    # The publish tidied its own version: only the manifest and the listed files remain.
    mine = [o[len(vdir) + 1:] for o in object_store.objects(uri) if o.startswith(vdir + "/")]
    assert sorted(mine) == sorted([layout.MANIFEST] + [p.path for p in manifest.partitions])
    # The dead job's directory is not a version; gc keeps it while it is young (its driver
    # might still be running), removes it once old enough.
    dead_dir = layout.version_dir(dead.ctx.job_id)
    assert dead.ctx.job_id not in {h["version"] for h in kvs.versions(uri)}
    kvs.gc(uri, older_than=3600)
    assert any(o.startswith(dead_dir + "/") for o in object_store.objects(uri))
    removed = kvs.gc(uri, older_than=0)
    assert dead.ctx.job_id in removed["versions"]
    assert not any(o.startswith(dead_dir + "/") for o in object_store.objects(uri))
    # A late attempt of the aborted or committed job cannot start writing.
    with pytest.raises(Exception, match="staging directory is gone"):
        dead.task(1)
    assert content(kvs, uri) == data("new", range(30))


@pytest.mark.parametrize("verify", ["auto", "footers"])
def test_commit_checks_sizes_from_a_listing_and_reads_no_partition(object_store, verify,
                                                                    monkeypatch):
    """On an object store the commit's default check (kvio.commit.verify=auto -> sizes) lists
    the job's files and reads none of them; a file described at the wrong size is refused.
    ``footers`` reads every file's tail."""
    uri = object_store.uri()
    conf = {**NO_GRACE, "kvio.commit.verify": verify, "kvio.partition.size.max": "1KB"}
    job = Job.setup(uri, mode="error", conf=conf, storage_options=object_store.storage_options)
    w = SortedPairWriter(job.task(0))
    w.put_many(sorted(data("v", range(40)).items()))
    message = w.close()
    assert len(message["partitions"]) > 3
    reads: list[str] = []
    original = FileIO.read_range
    monkeypatch.setattr(FileIO, "read_range",
                        lambda self, rel, *a: reads.append(rel) or original(self, rel, *a))
    bad = json.loads(json.dumps(message))
    bad["partitions"][1]["size"] += 1
    with pytest.raises(CommitError, match="failed validation") as info:
        job.commit([bad])
    assert info.value.landed is False and bad["partitions"][1]["path"] in str(info.value)
    reads.clear()
    job.commit([message])
    partition_reads = [r for r in reads if r.startswith(layout.version_dir(job.ctx.job_id))]
    if verify == "auto":
        assert partition_reads == []
    else:
        assert len(partition_reads) >= len(message["partitions"])
    assert content(object_store.kvs(), uri) == data("v", range(40))


def test_read_small_reads_empty_small_and_large_objects(object_store):
    """Commit records are read with one ranged read (FileIO.read_small); an empty object (a
    damaged record) is refused a range by the server and read whole instead."""
    io = object_store.io(object_store.uri("small"))
    for name, blob in (("empty", b""), ("small", b"abc"), ("large", bytes(range(256)) * 300)):
        io.fs.pipe_file(io.path(name), blob)
        assert io.read_small(name, limit=1024) == blob
    with pytest.raises(FileNotFoundError):
        io.read_small("absent")


def test_abort_never_deletes_a_published_version(object_store):
    kvs, uri = object_store.kvs(), object_store.uri()
    job = Job.setup(uri, mode="error", conf=NO_GRACE, storage_options=object_store.storage_options)
    w = SortedPairWriter(job.task(0))
    w.put_many(sorted(data("v", range(10)).items()))
    job.commit([w.close()])
    job.abort()
    Job(job.ctx).abort()  # a fresh driver object that does not know it committed
    assert content(kvs, uri) == data("v", range(10))
    aborted = Job.setup(uri, mode="overwrite", conf=NO_GRACE,
                        storage_options=object_store.storage_options)
    w = SortedPairWriter(aborted.task(0))
    w.put_many(sorted(data("x", range(10)).items()))
    w.close()
    aborted.abort()
    assert not any(o.startswith(layout.version_dir(aborted.ctx.job_id))
                   for o in object_store.objects(uri))


def test_marker_and_record_are_create_only_puts(object_store, monkeypatch):
    made: list[str] = []
    real = FileIO._create_object

    def spy(self, rel, payload):
        made.append(rel)
        return real(self, rel, payload)
    monkeypatch.setattr(FileIO, "_create_object", spy)
    kvs, uri = object_store.kvs(), object_store.uri()
    record = write(kvs, uri, data("v", range(5)))
    assert layout.MARKER in made and layout.commit_name(1) in made
    assert layout.manifest_path(record["version"]) in made
    assert f"{layout.version_dir(record['version'])}/{JOB_MARKER}" in made


# ---- races -------------------------------------------------------------------------------------
def race(object_store: ObjectStore, uri: str, mode: str, writers: int = 8) -> dict[str, Any]:
    """``writers`` jobs start from the same state, write, then commit at once while a reader
    reads continuously. Returns what happened."""
    kvs = object_store.kvs()
    datasets = {f"w{i}": data(f"w{i}", range(i, 60 + i)) for i in range(writers)}
    started = threading.Barrier(writers)
    outcomes: dict[str, Any] = {}
    seen: list[dict[bytes, bytes] | None] = []
    stop = threading.Event()

    def writer(tag: str) -> None:
        try:
            job = Job.setup(uri, mode=mode, conf=NO_GRACE, storage_options=object_store.storage_options)
        except StoreExistsError as exc:  # a create that lost before it started
            started.wait(60)
            outcomes[tag] = exc
            return
        w = SortedPairWriter(job.task(0))
        w.put_many(sorted(datasets[tag].items()))
        message = w.close()
        started.wait(60)
        try:
            outcomes[tag] = job.commit([message])
        except ConcurrentCommitError as exc:
            outcomes[tag] = exc

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(content(kvs, uri))
            except Exception as exc:  # noqa: BLE001 - checked below: only "no store yet"
                seen.append(None)
                if type(exc).__name__ not in ("StoreNotFoundError", "IncompleteStoreError",
                                              "VersionNotRetainedError"):
                    raise

    threads = [threading.Thread(target=writer, args=(t,)) for t in datasets]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    watcher.join(120)
    return {"kvs": kvs, "datasets": datasets, "outcomes": outcomes, "seen": seen}


@pytest.mark.parametrize("mode", ["overwrite", "error"])
def test_eight_racing_writers_exactly_one_wins(object_store, mode):
    uri = object_store.uri()
    kvs = object_store.kvs()
    before = data("before", range(5))
    if mode == "overwrite":
        write(kvs, uri, before)
    result = race(object_store, uri, mode)
    outcomes, datasets = result["outcomes"], result["datasets"]
    assert len(outcomes) == 8
    winners = [t for t, o in outcomes.items() if not isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    for tag, outcome in outcomes.items():
        if tag != winners[0]:
            assert isinstance(outcome, (ConcurrentCommitError, StoreExistsError)), outcome
            assert getattr(outcome, "landed", False) is False
    assert content(kvs, uri) == datasets[winners[0]]
    assert len(kvs.versions(uri)) == (2 if mode == "overwrite" else 1)
    allowed = [datasets[winners[0]]] + ([before] if mode == "overwrite" else [None])
    assert result["seen"] and all(s in allowed for s in result["seen"])
    # The losers removed their own files: only the published versions have objects.
    live = {h["version"] for h in kvs.versions(uri)}
    dirs = {o.split("/")[1] for o in object_store.objects(uri) if o.startswith(layout.VERSIONS + "/")}
    assert dirs == live


RACER = """
import json, sys
from kvio import ConcurrentCommitError, KeyValueSystem
uri, tag = sys.argv[1], sys.argv[2]
kvs = KeyValueSystem(conf={"kvio.gc.grace": "0"})  # endpoint and keys from the AWS_* environment
try:
    with kvs.create_store(uri, mode="overwrite") as w:
        w.put_many((b"k%05d" % i, tag.encode()) for i in range(200))
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()
    print(json.dumps({"won": w.record["version"]}))
except ConcurrentCommitError as exc:
    print(json.dumps({"lost": str(exc), "landed": exc.landed}))
"""


def test_eight_racing_writer_processes_on_s3_configured_by_the_environment(s3_server):
    """Eight processes configured only by AWS_ENDPOINT_URL/AWS_ACCESS_KEY_ID/... (botocore
    reads the endpoint itself): they start from the same version, then commit at once."""
    uri = f"s3://{s3_server.new_bucket()}/store"
    kvs = KeyValueSystem(conf=NO_GRACE, storage_options=s3_server.storage_options)
    write(kvs, uri, {b"a": b"b"})
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, uri, f"p{i}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(8)]
    results = []
    try:
        for p in procs:  # every job has started from version 1 and written its pairs
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            out, err = p.communicate("go\n", timeout=120)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    won = [r["won"] for r in results if "won" in r]
    assert len(won) == 1, results
    assert all(r.get("landed") is False for r in results if "lost" in r)
    assert kvs.versions(uri)[-1]["version"] == won[0]
    tags = set(content(kvs, uri).values())
    assert len(tags) == 1


# ---- the CLI -----------------------------------------------------------------------------------
def test_cli_reaches_s3_through_storage_options_and_the_environment(s3_server, tmp_path, capsys,
                                                                     monkeypatch):
    """--storage-option in process; then a `kvio` process that has only the AWS_* environment."""
    from kvio.cli import main
    for var in s3_server.env:
        monkeypatch.delenv(var, raising=False)
    bucket = s3_server.new_bucket()
    uri, other = f"s3://{bucket}/cli", f"s3://{bucket}/cli-2"
    source = tmp_path / "in.tsv"
    source.write_text("".join(f"k{i:04d}\tv{i}\n" for i in range(500)))
    options = [f"--storage-option=endpoint_url={s3_server.endpoint}",
               f"--storage-option=key={s3_server.storage_options['key']}",
               f"--storage-option=secret={s3_server.storage_options['secret']}",
               "--storage-option=client_kwargs.region_name=us-east-1"]
    assert main(["import", *options, str(source), uri]) == 0
    assert main(["set", *options, uri, "k0001", "changed"]) == 0
    assert main(["import", *options, str(source), other]) == 0
    assert main(["verify", *options, uri]) == 0
    capsys.readouterr()
    assert main(["get", *options, uri, "k0001", "k0002"]) == 0
    assert capsys.readouterr().out.split() == ["changed", "v2"]
    assert main(["diff", *options, uri, other]) == 1  # k0001 differs
    assert main(["mv", *options, uri, f"s3://{bucket}/moved"]) == 1
    assert "cannot rename a store atomically" in capsys.readouterr().err
    # Without options: botocore reads AWS_ENDPOINT_URL and the keys from the environment.
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "kvio", "get", uri, "k0001"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout.strip()) == (0, "changed"), run.stderr
    run = subprocess.run([sys.executable, "-m", "kvio", "get", uri, "k0001"],
                         env={k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1  # the real AWS endpoint does not know this bucket (or is unreachable)


def test_storage_option_values_and_nesting():
    from kvio.cli.storage_options import build_storage_options, storage_option_item
    items = [storage_option_item(t) for t in ("anon=true", "client_kwargs.region_name=eu-west-1",
                                              "endpoint_url=http://h:1", "n=3", "client_kwargs.x={\"a\": 1}")]
    assert build_storage_options(items) == {"anon": True, "endpoint_url": "http://h:1", "n": 3,
                                            "client_kwargs": {"region_name": "eu-west-1", "x": {"a": 1}}}
    import argparse
    for bad in ("novalue", "=x", "a..b=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            storage_option_item(bad)
