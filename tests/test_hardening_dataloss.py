"""Regression tests of issue 10's data-loss items: each one was a way for a careless (or
hostile) call to destroy or hide data. Real stores on real temporary directories."""
from __future__ import annotations

import shutil
import uuid

import pytest

from kvio import KeyValueSystem
from kvio.cli import main
from kvio.errors import InvalidArgumentError
from kvio.fs import is_url


def write(kvs: KeyValueSystem, uri, pairs: dict[bytes, bytes], mode: str = "error") -> None:
    with kvs.create_store(str(uri), mode=mode) as writer:
        for key in sorted(pairs):
            writer.put(key, pairs[key])


def content(uri) -> dict[bytes, bytes]:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return dict(reader.items())


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- item 3: rollback to the current version ---------------------------------------------------
def test_rollback_to_the_current_version_is_refused_and_keeps_the_older_one(tmp_path, capsys):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"v1"})
    write(kvs, uri, {b"a": b"v2"}, mode="overwrite")
    v1, v2 = [h["version"] for h in kvs.versions(uri)]
    with pytest.raises(InvalidArgumentError, match=f"{v2} is already the current version"):
        kvs.rollback(uri, v2)
    code, out, err = run(capsys, "rollback", uri, v2)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: version ") and "already the current version" in err
    assert uri in err
    history = kvs.versions(uri)
    assert [h["version"] for h in history] == [v1, v2]  # nothing published
    assert [h["available"] for h in history] == [True, True]  # v1 was not collected
    assert kvs.rollback(uri)["source"] == v1  # and can still be restored
    assert content(uri) == {b"a": b"v1"}


def test_rollback_to_the_version_the_current_one_restored_is_refused(tmp_path):
    kvs, uri = KeyValueSystem(), str(tmp_path / "s")
    write(kvs, uri, {b"a": b"v1"})
    write(kvs, uri, {b"a": b"v2"}, mode="overwrite")
    v1, v2 = [h["version"] for h in kvs.versions(uri)]
    kvs.rollback(uri)  # current = a copy of v1; retained: v2 and the copy
    with pytest.raises(InvalidArgumentError, match=f"already a rollback to version {v1}"):
        kvs.rollback(uri, v1)
    history = kvs.versions(uri)
    assert len(history) == 3 and history[1]["version"] == v2 and history[1]["available"]
    kvs.rollback(uri, v2)
    assert content(uri) == {b"a": b"v2"}


# ---- item 5: merging a store into itself ---------------------------------------------------------
def _partition_count(uri) -> int:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return len(reader.info()["partitions"])


@pytest.mark.parametrize("spelling", ["same", "relative", "trailing-slash", "symlink",
                                      "symlinked-parent", "byte-copy"])
def test_merge_store_into_itself_is_refused_under_any_spelling(tmp_path, monkeypatch, spelling):
    kvs = KeyValueSystem()
    store = tmp_path / "data" / "s"
    store.parent.mkdir()
    write(kvs, store, {b"a": b"1", b"b": b"2"})
    other = {
        "same": str(store),
        "relative": "data/s",
        "trailing-slash": f"{store}/",
        "symlink": str(tmp_path / "link"),
        "symlinked-parent": str(tmp_path / "alias" / "s"),
        "byte-copy": str(tmp_path / "copy"),
    }[spelling]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(store)
    (tmp_path / "alias").symlink_to(store.parent)
    if spelling == "byte-copy":
        shutil.copytree(store, other)
    history = kvs.versions(str(store))
    for src, dst in ((other, str(store)), (str(store), other)):
        with pytest.raises(InvalidArgumentError, match="cannot merge a store into itself"):
            kvs.merge_store(src, dst)
    assert kvs.versions(str(store)) == history  # nothing published
    assert _partition_count(store) == 1
    assert content(store) == {b"a": b"1", b"b": b"2"}


def test_merge_store_into_itself_on_the_memory_filesystem_is_refused():
    kvs, uri = KeyValueSystem(), f"memory://kvio-tests/{uuid.uuid4().hex}/s"
    try:
        write(kvs, uri, {b"a": b"1"})
        with pytest.raises(InvalidArgumentError, match="into itself"):
            kvs.merge_store(uri + "/", uri)
        assert _partition_count(uri) == 1
    finally:
        kvs.delete_store(uri)


def test_merge_store_of_two_stores_still_merges(tmp_path):
    kvs = KeyValueSystem()
    write(kvs, tmp_path / "a", {b"a": b"1", b"b": b"old"})
    write(kvs, tmp_path / "b", {b"b": b"new", b"c": b"3"})
    kvs.merge_store(str(tmp_path / "b"), str(tmp_path / "a"))
    assert content(tmp_path / "a") == {b"a": b"1", b"b": b"new", b"c": b"3"}
    assert _partition_count(tmp_path / "a") == 2


# ---- item 2: "::" in a local path --------------------------------------------------------------
@pytest.mark.parametrize("uri, explicit", [
    ("a::b", False), ("/data/a::b", False), ("a:b", False), ("./memory::x", False),
    ("relative/path", False), ("memory://x", True), ("file:///tmp/x", True),
    ("hdfs://nn:8020/x::y", True), ("simplecache::memory://x", True),
])
def test_only_an_explicit_protocol_makes_a_url(uri, explicit):
    assert is_url(uri) is explicit


def test_a_local_path_with_double_colons_means_exactly_that_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    kvs = KeyValueSystem()
    precious = tmp_path / "a:"  # what fsspec used to make of "a::b" and "a::file"
    write(kvs, precious, {b"keep": b"me"})
    (tmp_path / "in.tsv").write_text("k\tb\n")
    assert run(capsys, "import", "in.tsv", "a::b", "--format", "tsv")[0] == 0
    write(kvs, "a::c", {b"k": b"c"})
    write(kvs, str(tmp_path / "a::c"), {b"k": b"c2"}, mode="overwrite")  # absolute: the same store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a:", "a::b", "a::c", "in.tsv"]
    assert content("a::b") == {b"k": b"b"} and content("a::c") == {b"k": b"c2"}
    write(kvs, "a::file", {b"x": b"y"})
    code, out, err = run(capsys, "rm", "a::file")
    assert (code, err) == (0, "")
    assert not (tmp_path / "a::file").exists()
    assert content(precious) == {b"keep": b"me"}
    assert content("a::b") == {b"k": b"b"}


def test_a_glob_character_in_a_memory_store_path_is_refused():
    kvs, base = KeyValueSystem(), f"memory://kvio-tests/{uuid.uuid4().hex}"
    try:
        write(kvs, f"{base}/ab", {b"a": b"1"})
        for name in ("a[b]", "a*", "a?"):
            with pytest.raises(InvalidArgumentError, match="glob character"):
                kvs.delete_store(f"{base}/{name}")
            with pytest.raises(InvalidArgumentError, match="glob character"):
                kvs.create_store(f"{base}/{name}")
        assert content(f"{base}/ab") == {b"a": b"1"}
    finally:
        kvs.delete_store(f"{base}/ab")
