"""Pins (GC safety, issue 11): a reader pins the version it reads; gc and retention keep a
pinned version and one superseded less than kvio.gc.grace ago; an expired pin (a crashed
reader's) protects nothing and gc removes it; a closed reader releases its pin."""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from kvio import KeyValueSystem, layout, pins
from kvio.cli import main as cli_main
from kvio.format.pin import PinRecord
from kvio.fs import FileIO

from .helpers import write_store

DEADLINE = 60.0  # generous: polls end as soon as the condition holds


def poll(condition, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def publish(kvs: KeyValueSystem, uri: str, value: bytes, mode: str = "overwrite") -> str:
    return write_store(kvs, uri, [(b"a", value), (b"b", value)], mode=mode)["version"]


def pin_files(uri: str) -> list[pins.PinFile]:
    return pins.scan(FileIO(uri))


def on_disk(uri: str, version: str) -> bool:
    return FileIO(uri).exists(layout.manifest_path(version))


@pytest.fixture
def no_grace(make_kvs):
    return make_kvs(**{"kvio.gc.grace": "0", "kvio.versions.retain": "1"})


def test_a_reader_pins_its_version_and_releases_the_pin_on_close(no_grace, fs_root):
    uri = f"{fs_root}/s"
    v1 = publish(no_grace, uri, b"1", mode="error")
    reader = no_grace.open_store(uri)
    found = pin_files(uri)
    assert [(p.version, p.holder, p.record.purpose) for p in found] == \
        [(v1, reader.pin.holder, "reader")]
    assert found[0].expires > time.time()
    assert pins.held() and reader.pin in pins.held()
    reader.close()
    assert pin_files(uri) == [] and reader.pin not in pins.held()
    if not fs_root.startswith("memory://"):  # the empty _pins/ goes too (os.rmdir is atomic)
        assert not os.path.exists(os.path.join(uri, layout.PINS))


def test_gc_keeps_a_pinned_version_until_the_reader_closes(no_grace, fs_root):
    uri = f"{fs_root}/s"
    v1 = publish(no_grace, uri, b"1", mode="error")
    reader = no_grace.open_store(uri)
    v2 = publish(no_grace, uri, b"2")     # retain 1: v1 is superseded, but pinned
    v3 = publish(no_grace, uri, b"3")     # the publish's own gc removes v2 (not pinned)
    assert on_disk(uri, v1) and not on_disk(uri, v2) and on_disk(uri, v3)
    removed = no_grace.gc(uri, older_than=0)
    assert removed["pinned"] == [v1] and removed["versions"] == []
    assert dict(reader.items()) == {b"a": b"1", b"b": b"1"}  # remote: read lazily, still there
    reader.close()
    removed = no_grace.gc(uri, older_than=0)
    assert removed["versions"] == [v1] and not on_disk(uri, v1)
    assert [r["available"] for r in no_grace.versions(uri)] == [False, False, True]


def test_gc_keeps_a_version_for_the_grace_window_after_it_is_superseded(make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.versions.retain": "1"})      # the default grace, 5 minutes
    v1 = publish(kvs, uri, b"1", mode="error")
    v2 = publish(kvs, uri, b"2")
    removed = kvs.gc(uri, older_than=0)
    assert removed["grace"] == [v1] and removed["versions"] == [] and on_disk(uri, v1)
    # The window is counted from the superseding record (v2's publish); once it has passed,
    # the version goes.
    short = make_kvs(**{"kvio.versions.retain": "1", "kvio.gc.grace": "1s"})
    superseded = versions_time(uri, v2)
    poll(lambda: time.time() > superseded + 1.0, "the grace window to pass")
    assert short.gc(uri, older_than=0)["versions"] == [v1]
    assert not on_disk(uri, v1) and on_disk(uri, v2)


def versions_time(uri: str, version: str) -> float:
    """The time of the record that published ``version`` (later of its time and mtime)."""
    from kvio import versions
    io = FileIO(uri)
    record = next(r for r in versions.history(io) if r.version == version)
    return max(record.time, io.modified(layout.commit_name(record.seq)) or 0.0)


def test_a_crashed_readers_pin_expires_and_then_protects_nothing(no_grace, tmp_path):
    uri = str(tmp_path / "s")
    v1 = publish(no_grace, uri, b"1", mode="error")
    # A real reader process that dies without closing (SIGKILL): its pin stays behind.
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, kvio\n"
         f"r = kvio.KeyValueSystem(conf={{'kvio.pin.ttl': '1s'}}).open_store({uri!r})\n"
         "assert r[b'a'] == b'1'\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n"],
        capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    [left] = pin_files(uri)
    assert left.version == v1 and left.record.ttl == 1.0
    publish(no_grace, uri, b"2")
    assert on_disk(uri, v1)  # the publish's gc: still pinned
    poll(lambda: time.time() > left.expires, "the crashed reader's pin to expire")
    removed = no_grace.gc(uri, older_than=0)
    assert removed["versions"] == [v1] and removed["pins"] == [left.rel]
    assert not on_disk(uri, v1) and pin_files(uri) == []


def test_an_open_reader_renews_its_pin(make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.pin.ttl": "0.6s", "kvio.gc.grace": "0", "kvio.versions.retain": "1"})
    v1 = publish(kvs, uri, b"1", mode="error")
    with kvs.open_store(uri) as reader:
        [first] = pin_files(uri)
        # Renewed every ttl/3: the pin outlives its first expiry while the reader is open.
        poll(lambda: time.time() > first.expires + 0.3, "the first lease to run out")
        [now] = pin_files(uri)
        assert now.holder == reader.pin.holder and now.expires > time.time()
        publish(kvs, uri, b"2")
        assert on_disk(uri, v1) and kvs.gc(uri, older_than=0)["pinned"] == [v1]
        assert reader[b"a"] == b"1"
    assert kvs.gc(uri, older_than=0)["versions"] == [v1]


def test_a_reader_that_is_never_closed_releases_its_pin_when_collected(make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.pin.ttl": "0.3s"})
    publish(kvs, uri, b"1", mode="error")
    reader = kvs.open_store(uri)
    pin = reader.pin
    del reader
    gc.collect()
    poll(lambda: pin.released, "the renewer to release the orphaned pin")
    assert pin_files(uri) == []


def test_a_forked_child_never_removes_its_parents_pin(kvs, tmp_path):
    uri = str(tmp_path / "s")
    publish(kvs, uri, b"1", mode="error")
    with kvs.open_store(uri) as reader:
        pid = os.fork()
        if pid == 0:  # the child closes its copy of the reader (mrjob's local runner forks)
            try:
                reader.close()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert [p.holder for p in pin_files(uri)] == [reader.pin.holder]
        assert reader.pin in pins.held()
    assert pin_files(uri) == []


def test_a_store_that_cannot_hold_pins_is_read_without_one(kvs, tmp_path, caplog):
    uri = str(tmp_path / "s")
    publish(kvs, uri, b"1", mode="error")
    with open(os.path.join(uri, layout.PINS), "w") as blocker:  # _pins cannot be a directory
        blocker.write("not a directory")
    with caplog.at_level(logging.WARNING, logger="kvio.pins"):
        with kvs.open_store(uri) as reader:
            assert reader.pin is None and reader[b"a"] == b"1"
    assert any("cannot pin version" in r.getMessage() and uri in r.getMessage()
               for r in caplog.records)


def test_an_unreadable_pin_still_protects_its_version(no_grace, tmp_path):
    uri = str(tmp_path / "s")
    v1 = publish(no_grace, uri, b"1", mode="error")
    os.makedirs(os.path.join(uri, layout.PINS))
    torn = os.path.join(uri, layout.pin_path(v1, "torn-holder"))
    with open(torn, "wb") as handle:  # a pin torn by a filesystem without atomic replace
        handle.write(PinRecord(v1, "torn-holder", time.time() + 60, 60, "reader", "h", 1)
                     .encode()[:-5])
    publish(no_grace, uri, b"2")
    [found] = pin_files(uri)
    assert found.record is None and "checksum" in found.error
    assert found.expires > time.time() + pins.UNREADABLE_PIN_SECONDS - 60
    assert no_grace.gc(uri, older_than=0)["pinned"] == [v1] and on_disk(uri, v1)


def test_kvio_versions_shows_pins(no_grace, tmp_path, capsys):
    uri = str(tmp_path / "s")
    v1 = publish(no_grace, uri, b"1", mode="error")
    with no_grace.open_store(uri) as reader:
        publish(no_grace, uri, b"2")
        assert cli_main(["versions", uri, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["version"], [p["holder"] for p in r["pins"]]) for r in rows] == \
            [(v1, [reader.pin.holder]), (rows[1]["version"], [])]
        assert rows[0]["pins"][0]["purpose"] == "reader"
        assert rows[0]["pins"][0]["pid"] == os.getpid()
        assert cli_main(["versions", uri]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1].split()[-1] == "available" and out[2].split()[-1] == "current"
        assert out[4].startswith("1 pin(s)")
        assert out[6].split()[:3] == [v1, reader.pin.holder, "reader"]
        assert cli_main(["gc", uri, "--conf", "kvio.versions.retain=1"]) == 0
        assert f"kept version {v1}: pinned" in capsys.readouterr().out
    assert cli_main(["versions", uri]) == 0
    assert "pin(s)" not in capsys.readouterr().out
