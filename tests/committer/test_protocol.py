"""The commit protocol, in-process: jobs, tasks and attempts, modes, compare-and-swap,
rollback, garbage collection and readers of old versions (all on real files)."""
from __future__ import annotations

import json
import os
import pickle
import time

import pytest

from kvio import (
    CommitError,
    ConcurrentCommitError,
    IncompleteStoreError,
    KeyValueSystem,
    KvioError,
    StoreExistsError,
    StoreNotFoundError,
    layout,
    versions,
)
from kvio.committer import Job, JobContext, TaskAttempt
from kvio.fs import FileIO
from kvio.writer import SortedPairWriter

SMALL = {"kvio.partition.size.max": "8KB", "kvio.block.size": "256B"}
#: retention without the grace window, for tests that publish versions milliseconds apart and
#: check what retention removes (the window is tested in tests/test_pins.py)
NO_GRACE = {"kvio.gc.grace": "0"}


def key(i: int) -> bytes:
    return b"k%05d" % i


def pairs(keys, tag: bytes) -> list[tuple[bytes, bytes]]:
    return [(key(i), tag + b"-%05d" % i) for i in keys]


def write(kvs: KeyValueSystem, uri: str, data, mode: str = "error") -> dict | None:
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(data)
    return writer.record


def content(uri: str, kvs: KeyValueSystem | None = None) -> dict[bytes, bytes]:
    with (kvs or KeyValueSystem()).open_store(uri) as reader:
        reader.verify()
        items = dict(reader.items())
        assert len(reader) == len(items)
        assert all(reader[k] == v for k, v in items.items())
        return items


def run_task(job_or_ctx, task_id: int, data, attempt=None) -> dict:
    ctx = job_or_ctx.ctx if isinstance(job_or_ctx, Job) else job_or_ctx
    writer = SortedPairWriter(TaskAttempt(ctx, task_id, attempt))
    writer.put_many(data)
    return writer.close()


def version_files(uri: str, version: str) -> set[str]:
    root = os.path.join(uri, layout.version_dir(version))
    return {os.path.relpath(os.path.join(top, n), root) for top, _, names in os.walk(root) for n in names}


@pytest.fixture
def uri(tmp_path) -> str:
    return str(tmp_path / "store")


# ---- the task protocol ------------------------------------------------------------------------
def test_tasks_attempts_and_messages_travel_as_json(uri):
    job = Job.setup(uri, conf=SMALL)
    ctx = JobContext.from_json(json.loads(json.dumps(job.ctx.to_json())))
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    messages = [run_task(ctx, t, pairs(range(t * 100, t * 100 + 100), b"v")) for t in range(3)]
    messages = json.loads(json.dumps(messages))  # what Spark/MapReduce ship back
    assert pickle.loads(pickle.dumps(messages)) == messages
    for m in messages:
        assert set(m) == {"task_id", "attempt", "dir", "partitions"}
        assert all({"path", "size", "count", "min_key", "max_key", "footer_checksum"} <= set(p)
                   for p in m["partitions"])
    assert not KeyValueSystem().exists(uri)
    with pytest.raises(IncompleteStoreError):
        KeyValueSystem().open_store(uri)  # nothing visible before the publish
    record = Job(JobContext.from_json(ctx.to_json())).commit(list(reversed(messages)), num_tasks=3)
    assert record.seq == 1 and record.op == "create" and record.version == ctx.job_id
    assert content(uri) == dict(pairs(range(300), b"v"))
    assert os.listdir(os.path.join(uri, "_staging")) == []


def test_duplicate_failed_and_speculative_attempts_are_never_published(uri):
    job = Job.setup(uri, conf=SMALL)
    dead = TaskAttempt(job.ctx, 0, "0")          # failed half-way through a file
    _, handle = dead.new_partition_file()
    handle.write(b"KVIOPART garbage")
    handle.close()
    run_task(job, 0, pairs(range(0, 100), b"retry-loser"), attempt="1")  # finished, not chosen
    m0 = run_task(job, 0, pairs(range(0, 100), b"good"), attempt="1")    # same attempt id reused
    m1 = run_task(job, 1, pairs(range(100, 200), b"good"), attempt="0")
    spec = run_task(job, 1, pairs(range(100, 200), b"speculative"), attempt="1")
    assert len({m0["dir"], m1["dir"], spec["dir"]}) == 3
    job.commit([m0, m1], num_tasks=2)
    assert content(uri) == dict(pairs(range(200), b"good"))
    listed = {p["path"] for m in (m0, m1) for p in m["partitions"]}
    assert version_files(uri, job.ctx.job_id) == listed | {layout.MANIFEST}


def test_late_zombie_attempt_writes_are_never_published(uri):
    job = Job.setup(uri, conf=SMALL)
    zombie = SortedPairWriter(TaskAttempt(job.ctx, 0, "zombie"))
    zombie.put_many(pairs(range(0, 50), b"zombie"))   # has an open partition file
    zombie_attempt = TaskAttempt(job.ctx, 0, "zombie-2")
    m0 = run_task(job, 0, pairs(range(0, 50), b"good"))
    record = job.commit([m0], num_tasks=1)
    with pytest.raises(FileNotFoundError):  # keeps writing after the commit (into its open
        zombie.put_many(pairs(range(50, 400), b"zombie"))  # file) until it needs a new file,
        zombie.close()                                     # which cannot be created any more
    zombie.discard()
    with pytest.raises(FileNotFoundError):
        zombie_attempt.new_partition_file()
    with pytest.raises(CommitError, match="staging directory is gone"):
        TaskAttempt(job.ctx, 0, "too-late")
    assert not os.path.exists(os.path.join(uri, layout.staging_dir(job.ctx.job_id)))
    assert content(uri) == dict(pairs(range(50), b"good"))
    KeyValueSystem().gc(uri, older_than=0)
    assert version_files(uri, record.version) == \
        {p["path"] for p in m0["partitions"]} | {layout.MANIFEST}
    assert content(uri) == dict(pairs(range(50), b"good"))


@pytest.mark.parametrize("problem", ["none-message", "missing-task", "two-messages", "extra-task",
                                     "size", "checksum", "count", "path", "path-not-text",
                                     "missing-file"])
def test_commit_refuses_bad_messages_and_publishes_nothing(uri, problem):
    job = Job.setup(uri, conf=SMALL)
    m0 = run_task(job, 0, pairs(range(0, 100), b"v"))
    m1 = run_task(job, 1, pairs(range(100, 200), b"v"))
    messages, num_tasks = [m0, m1], 2
    part = m1["partitions"][0]
    if problem == "none-message":
        messages = [m0, None]
    elif problem == "missing-task":
        messages = [m0]
    elif problem == "two-messages":
        messages = [m0, m1, run_task(job, 1, pairs(range(100, 200), b"v"))]
        num_tasks = None
    elif problem == "extra-task":
        messages = [m0, m1, {**m1, "task_id": 7}]
    elif problem == "size":
        part["size"] += 1
    elif problem == "checksum":
        part["footer_checksum"] = "0" * 16
    elif problem == "count":
        part["count"] -= 1
    elif problem == "path":
        part["path"] = m0["partitions"][0]["path"]
    elif problem == "path-not-text":
        part["path"] = 5
    elif problem == "missing-file":
        os.unlink(os.path.join(uri, layout.staging_dir(job.ctx.job_id), part["path"]))
    with pytest.raises(CommitError) as info:
        job.commit(messages, num_tasks=num_tasks)
    assert info.value.landed is False
    assert versions.read_state(FileIO(uri)).seq == 0
    job.abort()
    job.abort()
    assert not os.path.exists(uri)  # the job created the store directory: nothing is left


@pytest.mark.parametrize("problem", ["size", "missing-file", "checksum"])
def test_commit_verify_sizes_checks_listing_only(uri, problem):
    """kvio.commit.verify=sizes (the default on object stores) checks each listed file's
    existence and size from one listing; a wrong footer checksum is then left to readers."""
    job = Job.setup(uri, conf={**SMALL, "kvio.commit.verify": "sizes"})
    m0 = run_task(job, 0, pairs(range(0, 100), b"v"))
    part = m0["partitions"][-1]
    if problem == "size":
        part["size"] -= 1
    elif problem == "missing-file":
        os.unlink(os.path.join(uri, layout.staging_dir(job.ctx.job_id), part["path"]))
    else:
        part["footer_checksum"] = "0" * 16
        job.commit([m0])
        with pytest.raises(KvioError, match="footer"):
            content(uri)
        return
    expected = "is missing" if problem == "missing-file" else "holds .* bytes, its description says"
    with pytest.raises(CommitError, match=expected) as info:
        job.commit([m0])
    assert info.value.landed is False
    assert part["path"] in str(info.value)
    assert versions.read_state(FileIO(uri)).seq == 0


def test_commit_verify_setting_is_checked():
    with pytest.raises(KvioError, match="kvio.commit.verify must be one of auto, footers, sizes"):
        Job.setup("/nonexistent-kvio-dir/x", conf={"kvio.commit.verify": "some"})


def test_commit_twice_and_abort_after_publish(uri):
    kvs = KeyValueSystem()
    write(kvs, uri, pairs(range(10), b"old"))
    job = Job.setup(uri, mode="overwrite")
    m0 = run_task(job, 0, pairs(range(5), b"new"))
    other_attempt = job.task(0, "speculative")
    record = job.commit([m0])
    with pytest.raises(CommitError, match="already committed") as info:
        job.commit([m0])
    assert info.value.landed is True
    again = Job(JobContext.from_json(job.ctx.to_json()))  # e.g. a retried driver step
    with pytest.raises(CommitError, match=f"already committed \\(commit {record.seq}\\)") as info:
        again.commit([m0])
    assert info.value.landed is True
    for _ in range(2):  # Spark calls abort when commit raises; twice must be harmless
        job.abort(messages=[m0])
        again.abort()
        other_attempt.abort()
        assert not os.path.exists(os.path.join(uri, layout.staging_dir(job.ctx.job_id)))
    assert versions.read_state(FileIO(uri)).seq == 2
    assert content(uri) == dict(pairs(range(5), b"new"))


def test_abort_before_commit_then_commit_fails_cleanly(uri):
    job = Job.setup(uri)
    attempt = job.task(0)
    writer = SortedPairWriter(attempt)
    writer.put(b"a", b"1")
    message = writer.close()
    attempt.abort()
    attempt.abort()
    job.abort()
    job.abort()
    with pytest.raises(CommitError, match="staging directory is gone") as info:
        job.commit([message])
    assert info.value.landed is False
    with pytest.raises(StoreNotFoundError, match="no store at this location"):
        KeyValueSystem().open_store(uri)


def test_empty_job_publishes_a_valid_empty_store(tmp_path):
    no_tasks = str(tmp_path / "no-tasks")
    job = Job.setup(no_tasks)
    assert job.commit([], num_tasks=0).seq == 1
    no_records = str(tmp_path / "no-records")
    write(KeyValueSystem(), no_records, [])
    for uri in (no_tasks, no_records):
        with KeyValueSystem().open_store(uri) as reader:
            reader.verify()
            assert len(reader) == 0 and list(reader.items()) == [] and reader.get(b"a") is None
            assert reader.manifest.partitions == ()


def test_a_thousand_partitions_commit_quickly(uri):
    job = Job.setup(uri)
    ctx = job.ctx
    messages = []
    for t in range(1000):
        attempt = TaskAttempt(ctx, t)
        writer = SortedPairWriter(attempt)
        writer.put(key(t), b"v%d" % t)
        messages.append(writer.close())
    start = time.perf_counter()
    record = Job(ctx).commit(messages, num_tasks=1000)
    elapsed = time.perf_counter() - start
    assert record.partitions == 1000
    assert elapsed < 20, f"committing 1,000 partitions took {elapsed:.1f} s"
    with KeyValueSystem().open_store(uri) as reader:
        assert len(reader.manifest.partitions) == 1000 and len(reader) == 1000
        assert reader[key(999)] == b"v999" and reader.get(key(1000)) is None


@pytest.mark.parametrize("name", ["a store with spaces", "ünïcødé/слой/数据 store"])
def test_paths_with_spaces_and_unicode(tmp_path, name):
    kvs = KeyValueSystem(conf=SMALL)
    for uri in (str(tmp_path / "plain" / name), (tmp_path / "url" / name).as_uri().replace("%20", " ")):
        if "%" in uri:  # fsspec does not percent-decode file:// URLs: use the literal name
            uri = "file://" + str(tmp_path / "url" / name)
        write(kvs, uri, pairs(range(300), b"a"))
        write(kvs, uri, pairs(range(100, 200), b"b"), mode="append")
        assert content(uri, kvs) == {**dict(pairs(range(300), b"a")), **dict(pairs(range(100, 200), b"b"))}
        assert kvs.rollback(uri)["op"] == "rollback"
        assert content(uri, kvs) == dict(pairs(range(300), b"a"))
        kvs.gc(uri, older_than=0)


# ---- modes -------------------------------------------------------------------------------------
def test_mode_error_is_the_default_and_refuses_an_existing_store(uri):
    kvs = KeyValueSystem()
    write(kvs, uri, [(b"a", b"1")])
    with pytest.raises(StoreExistsError, match="overwrite"):
        kvs.create_store(uri)
    with pytest.raises(StoreExistsError):
        Job.setup(uri, mode="error")
    with pytest.raises(KvioError, match="unknown write mode"):
        Job.setup(uri, mode="upsert")


def test_mode_ignore(uri):
    kvs = KeyValueSystem()
    assert write(kvs, uri, [(b"a", b"1")], mode="ignore")["op"] == "create"  # absent: creates
    assert write(kvs, uri, [(b"b", b"2")], mode="ignore") is None
    job = Job.setup(uri, mode="ignore")             # the task side of a skipped job
    attempt = TaskAttempt(JobContext.from_json(job.ctx.to_json()), 0)
    assert attempt.skipped
    writer = SortedPairWriter(attempt)
    writer.put_many(pairs(range(1000), b"x"))
    message = writer.close()
    assert message["partitions"] == []
    assert job.commit([message]) is None
    job.abort()
    assert content(uri) == {b"a": b"1"}
    assert versions.read_state(FileIO(uri)).seq == 1
    assert os.listdir(os.path.join(uri, "_staging")) == []


def test_mode_ignore_that_loses_a_create_race_publishes_nothing(uri):
    ignoring = Job.setup(uri, mode="ignore")
    m = run_task(ignoring, 0, [(b"i", b"ignored")])
    write(KeyValueSystem(), uri, [(b"w", b"winner")])
    assert ignoring.commit([m]) is None
    assert content(uri) == {b"w": b"winner"}
    assert os.listdir(os.path.join(uri, "_versions")) == [versions.read_state(FileIO(uri)).version]


def test_mode_overwrite(uri):
    kvs = KeyValueSystem()
    assert write(kvs, uri, [(b"a", b"1")], mode="overwrite")["op"] == "create"
    record = write(kvs, uri, [(b"b", b"2")], mode="overwrite")
    assert record["op"] == "overwrite" and record["seq"] == 2
    assert content(uri) == {b"b": b"2"}


def test_mode_append_links_the_current_files_and_new_values_win(uri):
    kvs = KeyValueSystem(conf=SMALL)
    assert write(kvs, uri, pairs(range(0, 300), b"one"), mode="append")["op"] == "create"
    first = versions.read_state(FileIO(uri)).version
    record = write(kvs, uri, pairs(range(200, 400), b"two"), mode="append")
    assert record["op"] == "append"
    expected = {**dict(pairs(range(0, 300), b"one")), **dict(pairs(range(200, 400), b"two"))}
    assert content(uri, kvs) == expected
    # the old files are hard links, not copies
    old_manifest = versions.load_manifest(FileIO(uri), first)
    new_manifest = versions.load_manifest(FileIO(uri), record["version"])
    old_inodes = {os.stat(os.path.join(uri, "_versions", first, p.path)).st_ino
                  for p in old_manifest.partitions}
    carried = [p for p in new_manifest.partitions if p.path.startswith(layout.CARRIED)]
    assert {os.stat(os.path.join(uri, "_versions", record["version"], p.path)).st_ino
            for p in carried} == old_inodes
    write(kvs, uri, pairs(range(0, 10), b"three"), mode="append")  # an append of an append
    expected.update(pairs(range(0, 10), b"three"))
    assert content(uri, kvs) == expected
    KeyValueSystem(conf={"kvio.versions.retain": "1"}).gc(uri, older_than=0)  # old dirs gone,
    assert content(uri, kvs) == expected                                      # links live on


def test_append_through_the_task_protocol(uri):
    kvs = KeyValueSystem()
    write(kvs, uri, pairs(range(0, 100), b"base"))
    job = Job.setup(uri, mode="append")
    messages = [run_task(job, 0, pairs(range(50, 60), b"t0")), run_task(job, 1, pairs(range(90, 120), b"t1"))]
    assert job.commit(messages).op == "append"
    expected = {**dict(pairs(range(0, 100), b"base")), **dict(pairs(range(50, 60), b"t0")),
                **dict(pairs(range(90, 120), b"t1"))}
    assert content(uri) == expected


# ---- compare-and-swap ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["error", "overwrite", "append"])
def test_two_jobs_from_the_same_base_exactly_one_wins(uri, mode):
    kvs = KeyValueSystem()
    if mode != "error":
        write(kvs, uri, [(b"base", b"0")])
    a, b = Job.setup(uri, mode=mode), Job.setup(uri, mode=mode)
    ma, mb = run_task(a, 0, [(b"a", b"A")]), run_task(b, 0, [(b"b", b"B")])
    won = a.commit([ma])
    with pytest.raises(ConcurrentCommitError, match="updated by another process") as info:
        b.commit([mb])
    assert info.value.landed is False
    assert not os.path.exists(os.path.join(uri, layout.version_dir(b.ctx.job_id)))
    assert not os.path.exists(os.path.join(uri, layout.staging_dir(b.ctx.job_id)))
    b.abort()
    expected = {b"a": b"A", **({b"base": b"0"} if mode == "append" else {})}
    assert content(uri) == expected
    assert versions.read_state(FileIO(uri)).commit == won


def test_a_job_from_before_a_delete_and_recreate_loses(uri):
    kvs = KeyValueSystem()
    write(kvs, uri, [(b"a", b"1")])
    write(kvs, uri, [(b"a", b"2")], mode="overwrite")
    stale = Job.setup(uri, mode="overwrite")         # starts from seq 2
    kvs.delete_store(uri)
    write(kvs, uri, [(b"x", b"1")])                   # a new store: seq 1 ...
    write(kvs, uri, [(b"x", b"2")], mode="overwrite")  # ... and seq 2
    os.makedirs(os.path.join(uri, layout.staging_dir(stale.ctx.job_id)))  # even with its staging
    with pytest.raises(ConcurrentCommitError, match="this job started from"):
        stale.commit([], num_tasks=0)
    assert content(uri) == {b"x": b"2"}


# ---- versions, rollback, garbage collection ------------------------------------------------------
def test_rollback_publishes_a_new_version_of_linked_files(uri):
    kvs = KeyValueSystem(conf=NO_GRACE)
    write(kvs, uri, [(b"a", b"v1")])
    write(kvs, uri, [(b"a", b"v2")], mode="overwrite")
    v1, v2 = [h["version"] for h in kvs.versions(uri)]
    record = kvs.rollback(uri)
    assert record["op"] == "rollback" and record["source"] == v1 and record["version"] not in (v1, v2)
    assert content(uri) == {b"a": b"v1"}
    kvs.rollback(uri, v2)
    assert content(uri) == {b"a": b"v2"}
    history = kvs.versions(uri)
    assert [h["seq"] for h in history] == [1, 2, 3, 4] and history[-1]["current"]
    assert [h["available"] for h in history] == [False, False, True, True]  # retain = 2
    with pytest.raises(StoreNotFoundError, match="not retained"):
        kvs.rollback(uri, v1)


def test_gc_keeps_retained_versions_and_young_leftovers(uri):
    kvs = KeyValueSystem(conf={"kvio.versions.retain": "2", **NO_GRACE})
    for i in range(4):
        write(kvs, uri, [(b"a", b"v%d" % i)], mode="overwrite")
    io = FileIO(uri)
    history = versions.history(io)
    assert len(history) == 4  # commit records are never deleted
    assert sorted(os.listdir(os.path.join(uri, "_versions"))) == \
        sorted(h.version for h in history[2:])
    crashed = Job.setup(uri, mode="overwrite")        # a driver that died mid-job
    run_task(crashed, 0, [(b"c", b"c")])
    orphan = Job.setup(uri, mode="overwrite")         # died between rename and publish
    run_task(orphan, 0, [(b"o", b"o")])
    io.rename_dir(layout.staging_dir(orphan.ctx.job_id), layout.version_dir(orphan.ctx.job_id))
    junk = os.path.join(uri, "_versions", history[-1].version, "task-00009-x-abcdef")
    os.makedirs(junk)                                  # an unlisted attempt dir in a live version
    removed = kvs.gc(uri)                              # default: only what is older than 24h
    assert removed["staging"] == [] and removed["versions"] == []
    assert not os.path.exists(junk)
    old = time.time() - 2 * 86400
    for top, dirs, files in os.walk(uri):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (old, old))
    removed = kvs.gc(uri)
    assert removed["staging"] == [crashed.ctx.job_id]
    assert removed["versions"] == [orphan.ctx.job_id]
    assert removed["commits"] == []
    assert content(uri) == {b"a": b"v3"}
    with pytest.raises(CommitError, match="staging directory is gone"):
        crashed.commit([])


@pytest.mark.parametrize("pinned", [True, False])
def test_a_reader_keeps_its_version_while_newer_ones_are_published_and_collected(uri, pinned):
    kvs = KeyValueSystem(conf={**SMALL, **NO_GRACE})
    data = {0: dict(pairs(range(0, 500), b"v0"))}
    write(kvs, uri, sorted(data[0].items()))
    reader = kvs.open_store(uri)
    version = reader.version
    if not pinned:  # a reader that could not pin (a read-only store): its mapped files serve it
        reader.pin.release()
    for n in range(1, 4):
        data[n] = dict(pairs(range(n * 10, 400 + n * 10), b"v%d" % n))
        write(kvs, uri, sorted(data[n].items()), mode="overwrite")
    kvs.gc(uri, older_than=0)
    assert os.path.exists(os.path.join(uri, "_versions", version)) == pinned
    with reader:
        reader.verify()
        assert dict(reader.items()) == data[0]
        assert all(reader[k] == v for k, v in data[0].items())
        assert reader.get_many([key(3), key(499), key(500)]) == [data[0][key(3)], data[0][key(499)], None]
        assert list(reader.keys(prefix=b"k0001")) == [key(i) for i in range(10, 20)]
    assert content(uri, kvs) == data[3]
    kvs.gc(uri, older_than=0)  # closed: the pin is gone, so is the version
    assert not os.path.exists(os.path.join(uri, "_versions", version))


def test_jobs_on_adjacent_paths_never_touch_each_other(tmp_path):
    kvs = KeyValueSystem()
    a, b, c = (str(tmp_path / n) for n in ("s", "s2", "s 2"))
    for uri in (a, b, c):
        write(kvs, uri, [(b"k", uri.encode())])
    jobs = {uri: Job.setup(uri, mode="overwrite") for uri in (a, b, c)}
    messages = {uri: run_task(job, 0, [(b"k", b"new " + uri.encode())]) for uri, job in jobs.items()}
    jobs[b].abort()
    KeyValueSystem(conf={"kvio.versions.retain": "1"}).gc(c, older_than=0)
    jobs[a].commit([messages[a]])
    assert content(a) == {b"k": b"new " + a.encode()}
    assert content(b) == {b"k": b.encode()}
    assert content(c) == {b"k": c.encode()}
    with pytest.raises(CommitError):
        jobs[c].commit([messages[c]])  # its own store's gc with --older-than 0 removed it
