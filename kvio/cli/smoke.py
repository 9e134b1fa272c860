"""run-kv-test: the smoke test inherited from Alluxio's runKVTest."""
from __future__ import annotations

import itertools
import os
import random
import sys
import tempfile
import uuid

from tqdm import tqdm

from ..errors import KvioError, StoreNotFoundError
from ..system import KeyValueSystem
from .output import PROG, _progress


KV_TEST_PAIRS = 10
KV_TEST_VALUE_BYTES = 512 * 1024
KV_TEST_CONF = {"kvio.partition.size.max": "1MB"}  # one 512 KB value per partition


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


def _remove_leftover_store(kvs: KeyValueSystem, uri: str) -> None:
    """Delete what a crashed earlier run left, but only if it is a kvio store: delete_store
    refuses anything without a kvio marker or commit log, and create_store then refuses to
    write into a non-empty foreign directory, so the test fails instead of destroying data."""
    try:
        kvs.delete_store(uri)
    except StoreNotFoundError:
        pass


def _write_kv_test_store(kvs: KeyValueSystem, uri: str, bar: tqdm) -> None:
    with kvs.create_store(uri) as writer:
        for i in range(KV_TEST_PAIRS):
            writer.put(kv_test_key(i), kv_test_value(i))
            bar.update(1)


def _check_kv_test_store(kvs: KeyValueSystem, uri: str, bar: tqdm) -> None:
    with kvs.open_store(uri) as reader:
        parts = len(reader.info()["partitions"])
        _check(parts == KV_TEST_PAIRS, f"expected {KV_TEST_PAIRS} partitions, found {parts}")
        _check(len(reader) == KV_TEST_PAIRS, f"expected {KV_TEST_PAIRS} pairs, len() is {len(reader)}")
        for i in range(KV_TEST_PAIRS):
            _check(reader.get(kv_test_key(i)) == kv_test_value(i), f"wrong value for key {i}")
            bar.update(1)
        _check(reader.get(kv_test_key(KV_TEST_PAIRS)) is None, "a key never written was found")
        seen = 0
        for expected, (key, value) in itertools.zip_longest(range(KV_TEST_PAIRS), reader.items()):
            _check(expected is not None and key == kv_test_key(expected),
                   f"iteration out of order or too long at position {seen}")
            _check(value == kv_test_value(expected), f"iteration returned a wrong value for key {expected}")
            seen += 1
        _check(seen == KV_TEST_PAIRS, f"iteration returned {seen} pairs")


def cmd_run_kv_test(args, conf: dict[str, str]) -> int:
    uri = args.uri or os.path.join(tempfile.gettempdir(), f"kvio-kv-test-{uuid.uuid4().hex[:12]}")
    writing = False
    try:
        kvs = KeyValueSystem(conf={**conf, **KV_TEST_CONF})
        _remove_leftover_store(kvs, uri)
        with _progress(args, total=2 * KV_TEST_PAIRS, unit="pairs", desc="run-kv-test") as bar:
            writing = True
            _write_kv_test_store(kvs, uri, bar)
            _check_kv_test_store(kvs, uri, bar)
        kvs.delete_store(uri)
        _check(not kvs.exists(uri), "store still exists after delete_store")
    except Exception as exc:  # a smoke test reports every failure, expected or not
        print("Failed the test!")
        print(f"{PROG}: run-kv-test: {uri}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if writing:  # safe even if create_store refused the path: only kvio stores are deleted
            _cleanup_after_failure(kvs, uri)
        return 1
    print("Passed the test!")
    return 0


def _cleanup_after_failure(kvs: KeyValueSystem, uri: str) -> None:
    try:
        kvs.delete_store(uri)
    except StoreNotFoundError:
        pass
    except (KvioError, OSError) as exc:
        print(f"{PROG}: run-kv-test: could not remove {uri}: {exc}", file=sys.stderr)
