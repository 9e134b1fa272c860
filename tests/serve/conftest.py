"""Fixtures of the server tests: stores on disk and ``kvio serve`` run as a real subprocess
on a free loopback port, called over real HTTP (http.client sends the exact request target,
so percent-encoded bytes reach the server as written)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest

import kvio

START_TIMEOUT = 60.0  # seconds to wait for /readyz (2 busy cores, several workers)

#: keys that break naive URL handling: NUL, 0xFF, path and query characters, space, escapes,
#: dot segments, the empty key, non-ASCII text
HOSTILE_KEYS = [b"", b"\x00", b"\x00\xff", b"\xff", b"\xff\xff", b"/", b"a/b", b"%", b"%zz",
                b"%41", b"?", b"a?b=c&d", b"#", b"#frag", b" ", b"a b", b"+", b".", b"..",
                b"caf\xc3\xa9", b"\xc3", b"\\", b"\r\n", b"k\x00k"]


def pkey(key: bytes) -> str:
    """A key percent-encoded for a URL path or query (every byte but unreserved ones)."""
    return quote_from_bytes(key, safe="")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    """A running ``kvio serve`` process."""

    proc: subprocess.Popen
    port: int
    log: Path
    token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            all_headers = dict(headers or {})
            token = token if token is not None else self.token
            if token is not None:
                all_headers.setdefault("Authorization", f"Bearer {token}")
            conn.request(method, target, body=body, headers=all_headers)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, target: str, **kw: Any) -> Answer:
        return self.request("GET", target, **kw)

    def post_json(self, target: str, doc: Any, **kw: Any) -> Answer:
        return self.request("POST", target, json.dumps(doc).encode(),
                            {"Content-Type": "application/json"}, **kw)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(tmp_path: Path, specs: list[str], *args: str, token: str | None = None,
                 env: dict[str, str] | None = None, wait: bool = True) -> Server:
    """Start ``kvio serve SPECS ARGS`` on a free port and wait until /readyz answers 200."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kvio", "serve", *specs, "--port", str(port),
                                 *args], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    server = Server(proc, port, log, token)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"kvio serve exited with {server.proc.returncode}:\n"
                                 f"{server.output()}")
        try:
            if server.get("/readyz").status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"kvio serve was not ready in {START_TIMEOUT}s:\n{server.output()}")
        time.sleep(0.05)


@pytest.fixture
def spawn(tmp_path) -> Iterator[Any]:
    """``spawn(specs, *args, token=...)``: start servers that are stopped after the test."""
    servers: list[Server] = []

    def start(specs: list[str], *args: str, **kw: Any) -> Server:
        server = start_server(tmp_path, specs, *args, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=30)


# ---- stores -----------------------------------------------------------------------------------
def build_merged_store(kvs: kvio.KeyValueSystem, root: Path) -> tuple[str, dict[bytes, bytes]]:
    """A store merged from two (overlapping key ranges: the second one's values win) holding
    text keys, binary values and every hostile key, and the dict it must equal."""
    base = {b"k%04d" % i: b"old-%d" % i for i in range(1000)}
    base.update({k: b"hostile:" + k for k in HOSTILE_KEYS})
    newer = {b"k%04d" % i: b"new-%d" % i for i in range(0, 1000, 2)}
    newer[b"bin"] = bytes(range(256))
    newer[b"\xff"] = b"\x00\xff not utf-8"
    uri, other = str(root / "merged.kv"), str(root / "newer.kv")
    with kvs.create_store(uri) as w:
        w.put_many(sorted(base.items()))
    with kvs.create_store(other) as w:
        w.put_many(sorted(newer.items()))
    kvs.merge_store(other, uri)
    return uri, {**base, **newer}


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> tuple[str, dict[bytes, bytes]]:
    return build_merged_store(kvio.KeyValueSystem(), tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, merged) -> Iterator[Server]:
    """One server for the API tests: ``m`` = the merged store, ``small`` = a 3-pair store,
    batches limited to 50 keys and bodies to 64 KB."""
    root = tmp_path_factory.mktemp("server")
    small = str(root / "small.kv")
    with kvio.KeyValueSystem().create_store(small) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    srv = start_server(root, [f"m={merged[0]}", f"small={small}"], "--conf",
                       "kvio.serve.batch.max.keys=50", "--conf", "kvio.serve.body.max=64KB")
    yield srv
    assert srv.stop() == 0, srv.output()
