"""``kvio serve`` as a process: the bearer token, several workers sharing the port and the
metrics, a graceful stop that drains a streaming answer, Ctrl-C, and the command's own errors
(usage errors exit 2, everything else ``kvio: error: ...`` and exit 1, never a traceback)."""
from __future__ import annotations

import glob
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import kvio
from tests.helpers import require_module

from .conftest import pkey, start_server

require_module("starlette", "the server extra (kvio[serve]) is not installed")


@pytest.fixture
def small(tmp_path) -> str:
    uri = str(tmp_path / "small.kv")
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    return uri


def _kvio(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvio", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


# ---- token --------------------------------------------------------------------------------------
def test_bearer_token(spawn, small, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = spawn([f"s={small}"], "--token-file", str(token_file))
    assert server.get("/healthz").status == 200 and server.get("/readyz").status == 200
    for target in ("/v1/stores", "/v1/stores/s/keys/a", "/v1/stores/s/scan", "/metrics",
                   "/no/such/thing"):
        answer = server.get(target)
        assert answer.status == 401, target
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert server.get(target, token="s3cret-tokeN").status == 401
        assert server.get(target, token="s3cret-token-and-more").status == 401
    assert server.get("/v1/stores/s/keys/a", token="s3cret-token").body == b"1"
    assert server.get("/v1/stores/s/keys/a", headers={"Authorization": "bearer s3cret-token"}).body == b"1"
    post = server.request("POST", "/v1/stores/s/get", b'{"keys": ["b"]}',
                          {"Content-Type": "application/json"}, token="s3cret-token")
    assert post.json()["values"] == ["2"]
    assert server.request("POST", "/v1/stores/s/get", b'{"keys": ["b"]}',
                          {"Content-Type": "application/json"}).status == 401


@pytest.mark.parametrize("content", ["", "  \n", "two words"])
def test_unusable_token_file(small, tmp_path, content):
    token_file = tmp_path / "token"
    token_file.write_text(content)
    proc = _kvio("serve", f"s={small}", "--token-file", str(token_file), "--port", "1")
    assert proc.returncode == 1 and proc.stderr.startswith("kvio: error: "), proc.stderr
    assert str(token_file) in proc.stderr and "Traceback" not in proc.stderr


# ---- workers ------------------------------------------------------------------------------------
def _metrics_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "kvio-serve-metrics-*")))


def test_two_workers_share_the_port_and_the_metrics(spawn, small):
    before = _metrics_dirs()
    server = spawn([f"s={small}"], "--workers", "2")
    pids = set()
    deadline = time.monotonic() + 60  # the second worker may still be starting
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.add(server.get("/healthz").json()["pid"])  # a new connection each time
    assert len(pids) == 2 and server.proc.pid not in pids
    for i in range(30):
        assert server.get(f"/v1/stores/s/keys/{'abc'[i % 3]}").status == 200
    text = server.get("/metrics").body.decode()
    line = 'kvio_http_requests_total{method="GET",route="/v1/stores/{name}/keys/{key:path}",' \
           'status="200"} 30.0'
    assert line in text  # summed over both workers, whichever answered the scrape
    assert 'kvio_keys_served_total{result="found",store="s"} 30.0' in text
    assert server.stop() == 0, server.output()
    assert _metrics_dirs() - before == set()  # the directory it made is gone
    assert "kvio serve: stopped" in server.output()


# ---- graceful stop ------------------------------------------------------------------------------
@pytest.fixture
def big(tmp_path) -> tuple[str, int]:
    """About 30 MB of NDJSON when scanned: far more than socket buffers hold."""
    uri, n = str(tmp_path / "big.kv"), 200_000
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many((b"key%08d" % i, b"v" * 120) for i in range(n))
    return uri, n


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_a_streaming_scan(spawn, big, workers):
    uri, n = big
    server = spawn([f"big={uri}"], "--workers", workers)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/v1/stores/big/scan")
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.readline()
    assert json.loads(first)["key"] == "key00000000"
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    # It stops accepting first. With workers the parent keeps the listening socket until they
    # have drained (new connections wait in its backlog), so there the workers' log is the sign.
    while not (_refused(server.port) if workers == "1" else
               server.output().count("Shutting down") == int(workers)):
        assert time.monotonic() < deadline, f"no sign of stopping after SIGTERM:\n{server.output()}"
        time.sleep(0.05)
    assert server.proc.poll() is None  # ...and is still answering the scan in flight
    rest = resp.read()  # the whole answer, to its last chunk (IncompleteRead otherwise)
    lines = (first + rest).splitlines()
    assert len(lines) == n and json.loads(lines[-1])["key"] == f"key{n - 1:08d}"
    conn.close()
    assert server.proc.wait(timeout=60) == 0, server.output()
    assert "kvio serve: stopped" in server.output()


def test_ctrl_c_stops_with_130(spawn, small):
    server = spawn([f"s={small}"])
    assert server.stop(signal.SIGINT) == 130
    assert "kvio: interrupted" in server.output() and "Traceback" not in server.output()


# ---- command errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: NAME=URI"),
    (["nostore"], "expected NAME=URI"),
    (["a/b=x"], "must be letters, digits"),
    (["s=x", "s=y"], "store name(s) given twice: s"),
    (["s=x", "--port", "0"], "expected a port number"),
    (["s=x", "--port", "http"], "expected a port number"),
    (["s=x", "--workers", "0"], "expected a positive number of workers"),
    (["s=x", "--drain-timeout", "-1"], "expected a positive number of seconds"),
])
def test_usage_errors_exit_2(args, message):
    proc = _kvio("serve", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_store_exits_1(tmp_path):
    proc = _kvio("serve", f"s={tmp_path / 'absent.kv'}", "--port", "1")
    assert proc.returncode == 1 and proc.stderr.startswith("kvio: error: "), proc.stderr
    assert "absent.kv" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_protocol_exits_1():
    proc = _kvio("serve", "s=bogus://x/y.kv")
    assert proc.returncode == 1 and "unknown protocol 'bogus://'" in proc.stderr, proc.stderr


def test_address_in_use_exits_1(small):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _kvio("serve", f"s={small}", "--port", str(busy.getsockname()[1]))
    assert proc.returncode == 1 and proc.stderr.startswith("kvio: error: cannot listen on "), \
        proc.stderr


def test_without_the_server_extra_names_it(small):
    """The core and the CLI import without Starlette; ``kvio serve`` says what to install."""
    code = ("import sys\n"
            "sys.modules['starlette'] = None  # as if not installed\n"
            "from kvio.cli import main\n"
            f"sys.exit(main(['serve', 's={small}']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "kvio: error: kvio serve needs starlette" in proc.stderr
    assert "pip install 'kvio[serve]'" in proc.stderr


def test_store_names_in_urls(spawn, small):
    server = spawn([f"Store.v2_a-b={small}"])
    assert server.get(f"/v1/stores/Store.v2_a-b/keys/{pkey(b'a')}").body == b"1"


def test_two_servers_on_one_store_agree(tmp_path, small):
    """Stateless over shared storage: any replica gives the same answer."""
    servers = [start_server(tmp_path, [f"s={small}"]) for _ in range(2)]
    try:
        answers = [s.post_json("/v1/stores/s/get", {"keys": ["a", "c", "z"]}).json() for s in servers]
        assert answers[0] == answers[1] and answers[0]["values"] == ["1", "3", None]
    finally:
        for s in servers:
            assert s.stop() == 0


# ---- a damaged store ----------------------------------------------------------------------------
def test_a_damaged_block_is_a_500_and_breaks_a_scan_off(spawn, tmp_path):
    """Not the client's fault: a JSON 500 naming the file; a scan that meets the block after
    its first lines ends with an error line and no final chunk, so it cannot pass for complete."""
    uri, n = str(tmp_path / "d.kv"), 20_000
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many((b"key%08d" % i, b"value-%d" % i) for i in range(n))
    (path,) = glob.glob(os.path.join(uri, "**", "*.kvp"), recursive=True)
    server = spawn([f"d={uri}"])
    with open(path, "r+b") as f:  # a byte in a data block about 40% into the file
        f.seek(os.path.getsize(path) * 2 // 5)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x20]))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("GET", "/v1/stores/d/scan")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as broken:
        resp.read()
    lines = broken.value.partial.splitlines()
    assert 0 < len(lines) < n
    error = json.loads(lines[-1])["error"]
    assert error["status"] == 500 and error["code"] == "corrupt_store" and path in error["message"]
    conn.close()
    statuses = set()
    for start in range(0, n, 5000):  # batch gets over every key: one meets the block
        answer = server.post_json("/v1/stores/d/get",
                                  {"keys": [f"key{i:08d}" for i in range(start, start + 5000)]})
        statuses.add(answer.status)
        if answer.status == 500:
            assert answer.json()["error"]["code"] == "corrupt_store"
    assert statuses == {200, 500}
    assert server.get("/healthz").status == 200  # the server itself is fine
