"""kvio serve --read-through NAME=module:function against a real server process: keys the store
lacks come from the loader and are kept for kvio.serve.read.through.ttl (absences too), one load
per key at a time under concurrent requests, and a failing loader gives 503 for that key."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import kvio

from .conftest import pkey

LOADER = "tests.serve.loaders:lookup"
ROOT = str(Path(__file__).resolve().parents[2])


def loads(log: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in log.read_text().split()] if log.exists() else []


@pytest.fixture
def store(tmp_path) -> str:
    uri = str(tmp_path / "s.kv")
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    return uri


def start(spawn, tmp_path, store, ttl: str = "60s"):
    log = tmp_path / "loads.log"
    env = {"KVIO_TEST_LOADER_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    srv = spawn([f"s={store}"], "--read-through", f"s={LOADER}", "--conf",
                f"kvio.serve.read.through.ttl={ttl}", env=env)
    return srv, log


def test_misses_are_loaded_and_kept(spawn, tmp_path, store):
    srv, log = start(spawn, tmp_path, store)
    stored = srv.get("/v1/stores/s/keys/a")
    assert stored.status == 200 and stored.body == b"1" and "kvio-source" not in stored.headers
    for _ in range(3):
        answer = srv.get("/v1/stores/s/keys/" + pkey(b"x\x00\xff"))
        assert answer.status == 200 and answer.body == b"loaded:s:x\x00\xff"
        assert answer.headers["kvio-source"] == "read-through" and answer.headers["kvio-version"]
        absent = srv.get("/v1/stores/s/keys/none1")
        assert absent.status == 404 and absent.json()["error"]["code"] == "key_not_found"
    assert loads(log) == [b"x\x00\xff", b"none1"]  # the store's own keys never reach the loader
    batch = srv.post_json("/v1/stores/s/get", {"keys": ["a", "x", "none1", "b", "none2"]})
    assert batch.status == 200
    assert batch.json()["values"] == ["1", "loaded:s:x", None, "2", None]
    # a batch's misses are loaded concurrently (in worker threads): their order is not fixed
    assert loads(log)[:2] == [b"x\x00\xff", b"none1"]
    assert sorted(loads(log)[2:]) == [b"none2", b"x"]
    with kvio.connect(srv.url(), "s") as remote:  # the client sees loaded values as values
        assert remote.get(b"y") == b"loaded:s:y" and remote.get(b"none3") is None
        assert remote.get_many([b"a", b"y", b"z"]) == [b"1", b"loaded:s:y", b"loaded:s:z"]


def test_answers_expire_after_the_ttl(spawn, tmp_path, store):
    srv, log = start(spawn, tmp_path, store, ttl="1s")
    for _ in range(2):
        assert srv.get("/v1/stores/s/keys/x").status == 200
        assert srv.get("/v1/stores/s/keys/none1").status == 404
    assert loads(log) == [b"x", b"none1"]
    time.sleep(1.2)  # past the time to live: both are asked again
    assert srv.get("/v1/stores/s/keys/x").body == b"loaded:s:x"
    assert srv.get("/v1/stores/s/keys/none1").status == 404
    assert loads(log) == [b"x", b"none1", b"x", b"none1"]


def test_one_load_per_key_under_concurrent_requests(spawn, tmp_path, store):
    srv, log = start(spawn, tmp_path, store)
    with ThreadPoolExecutor(16) as pool:  # the loader takes 0.5 s for slow* keys
        answers = list(pool.map(lambda i: srv.get(f"/v1/stores/s/keys/slow{i % 2}"), range(32)))
    assert all(a.status == 200 for a in answers)
    assert {a.body for a in answers} == {b"loaded:s:slow0", b"loaded:s:slow1"}
    assert sorted(loads(log)) == [b"slow0", b"slow1"]


def test_a_failing_loader_gives_503_for_that_key_only(spawn, tmp_path, store):
    srv, log = start(spawn, tmp_path, store)
    for _ in range(2):  # failures are not kept: the loader is asked again
        failed = srv.get("/v1/stores/s/keys/fail1")
        assert failed.status == 503
        error = failed.json()["error"]
        assert error["code"] == "load_failed" and "the database is down" in error["message"]
        assert "fail1" in error["message"]
    broken = srv.get("/v1/stores/s/keys/text1")  # a str is never served as a value
    assert broken.status == 503 and "str" in broken.json()["error"]["message"]
    assert srv.get("/v1/stores/s/keys/ok").body == b"loaded:s:ok"
    batch = srv.post_json("/v1/stores/s/get", {"keys": ["a", "fail2"]})
    assert batch.status == 503 and batch.json()["error"]["code"] == "load_failed"
    assert loads(log).count(b"fail1") == 2
    with kvio.connect(srv.url(), "s") as remote:
        with pytest.raises(kvio.KvioError, match="load_failed"):
            remote.get(b"fail3")


def test_bad_read_through_arguments(tmp_path, store):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kvio", "serve", f"s={store}", *args,
                               "--port", "1"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
    for args, status, text in [(("--read-through", "s=nocolon"), 2, "module:function"),
                               (("--read-through", f"t={LOADER}"), 2, "not served"),
                               (("--read-through", "s=no_such_module_kvio:f"), 1, "cannot import"),
                               (("--read-through", "s=tests.serve.loaders:nope"), 1,
                                "not a callable")]:
        done = run(*args)
        assert done.returncode == status, done.stderr
        assert text in done.stderr and "Traceback" not in done.stderr
