"""Regression tests of issue 10's "stores that stop working" items 7, 8 and 9, two of item 16,
and issue 9's writer lifecycle. Real stores in real temporary directories, the real CLI."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess

import pytest

from kvio import KeyValueSystem
from kvio.cli import main
from kvio.committer import Job
from kvio.errors import (
    CommitError,
    ConcurrentCommitError,
    CorruptStoreError,
    InvalidArgumentError,
    KvioError,
    StoreNotFoundError,
    UnsupportedFormatError,
    VersionNotRetainedError,
    WriterClosedError,
)


def write(kvs: KeyValueSystem, uri, pairs: dict[bytes, bytes], mode: str = "error") -> dict:
    with kvs.create_store(str(uri), mode=mode) as writer:
        for key in sorted(pairs):
            writer.put(key, pairs[key])
    assert writer.record is not None
    return writer.record


def content(uri, version: str | None = None) -> dict[bytes, bytes]:
    with KeyValueSystem().open_store(str(uri), version=version) as reader:
        return dict(reader.items())


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def record_file(uri, seq: int) -> str:
    return os.path.join(str(uri), "_commits", f"{seq:010d}.commit")


def damage(path: str) -> bytes:
    """Flip one bit in the body of a document; returns the damaged bytes."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-3] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    return bytes(data)


def all_records(uri) -> dict[str, bytes]:
    out = {}
    for path in sorted(glob.glob(os.path.join(str(uri), "_commits", "*.commit"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


@pytest.fixture
def two_versions(tmp_path):
    """A store with versions v1 (commit 1) and v2 (commit 2, whose record is then damaged)."""
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    v1 = write(kvs, uri, {b"a": b"v1"})["version"]
    v2 = write(kvs, uri, {b"a": b"v2", b"b": b"v2"}, mode="overwrite")["version"]
    damage(record_file(uri, 2))
    return kvs, uri, v1, v2


# ---- item 7: a damaged newest commit record ----------------------------------------------------
def test_a_damaged_newest_record_stops_readers_writers_and_gc_with_the_way_out(two_versions):
    kvs, uri, v1, _ = two_versions
    before = all_records(uri)
    attempts = [lambda: kvs.open_store(uri), lambda: kvs.create_store(uri, mode="overwrite"),
                lambda: kvs.gc(uri, older_than=0), lambda: kvs.rollback(uri, v1),
                lambda: kvs.merge_store(uri, uri + "-other")]
    for attempt in attempts:
        with pytest.raises(CorruptStoreError) as info:
            attempt()
        message = str(info.value)
        assert "commit record 2, the newest, is damaged" in message
        assert "kvio repair" in message and "kvio rm" in message
        assert info.value.file == os.path.join(uri, "_commits", "0000000002.commit")
    assert all_records(uri) == before  # nothing was written, nothing rewritten
    assert os.listdir(os.path.join(uri, "_staging")) == []


def test_versions_lists_the_damaged_record(two_versions, capsys):
    kvs, uri, v1, _ = two_versions
    rows = kvs.versions(uri)
    assert [(r["seq"], r["version"], r["current"], r["live"]) for r in rows] == \
        [(1, v1, False, False), (2, None, True, False)]
    assert "checksum mismatch" in rows[1]["corrupt"]
    assert rows[1]["file"].endswith("0000000002.commit")
    code, out, err = run(capsys, "versions", uri)
    assert code == 0
    assert out.splitlines()[2].split()[-1] == "DAMAGED"
    assert "commit 2 is damaged" in err and f"kvio repair {uri}" in err


def test_rm_deletes_a_store_whose_newest_record_is_damaged(two_versions, capsys):
    _, uri, _, _ = two_versions
    code, out, err = run(capsys, "rm", uri)
    assert (code, out) == (0, f"deleted {uri}\n")
    assert "note: commit 2 was damaged" in err
    assert not os.path.exists(uri)


def test_repair_asks_which_version_when_the_damaged_record_may_have_published_one(
        two_versions, capsys):
    kvs, uri, v1, v2 = two_versions
    before = all_records(uri)
    code, out, err = run(capsys, "repair", uri)
    assert (code, out) == (1, "")
    assert f"kvio repair {uri} {v2}" in err and f"kvio repair {uri} {v1}" in err
    assert all_records(uri) == before  # nothing published
    code, out, err = run(capsys, "repair", uri, v2)
    assert code == 0, err
    assert "damaged: commit 2" in out and f"version {v1}" in out
    assert f"a copy of version {v2}" in out
    assert content(uri) == {b"a": b"v2", b"b": b"v2"}
    records = all_records(uri)
    assert {k: records[k] for k in before} == before  # the damaged record stays as it was
    assert len(records) == 3
    code, out, err = run(capsys, "versions", uri)
    assert code == 0
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["available", "DAMAGED", "current"]
    assert "commit 2 is damaged" in err and "kvio repair" not in err


def test_repair_to_the_last_intact_version_then_the_store_works_again(two_versions):
    kvs, uri, v1, v2 = two_versions
    report = kvs.repair(uri, v1)
    record = report["record"]
    assert (record["seq"], record["op"], record["source"]) == (3, "repair", v1)
    assert record["damaged"] == [2]
    assert report["restored"] == v1 and [d["seq"] for d in report["damaged"]] == [2]
    assert report["unnamed_versions"] == [v2]
    assert record["version"] not in (v1, v2)
    assert content(uri) == {b"a": b"v1"}
    # gc keeps the version the damaged record may name; history steps over the damaged record
    kvs.gc(uri, older_than=0)
    assert os.path.exists(os.path.join(uri, "_versions", v2, "manifest.kvm"))
    rows = kvs.versions(uri)
    assert [(r["seq"], "corrupt" in r, r["current"]) for r in rows] == \
        [(1, False, False), (2, True, False), (3, False, True)]
    write(kvs, uri, {b"c": b"v4"}, mode="overwrite")
    assert content(uri) == {b"c": b"v4"}
    assert kvs.rollback(uri)["source"] == record["version"]
    assert content(uri) == {b"a": b"v1"}


def test_repair_restores_the_last_intact_version_when_nothing_else_could_be_current(
        two_versions, capsys):
    _, uri, v1, v2 = two_versions
    os.rename(os.path.join(uri, "_versions", v2), os.path.join(str(uri) + "-lost"))
    code, out, err = run(capsys, "repair", uri, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["restored"] == v1 and report["record"]["op"] == "repair"
    assert report["last_intact"] == {"seq": 1, "version": v1, "op": "create"}
    assert content(uri) == {b"a": b"v1"}


def test_repair_of_an_intact_store_publishes_nothing(tmp_path, capsys):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"1"})
    code, out, _ = run(capsys, "repair", uri)
    assert code == 0 and "nothing to repair" in out
    assert kvs.repair(uri)["record"] is None
    assert [r["seq"] for r in kvs.versions(uri)] == [1]


def test_repair_with_nothing_intact_to_restore_points_to_rm(tmp_path):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"1"})
    damage(record_file(uri, 1))
    version = os.listdir(os.path.join(uri, "_versions"))[0]
    os.remove(os.path.join(uri, "_versions", version, "manifest.kvm"))
    with pytest.raises(KvioError, match="no intact commit record names a version.*kvio rm"):
        kvs.repair(uri)


def test_two_repairs_race_and_exactly_one_lands(two_versions):
    kvs, uri, v1, v2 = two_versions
    first = Job.setup(uri, mode="overwrite", repair=True)
    second = Job.setup(uri, mode="overwrite", repair=True)
    first.commit([], num_tasks=0, extra_partitions=first.carry(first.io, v1), op="repair")
    with pytest.raises(ConcurrentCommitError, match="commit 3 already exists") as info:
        second.commit([], num_tasks=0, extra_partitions=second.carry(second.io, v2),
                      op="repair")
    assert info.value.landed is False
    assert content(uri) == {b"a": b"v1"}


def test_a_repair_never_lands_on_a_store_created_anew(two_versions):
    kvs, uri, v1, _ = two_versions
    job = Job.setup(uri, mode="overwrite", repair=True)
    carried = job.carry(job.io, v1)
    staged = os.path.join(uri, "_staging", job.ctx.job_id)
    hold = str(uri) + "-held"
    os.rename(staged, hold)  # keep the job's files while the store is replaced
    kvs.delete_store(uri)
    write(kvs, uri, {b"n": b"1"})
    write(kvs, uri, {b"n": b"2"}, mode="overwrite")  # commit 2 exists again, intact
    os.rename(hold, staged)
    with pytest.raises(ConcurrentCommitError, match="commit 2 is intact now"):
        job.commit([], num_tasks=0, extra_partitions=carried, op="repair")
    assert content(uri) == {b"n": b"2"}


def test_writers_cannot_start_on_a_damaged_newest_record(two_versions):
    _, uri, _, _ = two_versions
    with pytest.raises(CorruptStoreError, match="kvio repair"):
        Job.setup(uri, mode="overwrite")
    with pytest.raises(CorruptStoreError, match="not damaged: nothing to repair"):
        Job.setup(str(uri) + "-none", mode="overwrite", repair=True)


def test_a_record_of_an_unknown_format_version_is_not_repaired(tmp_path):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"1"})
    with open(record_file(uri, 2), "wb") as f:  # as a newer kvio would write it
        f.write(b"KVIOCOMMIT 3 0000000000000000\n{}")  # 2: records of transactions
    with pytest.raises(UnsupportedFormatError):
        kvs.repair(uri)
    assert sorted(all_records(uri)) == ["0000000001.commit", "0000000002.commit"]


# ---- item 8: a failed first write leaves nothing behind -------------------------------------
def test_a_failed_first_import_leaves_no_store(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("a\t" + "x" * 5000 + "\n")
    uri = tmp_path / "new.kv"
    code, _, err = run(capsys, "import", src, uri, "--conf", "kvio.partition.size.max=4KB")
    assert code == 1 and "partition limit" in err
    assert not uri.exists()
    code, _, err = run(capsys, "info", uri)
    assert code == 1 and "no store at this location" in err


def test_a_failed_write_keeps_a_directory_it_did_not_create(tmp_path):
    uri = tmp_path / "made-by-the-user"
    uri.mkdir()
    with pytest.raises(RuntimeError):
        with KeyValueSystem().create_store(str(uri)) as writer:
            writer.put(b"a", b"1")
            raise RuntimeError("boom")
    assert uri.is_dir() and os.listdir(uri) == []


def test_an_aborted_job_never_removes_what_a_concurrent_writer_created(tmp_path):
    uri = str(tmp_path / "s")
    first = Job.setup(uri)           # creates the store directory, marker, _staging, _versions
    second = Job.setup(uri)          # a concurrent first writer on the same path
    first.abort()
    assert sorted(os.listdir(uri)) == ["_kvio_store", "_staging", "_versions"]
    second.commit([], num_tasks=0)
    assert content(uri) == {}
    third = Job.setup(uri, mode="overwrite")
    third.abort()                    # the store exists: an abort removes only its staging
    assert content(uri) == {}
    assert os.listdir(os.path.join(uri, "_staging")) == []


def test_an_abort_after_the_publish_keeps_the_store(tmp_path):
    uri = str(tmp_path / "s")
    job = Job.setup(uri)
    job.commit([], num_tasks=0)
    job.abort()
    assert content(uri) == {}


# ---- item 9: a version that retention removed ------------------------------------------------
def test_opening_a_version_that_retention_removed_says_it_is_not_retained(tmp_path):
    kvs = KeyValueSystem(conf={"kvio.versions.retain": "1", "kvio.gc.grace": "0"})
    uri = str(tmp_path / "s")
    v1 = write(kvs, uri, {b"a": b"1"})["version"]
    write(kvs, uri, {b"a": b"2"}, mode="overwrite")
    expected = f"version {v1} \\(commit 1\\) is not retained"
    with pytest.raises(VersionNotRetainedError, match=expected) as info:
        kvs.open_store(uri, version=v1)
    assert uri in str(info.value)
    with pytest.raises(VersionNotRetainedError, match="not retained"):
        kvs.rollback(uri, v1)
    with pytest.raises(StoreNotFoundError, match="not in the store's history"):
        kvs.open_store(uri, version="20000101T000000Z-000000000000")


def test_a_retained_older_version_still_opens(tmp_path):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    v1 = write(kvs, uri, {b"a": b"1"})["version"]
    write(kvs, uri, {b"a": b"2"}, mode="overwrite")
    assert content(uri, v1) == {b"a": b"1"}


# ---- issue 9: the writer's lifecycle -----------------------------------------------------------
def test_commit_inside_the_with_block_is_idempotent(tmp_path):
    uri = str(tmp_path / "s")
    with KeyValueSystem().create_store(uri) as writer:
        writer.put(b"a", b"1")
        record = writer.commit()
        assert writer.commit() == record
    assert writer.record == record and record["seq"] == 1
    assert writer.close() == record and writer.close() == record
    with pytest.raises(WriterClosedError, match="already committed"):
        writer.put(b"b", b"2")
    with pytest.raises(WriterClosedError):
        writer.put_many([(b"b", b"2")])
    writer.abort()  # after the publish: nothing to undo
    assert content(uri) == {b"a": b"1"}
    assert [r["seq"] for r in KeyValueSystem().versions(uri)] == [1]


def test_close_publishes_and_commit_after_abort_is_refused(tmp_path):
    kvs = KeyValueSystem()
    writer = kvs.create_store(str(tmp_path / "closed"))
    writer.put(b"a", b"1")
    assert writer.close()["seq"] == 1
    assert content(tmp_path / "closed") == {b"a": b"1"}
    aborted = kvs.create_store(str(tmp_path / "aborted"))
    aborted.abort()
    aborted.abort()
    with pytest.raises(WriterClosedError, match="aborted"):
        aborted.commit()
    with pytest.raises(WriterClosedError):
        aborted.put(b"a", b"1")
    assert aborted.close() is None
    assert not (tmp_path / "aborted").exists()


def test_a_skipped_writer_is_closed_after_commit_too(tmp_path):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"1"})
    with kvs.create_store(uri, mode="ignore") as writer:
        writer.put(b"b", b"2")
        assert writer.commit() is None
    with pytest.raises(WriterClosedError):
        writer.put(b"c", b"3")


def test_job_commit_twice_still_reports_that_it_landed(tmp_path):
    job = Job.setup(str(tmp_path / "s"))
    record = job.commit([], num_tasks=0)
    with pytest.raises(CommitError, match=f"already committed \\(commit {record.seq}\\)") as info:
        job.commit([], num_tasks=0)
    assert info.value.landed is True


# ---- item 16: gc errors and rm of a symlink -----------------------------------------------------
@contextlib.contextmanager
def undeletable(path: str):
    """Make ``path`` impossible to delete: a read-only parent for a normal user; root ignores
    permissions, so there the file is made immutable (chattr +i; skipped where unsupported)."""
    parent = os.path.dirname(path)
    if os.geteuid() != 0:
        os.chmod(parent, 0o555)
        try:
            yield
        finally:
            os.chmod(parent, 0o755)
        return
    try:
        subprocess.run(["chattr", "+i", path], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a file immutable here: {exc}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", path], check=True)


def test_gc_errors_name_the_full_path(tmp_path, capsys):
    kvs = KeyValueSystem(conf={"kvio.versions.retain": "1", "kvio.gc.grace": "0"})
    uri = str(tmp_path / "s")
    keep = KeyValueSystem(conf={"kvio.versions.retain": "5"})
    old = write(keep, uri, {b"a": b"1"})["version"]
    write(keep, uri, {b"a": b"2"}, mode="overwrite")
    stuck = glob.glob(os.path.join(uri, "_versions", old, "task-*", "*.kvp"))[0]
    with undeletable(stuck):
        with pytest.raises(KvioError) as info:
            kvs.gc(uri, older_than=0)
        assert info.value.file == stuck
        assert f"gc could not remove version {old}" in str(info.value)
        code, _, err = run(capsys, "gc", uri, "--conf", "kvio.versions.retain=1", "--conf",
                           "kvio.gc.grace=0")
        assert code == 1 and f"file={stuck}" in err
    kvs.gc(uri, older_than=0)
    assert not os.path.exists(os.path.join(uri, "_versions", old))


def test_rm_of_a_symlink_to_a_store_refuses_and_leaves_both_intact(tmp_path, capsys):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"1"})
    link = tmp_path / "link"
    link.symlink_to(uri)
    before = all_records(uri)
    with pytest.raises(InvalidArgumentError, match="is a symbolic link to"):
        kvs.delete_store(str(link))
    code, out, err = run(capsys, "rm", f"{link}/")
    assert (code, out) == (1, "")
    assert "symbolic link" in err and uri in err
    assert all_records(uri) == before and content(uri) == {b"a": b"1"}
    assert content(link) == {b"a": b"1"}


def test_delete_removes_commit_records_last_and_oldest_first(tmp_path, monkeypatch):
    """An interrupted delete must never make an older version the newest record again: the
    data goes first, then the commit records in ascending order (the delete record last)."""
    import os as _os

    from kvio import KeyValueSystem, StoreNotFoundError
    kvs = KeyValueSystem(conf={"kvio.versions.retain": "5"})
    uri = str(tmp_path / "s")
    for n in range(6):
        with kvs.create_store(uri, mode="overwrite") as w:
            w.put(b"k", b"%d" % n)
    removed: list[str] = []

    def recording(real):
        def remove(path, *args, **kwargs):
            removed.append(_os.fsdecode(path))
            return real(path, *args, **kwargs)
        return remove
    monkeypatch.setattr(_os, "unlink", recording(_os.unlink))
    monkeypatch.setattr(_os, "remove", recording(_os.remove))
    kvs.delete_store(uri)
    monkeypatch.undo()
    def is_record(path: str) -> bool:  # (publishing also removes its own .tmp- file)
        name = _os.path.basename(path)
        return name.endswith(".commit") and name[:10].isdigit()
    commits = [_os.path.basename(p) for p in removed if is_record(p)]
    assert commits == sorted(commits) and len(commits) == 7  # six versions and the delete
    first_commit = next(i for i, p in enumerate(removed) if is_record(p))
    assert all(is_record(p) for p in removed[first_commit:])
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(uri)


def test_interrupted_delete_reads_as_deleted_and_a_rerun_finishes(tmp_path, monkeypatch):
    from kvio import KeyValueSystem, StoreNotFoundError
    from kvio.fs import FileIO
    kvs = KeyValueSystem()
    uri = str(tmp_path / "s")
    for n in range(3):
        with kvs.create_store(uri, mode="overwrite") as w:
            w.put(b"k", b"%d" % n)
    real = FileIO.delete_file
    calls = {"n": 0}

    def interrupted(self, rel):
        if rel.endswith(".commit"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        return real(self, rel)
    monkeypatch.setattr(FileIO, "delete_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kvs.delete_store(uri)
    monkeypatch.undo()
    with pytest.raises(StoreNotFoundError, match="deleted"):
        kvs.open_store(uri)
    kvs.delete_store(uri)
    assert not (tmp_path / "s").exists()
