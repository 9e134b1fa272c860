"""Filesystem-generic conformance: the same store tests on every backend (a local directory and
fsspec ``memory://``), through the parametrized ``fs_root`` fixture of conftest.py."""
from __future__ import annotations

import posixpath

import pyarrow as pa
import pytest
from fsspec.core import url_to_fs

from kvio import (
    CorruptStoreError,
    IncompleteStoreError,
    KeyValueSystem,
    NotAStoreError,
    StoreExistsError,
    StoreNotFoundError,
)
from kvio.fs import FileIO

from .helpers import assert_matches_model, key4, write_store

PAIRS = [(key4(i), b"v%d" % i * (i % 5)) for i in range(0, 3000, 3)]
MODEL = dict(PAIRS)


class RawFiles:
    """Direct access to the bytes under a store URI, bypassing kvio (to damage or inspect them)."""

    def __init__(self, uri: str):
        self.fs, self.root = url_to_fs(uri)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def find(self, suffix: str) -> list[str]:
        return sorted(p for p in self.fs.find(self.root) if p.endswith(suffix))

    def read(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def write(self, path: str, data: bytes) -> None:
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, data)

    def names(self, rel: str) -> list[str]:
        try:
            return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path(rel), detail=False))
        except FileNotFoundError:
            return []


@pytest.fixture
def small_kvs(make_kvs):
    return make_kvs({"kvio.block.size": "1KB", "kvio.partition.size.max": "24KB"})


@pytest.fixture
def uri(fs_root):
    return f"{fs_root}/stores/main"


# ---- round trips ---------------------------------------------------------------------------------
class TestReadWrite:
    def test_round_trip(self, small_kvs, uri):
        write_store(small_kvs, uri, PAIRS)
        assert small_kvs.exists(uri)
        with small_kvs.open_store(uri) as reader:
            assert len(reader.info()["partitions"]) > 1
            assert reader.info()["uri"] == uri
            assert_matches_model(reader, MODEL, absent=[key4(1), key4(3001), b""],
                                 ranges=[(key4(300), key4(600)), (key4(2998), None)],
                                 prefixes=[b"\x00\x00\x01", b"\x00\x00\x0b"])

    @pytest.mark.parametrize("codec", ["zstd", "lz4"])
    def test_compressed_round_trip(self, make_kvs, uri, codec):
        kvs = make_kvs({"kvio.block.compression": codec, "kvio.block.size": "2KB"})
        write_store(kvs, uri, PAIRS)
        with kvs.open_store(uri) as reader:
            assert_matches_model(reader, MODEL, absent=[key4(2)])

    def test_arrow_input(self, kvs, uri):
        table = pa.table({"key": [k for k, _ in PAIRS], "value": [v for _, v in PAIRS]}).slice(10, 500)
        with kvs.create_store(uri) as w:
            w.put_many(table)
        with kvs.open_store(uri) as reader:
            assert dict(reader) == dict(PAIRS[10:510])

    def test_empty_values_and_empty_store(self, kvs, fs_root):
        write_store(kvs, f"{fs_root}/a", [(b"", b""), (b"x", b"")])
        with kvs.open_store(f"{fs_root}/a") as reader:
            assert dict(reader) == {b"": b"", b"x": b""} and b"x" in reader
        write_store(kvs, f"{fs_root}/b", [])
        with kvs.open_store(f"{fs_root}/b") as reader:
            assert len(reader) == 0 and list(reader) == []

    def test_rollover(self, make_kvs, uri):
        kvs = make_kvs({"kvio.partition.size.max": "1MB"})
        pairs = [(key4(i), bytes([65 + i]) * (512 << 10)) for i in range(10)]
        write_store(kvs, uri, pairs)
        with kvs.open_store(uri) as reader:
            assert len(reader.info()["partitions"]) == 10
            assert list(reader.items()) == pairs

    def test_nothing_left_in_staging_after_commit(self, small_kvs, uri):
        write_store(small_kvs, uri, PAIRS)
        raw = RawFiles(uri)
        assert raw.names("_staging") == []
        assert raw.names("_commits") == ["0000000001.commit"]
        assert len(raw.names("_versions")) == 1


# ---- errors --------------------------------------------------------------------------------------
class TestErrors:
    def test_missing(self, kvs, fs_root):
        with pytest.raises(StoreNotFoundError) as exc:
            kvs.open_store(f"{fs_root}/missing")
        assert f"{fs_root}/missing" in str(exc.value)

    def test_plain_directory_and_file(self, kvs, fs_root):
        raw = RawFiles(fs_root)
        raw.write(raw.path("plain/data.txt"), b"hello")
        with pytest.raises(NotAStoreError):
            kvs.open_store(f"{fs_root}/plain")
        with pytest.raises(NotAStoreError):
            kvs.open_store(f"{fs_root}/plain/data.txt")
        with pytest.raises(StoreExistsError):
            kvs.create_store(f"{fs_root}/plain")
        with pytest.raises(StoreExistsError):
            kvs.create_store(f"{fs_root}/plain/data.txt")
        assert raw.read(raw.path("plain/data.txt")) == b"hello"

    def test_incomplete_and_aborted(self, kvs, uri):
        writer = kvs.create_store(uri)
        writer.put(b"a", b"1")
        with pytest.raises(IncompleteStoreError):
            kvs.open_store(uri)
        writer.abort()
        # A failed first write leaves nothing that looks like a store (issue 10 item 8).
        with pytest.raises(StoreNotFoundError, match="no store at this location"):
            kvs.open_store(uri)
        assert not RawFiles(uri).fs.exists(RawFiles(uri).root)
        with pytest.raises(ValueError):
            with kvs.create_store(uri) as w:
                w.put(b"a", b"1")
                raise ValueError("stop")
        with pytest.raises(StoreNotFoundError, match="no store at this location"):
            kvs.open_store(uri)
        assert not RawFiles(uri).fs.exists(RawFiles(uri).root)

    def test_exists(self, kvs, uri):
        write_store(kvs, uri, [(b"a", b"1")])
        with pytest.raises(StoreExistsError):
            kvs.create_store(uri)


# ---- whole-store operations -------------------------------------------------------------------------
class TestStoreOperations:
    def test_merge(self, small_kvs, fs_root):
        src = {key4(i): b"src" for i in range(0, 3000, 2)}
        write_store(small_kvs, f"{fs_root}/src", sorted(src.items()))
        write_store(small_kvs, f"{fs_root}/dst", PAIRS)
        small_kvs.merge_store(f"{fs_root}/src", f"{fs_root}/dst")
        with small_kvs.open_store(f"{fs_root}/dst") as reader:
            assert_matches_model(reader, {**MODEL, **src}, absent=[key4(1), key4(3001)],
                                 ranges=[(key4(100), key4(200))])
        with small_kvs.open_store(f"{fs_root}/src") as reader:
            assert dict(reader) == src

    def test_delete(self, kvs, uri):
        write_store(kvs, uri, [(b"a", b"1")])
        kvs.delete_store(uri)
        assert not kvs.exists(uri)
        with pytest.raises(StoreNotFoundError):
            kvs.open_store(uri)
        write_store(kvs, uri, [(b"b", b"2")])
        with kvs.open_store(uri) as reader:
            assert dict(reader) == {b"b": b"2"}

    def test_rename(self, kvs, fs_root):
        write_store(kvs, f"{fs_root}/a", [(b"a", b"1")])
        kvs.rename_store(f"{fs_root}/a", f"{fs_root}/b")
        with pytest.raises(StoreNotFoundError):
            kvs.open_store(f"{fs_root}/a")
        with kvs.open_store(f"{fs_root}/b") as reader:
            assert dict(reader) == {b"a": b"1"}
        write_store(kvs, f"{fs_root}/a", [(b"c", b"3")])
        with pytest.raises(StoreExistsError):
            kvs.rename_store(f"{fs_root}/a", f"{fs_root}/b")

    def test_versions_rollback_and_gc(self, make_kvs, uri):
        kvs = make_kvs(**{"kvio.gc.grace": "0"})  # versions published milliseconds apart
        for i in range(3):
            write_store(kvs, uri, [(b"a", b"v%d" % i)], mode="overwrite")
        history = kvs.versions(uri)
        assert [h["available"] for h in history][-2:] == [True, True]
        assert sum(h["available"] for h in history) == 2
        assert len(RawFiles(uri).names("_versions")) == 2
        kvs.rollback(uri)
        with kvs.open_store(uri) as reader:
            assert reader[b"a"] == b"v1"
        with kvs.open_store(uri, version=history[-1]["version"]) as reader:
            assert reader[b"a"] == b"v2"


# ---- damage -----------------------------------------------------------------------------------------
class TestCorruption:
    def _reads_right_or_corrupt(self, kvs, uri, damaged_name):
        try:
            reader = kvs.open_store(uri)
            with reader:
                for k, v in PAIRS:
                    assert reader.get(k) == v
                assert list(reader.items()) == PAIRS
        except CorruptStoreError as exc:
            assert posixpath.basename(exc.file) == damaged_name and uri in str(exc)
            return True
        return False

    def test_flipped_bytes(self, small_kvs, uri):
        write_store(small_kvs, uri, PAIRS)
        raw = RawFiles(uri)
        (part, *_) = raw.find(".kvp")
        original = raw.read(part)
        detected = 0
        for pos in range(0, len(original), 211):
            damaged = bytearray(original)
            damaged[pos] ^= 0xFF
            raw.write(part, bytes(damaged))
            detected += self._reads_right_or_corrupt(small_kvs, uri, posixpath.basename(part))
        assert detected > 0
        raw.write(part, original)
        for name in raw.find(".commit") + raw.find(".kvm"):
            data = raw.read(name)
            raw.write(name, data[:20] + bytes([data[20] ^ 1]) + data[21:])
            assert self._reads_right_or_corrupt(small_kvs, uri, posixpath.basename(name))
            raw.write(name, data)
        assert not self._reads_right_or_corrupt(small_kvs, uri, "")

    def test_truncated_and_missing_partition(self, small_kvs, uri):
        write_store(small_kvs, uri, PAIRS)
        raw = RawFiles(uri)
        part = raw.find(".kvp")[-1]
        original = raw.read(part)
        for length in (0, 10, 47, len(original) // 2, len(original) - 1):
            raw.write(part, original[:length])
            with pytest.raises(CorruptStoreError) as exc:
                with small_kvs.open_store(uri) as reader:
                    list(reader.items())
            assert posixpath.basename(exc.value.file) == posixpath.basename(part)
        raw.fs.rm_file(part)
        with pytest.raises(CorruptStoreError, match="missing") as exc:
            with small_kvs.open_store(uri) as reader:
                list(reader.items())
        assert posixpath.basename(exc.value.file) == posixpath.basename(part)


# ---- the I/O seam -------------------------------------------------------------------------------------
class TestFileIO:
    def test_write_new_file_never_replaces(self, fs_root):
        io = FileIO(f"{fs_root}/io")
        io.write_new_file("d/one", b"first")
        with pytest.raises(FileExistsError):
            io.write_new_file("d/one", b"second")
        assert io.read_bytes("d/one") == b"first"
        assert io.listdir("d") == ["one"]  # no temporary file left behind

    def test_publish_and_rename_refuse_existing_targets(self, fs_root):
        io = FileIO(f"{fs_root}/io")
        io.write_new_file("a", b"A")
        io.write_new_file("b", b"B")
        with pytest.raises(FileExistsError):
            io.publish_file("a", "b")
        assert io.read_bytes("b") == b"B"
        io.publish_file("a", "c")
        assert io.read_bytes("c") == b"A"  # (src may be left for the caller to remove)
        io.write_new_file("src/x", b"x")
        io.write_new_file("dst/y", b"y")
        with pytest.raises(FileExistsError):
            io.rename_dir("src", "dst")
        assert io.listdir("dst") == ["y"]
        io.rename_dir("src", "moved")
        assert io.read_bytes("moved/x") == b"x" and not io.exists("src")

    def test_queries(self, fs_root):
        io = FileIO(f"{fs_root}/io")
        assert io.listdir("nothing") == [] and not io.exists("nothing")
        io.write_new_file("f", b"12345")
        assert io.size("f") == 5 and io.isfile("f") and io.isdir("")
        assert io.read_range("f", 1, 3) == b"234" and io.read_range("f", 0, 0) == b""
        assert io.can_publish_atomically
        io.delete_file("f")
        io.delete_file("f")  # idempotent
        io.delete_tree("nothing")
        assert io.listdir() == []


def test_file_uri_is_local(tmp_path):
    kvs = KeyValueSystem()
    uri = f"file://{tmp_path}/store"
    write_store(kvs, uri, [(b"a", b"1")])
    with kvs.open_store(str(tmp_path / "store")) as reader:
        assert reader[b"a"] == b"1"
    with kvs.open_store(uri) as reader:
        assert reader.io.is_local and reader[b"a"] == b"1"
