"""How each filesystem publishes atomically, and the refusal where it cannot.

HDFS itself cannot run here (no NameNode); what is tested is the capability detection with the
real client classes (hdfs-native where installed, fsspec's pyarrow HadoopFileSystem, WebHDFS)
and, with real local files, the pyarrow behaviour that makes kvio refuse it.
"""
from __future__ import annotations

import os
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from kvio import CommitError, KeyValueSystem, UnsafeFilesystemError
from kvio import fs as kvfs
from kvio.committer import Job
from kvio.errors import FilesystemUnreachableError
from kvio.fs import FileIO, detect_capability
from tests.helpers import require_module


class ObjectStoreLike(MemoryFileSystem):
    """An in-memory filesystem under another protocol name: to kvio it is an unknown remote
    filesystem without an atomic no-clobber rename, like an object store."""
    protocol = "kvtestobj"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str):
            path = path.removeprefix("kvtestobj://")
        return super()._strip_protocol(path)


fsspec.register_implementation("kvtestobj", ObjectStoreLike, clobber=True)


def write(kvs, uri, data, mode="error"):
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(data)
    return writer.record


def test_capabilities_of_local_and_memory(tmp_path):
    assert FileIO(str(tmp_path)).capability == kvfs.LOCAL
    assert FileIO(f"file://{tmp_path}").capability == kvfs.LOCAL
    assert FileIO("memory://kvio-cap/x").capability == kvfs.MEMORY
    for io in (FileIO(str(tmp_path)), FileIO("memory://kvio-cap/x")):
        assert io.can_publish_atomically
        io.require_atomic()


def test_an_object_store_is_refused_unless_the_user_opts_in():
    uri = f"kvtestobj://bucket/{uuid.uuid4().hex}/store"
    io = FileIO(uri)
    assert io.capability == kvfs.NONE and not io.can_publish_atomically
    kvs = KeyValueSystem()
    with pytest.raises(UnsafeFilesystemError, match="kvio.commit.allow.non.atomic"):
        kvs.create_store(uri)
    with pytest.raises(UnsafeFilesystemError):
        Job.setup(uri, mode="overwrite")
    assert not ObjectStoreLike().exists(uri)  # refused before writing anything

    unsafe = KeyValueSystem(conf={"kvio.commit.allow.non.atomic": "true"})
    write(unsafe, uri, [(b"a", b"1"), (b"b", b"2")])
    write(unsafe, uri, [(b"b", b"3")], mode="append")
    with unsafe.open_store(uri) as reader:
        reader.verify()
        assert dict(reader.items()) == {b"a": b"1", b"b": b"3"}
    assert unsafe.rollback(uri)["op"] == "rollback"
    with unsafe.open_store(uri) as reader:
        assert dict(reader.items()) == {b"a": b"1", b"b": b"2"}
    # the commit record is one conditional whole-object write: a second one is refused
    with pytest.raises(FileExistsError):
        FileIO(uri, allow_non_atomic=True).write_new_file("_commits/0000000001.commit", b"x")
    ObjectStoreLike().rm(FileIO(uri).root, recursive=True)


def test_hdfs_native_is_detected_and_uses_its_no_overwrite_rename():
    hdfs_native_fsspec = require_module("hdfs_native.fsspec", "the hdfs extra (kvio[hdfs]) is not installed")
    # Constructing the client does not contact the NameNode, so this runs without a cluster.
    io = FileIO("hdfs://127.0.0.1:1/data/store ü")
    # fsspec's hdfs:// is hdfs-native (the only filesystem detected as HDFS_NOREPLACE)
    assert io.capability == kvfs.HDFS_NOREPLACE and io.atomic_rename and io.can_publish_atomically
    assert io.root == "/data/store ü"
    io.require_atomic()
    with pytest.raises(FilesystemUnreachableError):  # its first use does (tests/test_connect.py)
        io.exists()
    assert detect_capability(hdfs_native_fsspec.ViewfsFileSystem)[0] == kvfs.HDFS_NOREPLACE


def test_pyarrow_hdfs_and_webhdfs_are_not_trusted():
    from fsspec.implementations.arrow import ArrowFSWrapper, HadoopFileSystem
    capability, reason = detect_capability(HadoopFileSystem)
    assert capability == kvfs.NONE and "hdfs-native" in reason
    assert detect_capability(ArrowFSWrapper)[0] == kvfs.NONE
    try:
        from fsspec.implementations.webhdfs import WebHDFS  # needs requests
    except ImportError:
        return
    assert detect_capability(WebHDFS)[0] == kvfs.NONE


def test_why_pyarrow_move_cannot_be_a_commit_point(tmp_path):
    """Arrow's filesystems replace an existing target on move; kvio's publish never does."""
    from fsspec.implementations.arrow import ArrowFSWrapper
    from pyarrow.fs import LocalFileSystem
    arrow = ArrowFSWrapper(LocalFileSystem())
    assert detect_capability(arrow)[0] == kvfs.NONE
    (tmp_path / "winner").write_bytes(b"winner's commit")
    (tmp_path / "loser").write_bytes(b"loser's commit")
    arrow.mv(str(tmp_path / "loser"), str(tmp_path / "winner"))
    assert (tmp_path / "winner").read_bytes() == b"loser's commit"  # clobbered
    io = FileIO(str(tmp_path))
    (tmp_path / "loser2").write_bytes(b"loser's commit")
    with pytest.raises(FileExistsError):
        io.publish_file("loser2", "winner")
    with pytest.raises(FileExistsError):
        io.write_new_file("winner", b"another")
    assert (tmp_path / "winner").read_bytes() == b"loser's commit"


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_directory_publish_never_replaces_a_target(tmp_path, kind):
    uri = str(tmp_path) if kind == "local" else f"memory://kvio-rename/{uuid.uuid4().hex}"
    io = FileIO(uri)
    for name in ("src", "empty", "full"):
        io.makedirs(name)
    io.write_new_file("src/file", b"data")
    io.write_new_file("full/file", b"other")
    if kind == "local":  # the trap: os.rename silently replaces an empty directory
        os.makedirs(tmp_path / "probe-src")
        (tmp_path / "probe-src" / "f").write_bytes(b"x")
        os.makedirs(tmp_path / "probe-empty")
        os.rename(tmp_path / "probe-src", tmp_path / "probe-empty")
        assert (tmp_path / "probe-empty" / "f").exists()
    for target in ("empty", "full"):
        with pytest.raises(FileExistsError):
            io.rename_dir("src", target)
    assert io.read_bytes("src/file") == b"data" and io.listdir("empty") == []
    io.rename_dir("src", "fresh/dir")
    assert io.read_bytes("fresh/dir/file") == b"data" and not io.exists("src")
    if kind == "memory":
        io.delete_tree()


def test_staging_on_another_device_is_refused(tmp_path):
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)) or \
            os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second local filesystem (/dev/shm on another device)")
    elsewhere = os.path.join(shm, f"kvio-staging-{uuid.uuid4().hex}")
    os.makedirs(elsewhere)
    try:
        store = tmp_path / "store"
        store.mkdir()
        (store / "_staging").symlink_to(elsewhere)
        with pytest.raises(CommitError, match="different device"):
            Job.setup(str(store))
        assert os.listdir(elsewhere) == []
    finally:
        os.rmdir(elsewhere)
