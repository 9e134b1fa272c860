"""run-kv-test: the smoke test inherited from Alluxio's runKVTest.

A smoke test must never destroy data. The test store carries a marker file,
``_kvio_kv_test`` (JSON naming the test's job), written before any pair; a path is used only
when it does not exist, is an empty directory, or holds an earlier run's marked test store
into which nothing else was published. Anything else is refused, and nothing is deleted.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import sys
import tempfile
import uuid

from tqdm import tqdm

from .. import layout
from ..errors import KvioError
from ..fs import TMP_PREFIX, FileIO
from ..system import KeyValueSystem
from .output import PROG, _progress

KV_TEST_PAIRS = 10
KV_TEST_VALUE_BYTES = 512 * 1024
KV_TEST_CONF = {"kvio.partition.size.max": "1MB"}  # one 512 KB value per partition
KV_TEST_MARKER = "_kvio_kv_test"  # in the test store's root; readers ignore other names there
KV_TEST_MARKER_KIND = "kvio-run-kv-test"
_TEST_STORE_NAMES = {KV_TEST_MARKER, layout.MARKER, layout.COMMITS, layout.VERSIONS, layout.STAGING}


class _CheckFailed(Exception):
    pass


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise _CheckFailed(message)


def kv_test_key(i: int) -> bytes:
    return i.to_bytes(4, "big")


def kv_test_value(i: int) -> bytes:
    # Seeded random bytes: deterministic, different per key, and incompressible, so the
    # partition count stays exact even with --conf kvio.block.compression=zstd.
    return random.Random(i).randbytes(KV_TEST_VALUE_BYTES)


class _PathInUse(KvioError):
    """The path holds something run-kv-test did not write: the test refuses to touch it."""


def _own_test_store(kvs: KeyValueSystem, io: FileIO, uri: str) -> bool:
    """Whether the path holds a store an earlier run-kv-test wrote (and died before deleting):
    it carries the test's marker, holds no other name and every version ever published in it
    is the test's own (or none was: a write that was aborted may leave only the marker)."""
    try:
        names = io.listdir()
        if any(name not in _TEST_STORE_NAMES and not name.startswith(TMP_PREFIX) for name in names):
            return False
        doc = json.loads(io.read_bytes(KV_TEST_MARKER))
        if not isinstance(doc, dict) or doc.get("kind") != KV_TEST_MARKER_KIND \
                or not isinstance(doc.get("job"), str):
            return False
        if layout.COMMITS not in names:
            return True
        return all(d.get("version") in (None, doc["job"]) and "damaged" not in d
                   for d in kvs.versions(uri))
    except (OSError, ValueError, KvioError):  # missing, unreadable or corrupt: not provably ours
        return False


def _claim_path(kvs: KeyValueSystem, io: FileIO, uri: str) -> bool:
    """Make the path ready for the test store without destroying anything.

    Returns:
        True when the path is an empty directory (the caller recreates it afterwards).

    Raises:
        _PathInUse: the path holds anything but an earlier run's test store.
    """
    if not io.exists():
        return False
    if io.isdir() and not io.listdir():
        return True
    if _own_test_store(kvs, io, uri):
        _remove_test_store(kvs, io, uri)
        return False
    what = ("a file" if not io.isdir() else
            "a kvio store" if io.exists(layout.MARKER) or io.exists(layout.COMMITS) else
            "a non-empty directory")
    raise _PathInUse(f"run-kv-test refuses to use this path: it holds {what} that run-kv-test "
                     "did not write (a smoke test never deletes data); give a path that does not "
                     "exist", store=uri)


def _remove_test_store(kvs: KeyValueSystem, io: FileIO, uri: str) -> None:
    """Remove a store _own_test_store accepted: the store, or what an aborted write left."""
    names = io.listdir()
    if layout.MARKER in names or layout.COMMITS in names:
        kvs.delete_store(uri)  # removes the marker with the rest
        return
    # An aborted first write removed its store skeleton: the marker (and empty directories) left.
    io.delete_file(KV_TEST_MARKER)
    if not any(io.listdir(name) for name in names):
        io.delete_tree()


def _marker(job_id: str) -> bytes:
    return json.dumps({"kind": KV_TEST_MARKER_KIND, "job": job_id}).encode() + b"\n"


def _write_kv_test_store(kvs: KeyValueSystem, io: FileIO, uri: str, bar: tqdm) -> None:
    with kvs.create_store(uri) as writer:
        # Marked before any pair is written: a run that dies from here on leaves a store the
        # next run may replace; one that dies earlier leaves an unmarked one, which is refused.
        io.write_new_file(KV_TEST_MARKER, _marker(writer.job.ctx.job_id))
        for i in range(KV_TEST_PAIRS):
            writer.put(kv_test_key(i), kv_test_value(i))
            bar.update(1)


def _check_kv_test_store(kvs: KeyValueSystem, uri: str, bar: tqdm) -> None:
    with kvs.open_store(uri) as reader:
        parts = len(reader.info()["partitions"])
        _check(parts == KV_TEST_PAIRS, f"expected {KV_TEST_PAIRS} partitions, found {parts}")
        _check(len(reader) == KV_TEST_PAIRS,
               f"expected {KV_TEST_PAIRS} pairs, len() is {len(reader)}")
        for i in range(KV_TEST_PAIRS):
            _check(reader.get(kv_test_key(i)) == kv_test_value(i), f"wrong value for key {i}")
            bar.update(1)
        _check(reader.get(kv_test_key(KV_TEST_PAIRS)) is None, "a key never written was found")
        seen = 0
        for expected, (key, value) in itertools.zip_longest(range(KV_TEST_PAIRS), reader.items()):
            _check(expected is not None and key == kv_test_key(expected),
                   f"iteration out of order or too long at position {seen}")
            _check(value == kv_test_value(expected),
                   f"iteration returned a wrong value for key {expected}")
            seen += 1
        _check(seen == KV_TEST_PAIRS, f"iteration returned {seen} pairs")


def cmd_run_kv_test(args, conf: dict[str, str]) -> int:
    """Write 10 x 512 KB pairs in 10 partitions, read them back, delete the store.

    Args:
        args: parsed arguments (``uri``: the store to use, default a fresh temp path).
        conf: ``--conf`` settings.

    Returns:
        0 when the test passed; 1 when it failed or the path holds data it did not write
        (then nothing is touched and ``kvio: error: ...`` says why).
    """
    uri = args.uri or os.path.join(tempfile.gettempdir(), f"kvio-kv-test-{uuid.uuid4().hex[:12]}")
    try:
        kvs = KeyValueSystem(conf={**conf, **KV_TEST_CONF})
        io = FileIO(uri, allow_non_atomic=kvs.conf.allow_non_atomic,
                    storage_options=kvs.storage_options)
        was_empty_dir = _claim_path(kvs, io, uri)
    except (KvioError, OSError) as exc:  # the test did not start: a plain error, nothing touched
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    try:
        with _progress(args, total=2 * KV_TEST_PAIRS, unit="pairs", desc="run-kv-test") as bar:
            _write_kv_test_store(kvs, io, uri, bar)
            _check_kv_test_store(kvs, uri, bar)
        kvs.delete_store(uri)
        _check(not kvs.exists(uri), "store still exists after delete_store")
    except Exception as exc:  # a smoke test reports every failure, expected or not
        print("Failed the test!")
        print(f"{PROG}: run-kv-test: {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
        _cleanup_after_failure(kvs, io, uri)
        return 1
    finally:
        if was_empty_dir and not io.exists():
            io.makedirs("")  # the user's empty directory, as it was
    print("Passed the test!")
    return 0


def _cleanup_after_failure(kvs: KeyValueSystem, io: FileIO, uri: str) -> None:
    """Delete the test store, only if it is provably this test's (marked, nothing else
    published in it): a failure before the marker leaves whatever is there alone."""
    try:
        if _own_test_store(kvs, io, uri):
            _remove_test_store(kvs, io, uri)
    except (KvioError, OSError) as exc:
        print(f"{PROG}: run-kv-test: could not remove {uri}: {exc}", file=sys.stderr)
