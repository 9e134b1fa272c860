"""Servers follow new versions: two replicas on one store both serve a new publish within a
few ``kvio.follow.interval``s, a scan in flight stays on its version through the swap and a gc,
and a version that cannot be swapped in is counted while the last good one is served."""
from __future__ import annotations

import http.client
import json
import time

import pytest

import kvio
from tests.helpers import require_module

from .conftest import Server, start_server

require_module("starlette", "the server extra (kvio[serve]) is not installed")

INTERVAL = "0.1"  # kvio.follow.interval of these servers, seconds
DEADLINE = 60.0  # polls end as soon as the condition holds


def _poll(condition, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def _publish(uri: str, tag: bytes, n: int = 100, mode: str = "overwrite") -> str:
    with kvio.KeyValueSystem().create_store(uri, mode=mode) as w:
        w.put_many((b"key%08d" % i, tag + b"%d" % i) for i in range(n))
    assert w.record is not None
    return w.record["version"]


def _serving(server: Server, version: str) -> bool:
    return server.get("/v1/stores/s/keys/key00000001").headers.get("kvio-version") == version


def test_replicas_follow_a_publish(tmp_path):
    uri = str(tmp_path / "s.kv")
    v1 = _publish(uri, b"one-", mode="error")
    servers = [start_server(tmp_path, [f"s={uri}"], "--conf", f"kvio.follow.interval={INTERVAL}")
               for _ in range(2)]
    try:
        for server in servers:
            assert server.get("/v1/stores/s/keys/key00000001").body == b"one-1"
        v2 = _publish(uri, b"two-", n=150)
        for server in servers:
            _poll(lambda server=server: _serving(server, v2), "the new version on every replica")
            assert server.get("/v1/stores/s/keys/key00000001").body == b"two-1"
            assert server.get("/v1/stores/s/keys/key00000120").body == b"two-120"  # a new key
            batch = server.post_json("/v1/stores/s/get", {"keys": ["key00000002", "key00000140"]})
            assert batch.json() == {"version": v2, "values": ["two-2", "two-140"]}
            info = server.get("/v1/stores/s").json()
            assert (info["version"], info["pairs"], info["swaps"], info["swap_errors"]) == \
                (v2, 150, 1, 0)
            metrics = server.get("/metrics").body.decode()
            assert f'kvio_store_version_info{{store="s",version="{v2}"}} 1.0' in metrics
            assert f'kvio_store_version_info{{store="s",version="{v1}"}} 0.0' in metrics
            assert 'kvio_store_swaps{store="s"} 1.0' in metrics
    finally:
        for server in servers:
            assert server.stop() == 0, server.output()


@pytest.mark.slow
def test_a_scan_in_flight_keeps_its_version_through_a_swap_and_gc(tmp_path):
    uri, n = str(tmp_path / "s.kv"), 200_000  # ~30 MB of NDJSON: more than socket buffers
    v1 = _publish(uri, b"old-", n=n, mode="error")
    server = start_server(tmp_path, [f"s={uri}"], "--conf", f"kvio.follow.interval={INTERVAL}")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/v1/stores/s/scan")
        resp = conn.getresponse()
        assert resp.getheader("kvio-version") == v1
        first = resp.readline()
        v2 = _publish(uri, b"new-", n=10)
        _poll(lambda: _serving(server, v2), "the server to serve the new version")
        # The version the scan reads is pinned: gc with no grace and one version retained
        # keeps it while the scan runs.
        removed = kvio.KeyValueSystem(conf={"kvio.gc.grace": "0", "kvio.versions.retain": "1"}) \
            .gc(uri, older_than=0)
        assert v1 in removed["pinned"]
        lines = (first + resp.read()).splitlines()
        conn.close()
        assert len(lines) == n
        assert all(json.loads(line)["value"].startswith("old-") for line in lines[::997])
        assert json.loads(lines[-1]) == {"key": f"key{n - 1:08d}", "value": f"old-{n - 1}"}
    finally:
        assert server.stop() == 0, server.output()


def test_a_version_that_cannot_be_swapped_in_is_counted(tmp_path):
    uri = str(tmp_path / "s.kv")
    v1 = _publish(uri, b"one-", mode="error")
    server = start_server(tmp_path, [f"s={uri}"], "--conf", f"kvio.follow.interval={INTERVAL}")
    try:
        kvio.KeyValueSystem().delete_store(uri)  # the follower notices; mapped files still answer

        def rejected() -> bool:
            return server.get("/v1/stores/s").json()["swap_errors"] > 0
        _poll(rejected, "the follower to report the deleted store")
        info = server.get("/v1/stores/s").json()
        assert info["version"] == v1 and info["last_error"].startswith("no store at this location")
        assert server.get("/v1/stores/s/keys/key00000003").body == b"one-3"
        assert server.get("/readyz").status == 200
        metrics = server.get("/metrics").body.decode()
        assert 'kvio_store_swap_errors_total{store="s"}' in metrics
        assert 'kvio_store_swap_errors_total{store="s"} 0.0' not in metrics
    finally:
        assert server.stop() == 0, server.output()
