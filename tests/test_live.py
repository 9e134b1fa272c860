"""Live stores (issue 11): open_store(uri, follow=True) follows new publishes, keeps serving
the last good version when a new one fails verification, keeps snapshots valid across swaps
and stops its thread on close."""
from __future__ import annotations

import gc
import logging
import os
import threading
import time

import pytest

from kvio import (
    CorruptStoreError,
    InvalidArgumentError,
    KeyValueSystem,
    ReaderClosedError,
    StoreNotFoundError,
    layout,
    pins,
)
from kvio.committer import Job, TaskAttempt
from kvio.format.spec import HEADER
from kvio.fs import FileIO
from kvio.live import LiveStore
from kvio.writer import SortedPairWriter

from .helpers import write_store

DEADLINE = 60.0  # generous: polls end as soon as the condition holds
KEYS = [b"k%03d" % i for i in range(50)]


def poll(condition, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def pairs(tag: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, tag + b":" + k) for k in KEYS]


def publish(kvs: KeyValueSystem, uri: str, tag: bytes, mode: str = "overwrite") -> str:
    return write_store(kvs, uri, pairs(tag), mode=mode)["version"]


def publish_with_a_corrupt_block(uri: str, tag: bytes) -> str:
    """Publish a version whose data block has a flipped byte: commit validation checks sizes
    and footers, so it publishes; only a full verification finds it."""
    job = Job.setup(uri, mode="overwrite")
    writer = SortedPairWriter(TaskAttempt(job.ctx, 0, None))
    writer.put_many(pairs(tag))
    message = writer.close()
    path = os.path.join(uri, layout.staging_dir(job.ctx.job_id), message["partitions"][0]["path"])
    with open(path, "r+b") as handle:
        handle.seek(HEADER.size + 3)
        byte = handle.read(1)
        handle.seek(HEADER.size + 3)
        handle.write(bytes([byte[0] ^ 0x40]))
    record = job.commit([message])
    assert record is not None
    return record.version


def flip_footer_byte(uri: str, version: str) -> str:
    """Flip a byte near the end of a published partition file (its footer/trailer)."""
    root = os.path.join(uri, layout.version_dir(version))
    path = next(os.path.join(top, n) for top, _, names in os.walk(root) for n in names
                if n.endswith(".kvp"))
    with open(path, "r+b") as handle:
        handle.seek(-12, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-12, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0x01]))
    return path


@pytest.fixture
def fast(make_kvs):
    """Follows every 0.05 s; no gc grace, retain 1 (old versions go as soon as unpinned)."""
    return make_kvs(**{"kvio.follow.interval": "0.05", "kvio.gc.grace": "0",
                       "kvio.versions.retain": "1"})


def test_follow_sees_a_publish_within_a_few_intervals(fast, fs_root):
    uri = f"{fs_root}/s"
    v1 = publish(fast, uri, b"v1", mode="error")
    events = []
    with fast.open_store(uri, follow=True) as live:
        assert isinstance(live, LiveStore)
        live.on_swap(lambda old, new, error: events.append((old, new, error)))
        assert (live.version, live[b"k001"], len(live)) == (v1, b"v1:k001", 50)
        v2 = publish(fast, uri, b"v2")
        poll(lambda: live.version == v2, "the follower to swap in v2")
        assert live[b"k001"] == b"v2:k001" and live.get(b"nope") is None
        assert live.get_many([b"k002", b"zz"]) == [b"v2:k002", None]
        assert list(live.items(prefix=b"k04")) == [(k, b"v2:" + k) for k in KEYS[40:50]]
        assert dict(live) == dict(pairs(b"v2")) and b"k003" in live
        assert (live.swaps, live.swap_errors, live.last_error) == (1, 0, None)
        assert events == [(v1, v2, None)]
        info = live.info()
        assert info["version"] == v2 and info["follow"]["swaps"] == 1
        # The old version was closed (no call used it) and its pin released, so gc removes it.
        poll(lambda: [p.version for p in pins.scan(FileIO(uri))] == [v2], "v1's pin to go")
        assert fast.gc(uri, older_than=0)["pinned"] == []


def test_a_version_that_fails_verification_is_not_swapped_in(make_kvs, tmp_path, caplog):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.follow.interval": "0.05", "kvio.follow.verify": "full"})
    v1 = publish(kvs, uri, b"v1", mode="error")
    events = []
    with caplog.at_level(logging.ERROR, logger="kvio.live"):
        with kvs.open_store(uri, follow=True) as live:
            live.on_swap(lambda old, new, error: events.append((old, new, error)))
            bad = publish_with_a_corrupt_block(uri, b"bad")
            poll(lambda: live.last_error is not None, "the follower to reject the version")
            assert isinstance(live.last_error, CorruptStoreError)
            assert live.version == v1 and live.swaps == 0 and live.swap_errors == 1
            assert dict(live.items()) == dict(pairs(b"v1"))  # still the last good version
            assert events == [(v1, bad, live.last_error)]
            # A later good version is swapped in; the bad one is not retried meanwhile.
            v3 = publish(kvs, uri, b"v3")
            poll(lambda: live.version == v3, "the follower to swap in v3")
            assert live.last_error is None and live.swap_errors == 1 and live[b"k000"] == b"v3:k000"
    assert any(f"version {bad} was not swapped in" in r.getMessage() for r in caplog.records)


def test_a_damaged_footer_fails_the_default_check(make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.follow.interval": "1h"})  # no background check: refresh() by hand
    v1 = publish(kvs, uri, b"v1", mode="error")
    with kvs.open_store(uri, follow=True) as live:
        assert live.verify_mode == "footers" and not live.refresh()
        v2 = publish(kvs, uri, b"v2")
        damaged = flip_footer_byte(uri, v2)
        assert live.refresh() is False
        assert isinstance(live.last_error, CorruptStoreError)
        assert damaged in str(live.last_error)
        assert live.version == v1 and live[b"k010"] == b"v1:k010"
        assert live.refresh() is False and live.swap_errors == 1  # not retried
        v3 = publish(kvs, uri, b"v3")
        assert live.refresh() is True and live.version == v3 and live.last_error is None


def test_a_deleted_store_keeps_serving_its_last_version(make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    kvs = make_kvs(**{"kvio.follow.interval": "1h"})
    v1 = publish(kvs, uri, b"v1", mode="error")
    with kvs.open_store(uri, follow=True) as live:
        kvs.delete_store(uri)  # mapped files keep answering
        assert live.refresh() is False
        assert isinstance(live.last_error, StoreNotFoundError)
        assert live.version == v1 and live[b"k000"] == b"v1:k000"


def test_snapshots_stay_valid_across_swaps(fast, fs_root):
    uri = f"{fs_root}/s"
    v1 = publish(fast, uri, b"v1", mode="error")
    with fast.open_store(uri, follow=True) as live:
        with live.snapshot() as old:
            scan = live.items_range()  # a scan started on v1 ...
            assert next(scan) == (KEYS[0], b"v1:" + KEYS[0])
            v2 = publish(fast, uri, b"v2")
            poll(lambda: live.version == v2, "the swap to v2")
            v3 = publish(fast, uri, b"v3")  # retain 1, no grace: only pins keep v1
            poll(lambda: live.version == v3, "the swap to v3")
            fast.gc(uri, older_than=0)
            assert old.version == v1 and not old.closed
            assert dict(old.items()) == dict(pairs(b"v1"))  # every call: v1
            assert old.get_many(KEYS[:3]) == [b"v1:" + k for k in KEYS[:3]]
            assert live[b"k000"] == b"v3:k000"
        assert not old.closed  # ... and holds v1 until it ends
        assert dict(scan) == dict(pairs(b"v1")[1:])
        assert old.closed  # closed after its last user, with its pin
        assert v1 not in {p.version for p in pins.scan(FileIO(uri))}
        with pytest.raises(ReaderClosedError):
            old.get(b"k000")


def test_get_versioned_names_the_version_that_answered(fast, fs_root):
    uri = f"{fs_root}/s"
    v1 = publish(fast, uri, b"v1", mode="error")
    with fast.open_store(uri, follow=True) as live:
        assert live.get_versioned(b"k001") == (v1, b"v1:k001")
        assert live.get_versioned(b"absent") == (v1, None)
        v2 = publish(fast, uri, b"v2")
        poll(lambda: live.version == v2, "the swap to v2")
        assert live.get_versioned(b"k001") == (v2, b"v2:k001")
    with pytest.raises(ReaderClosedError):
        live.get_versioned(b"k001")


def test_calls_from_many_threads_each_answer_from_one_version(fast, tmp_path):
    uri = str(tmp_path / "s")
    publish(fast, uri, b"0", mode="error")
    problems: list[str] = []
    rounds: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            rounds.append(1)
            values = live.get_many(KEYS)
            if len({v.split(b":")[0] for v in values}) != 1:
                problems.append(f"get_many mixed versions: {values}")
            scanned = [v for _, v in live.items(prefix=b"k0")]
            if len({v.split(b":")[0] for v in scanned}) != 1:
                problems.append("scan mixed versions")
            if live.get(b"k007") is None:
                problems.append("a key was missing")
            # let the publishing thread run too: three readers spinning in the GIL made each
            # publish take seconds (the test took 35 s)
            time.sleep(0.001)

    with fast.open_store(uri, follow=True) as live:
        threads = [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for n in range(1, 15):
            version = publish(fast, uri, b"%d" % n)
            poll(lambda v=version: live.version == v, f"the swap to {version}")
        stop.set()
        for t in threads:
            t.join()
        assert problems == [] and live.swaps == 14
        assert len(rounds) > 3 * 14  # the readers kept reading through the swaps
        assert live[b"k000"] == b"14:k000"


def test_close_stops_the_thread_and_releases_the_pin(fast, tmp_path):
    uri = str(tmp_path / "s")
    publish(fast, uri, b"v1", mode="error")
    live = fast.open_store(uri, follow=True)
    thread = live.follower_thread
    assert thread.is_alive() and thread.daemon
    live.close()
    assert not thread.is_alive() and live.closed
    assert pins.scan(FileIO(uri)) == []
    for call in (lambda: live.get(b"k000"), lambda: live[b"k000"], lambda: len(live),
                 lambda: list(live.items()), lambda: live.get_many([b"k000"]), live.refresh):
        with pytest.raises(ReaderClosedError):
            call()
    live.close()  # idempotent


def test_a_live_store_that_is_dropped_stops_following(fast, tmp_path):
    uri = str(tmp_path / "s")
    publish(fast, uri, b"v1", mode="error")
    live = fast.open_store(uri, follow=True)
    thread = live.follower_thread
    del live
    gc.collect()
    poll(lambda: not thread.is_alive(), "the follower of a dropped store to end")


def test_follow_refuses_a_version_and_checks_its_settings(kvs, make_kvs, tmp_path):
    uri = str(tmp_path / "s")
    v1 = publish(kvs, uri, b"v1", mode="error")
    with pytest.raises(InvalidArgumentError, match="follow=True"):
        kvs.open_store(uri, version=v1, follow=True)
    with pytest.raises(Exception, match="kvio.follow.verify must be one of"):
        make_kvs(**{"kvio.follow.verify": "sometimes"})
    with pytest.raises(Exception, match="kvio.follow.interval must be more than 0s"):
        make_kvs(**{"kvio.follow.interval": "0"})
