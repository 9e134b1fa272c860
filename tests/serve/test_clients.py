"""'Your language': the example clients in examples/clients/ (curl, Java 17 single-file source,
Node.js 20 with the built-in fetch) run against a real server with a bearer token and print
what the store holds, hostile keys included. Each test skips when its tool is missing, unless
CI=true: then a missing tool is a failure."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import kvio
from tests.helpers import require_module

from .conftest import Server

require_module("starlette", "the server extra (kvio[serve]) is not installed")

CLIENTS = Path(__file__).resolve().parents[2] / "examples" / "clients"
TOKEN = "client-test-token"
PAIRS = {"user:1": "Ann", "user:2": "Bob", "user:3": "Cy", "a b/c?d%#+": "hostile",
         "café": "crème", "x": "y"}
#: the keys the clients ask for: the first is fetched alone and scanned from
ASKED = ["a b/c?d%#+", "café", "user:2", "nope"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (CI=true) for the client tests")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Server, str]:
    from .conftest import start_server
    root = tmp_path_factory.mktemp("clients")
    uri = str(root / "demo.kv")
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many(sorted((k.encode(), v.encode()) for k, v in PAIRS.items()))
    token_file = root / "token"
    token_file.write_text(TOKEN + "\n")
    server = start_server(root, [f"demo={uri}"], "--token-file", str(token_file), token=TOKEN)
    yield server, server.get("/v1/stores/demo").headers["kvio-version"]
    assert server.stop() == 0, server.output()


def _scanned() -> list[tuple[str, str]]:
    """What a scan of 3 pairs from the first key asked holds (keys in byte order)."""
    keys = [k for k in sorted(PAIRS, key=str.encode) if k.encode() >= ASKED[0].encode()]
    return [(k, PAIRS[k]) for k in keys[:3]]


def _expected(version: str) -> str:
    first = ASKED[0]
    lines = [f"version {version}", f"get {first} = {PAIRS[first]}"]
    lines += [f"batch {k} = {PAIRS.get(k, '(absent)')}" for k in ASKED]
    lines += [f"scan {k} = {v}" for k, v in _scanned()]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KVIO_TOKEN"}
    if token is not None:
        env["KVIO_TOKEN"] = token
    return subprocess.run(cmd, capture_output=True, timeout=300, cwd=CLIENTS, env=env)


def test_java_client(served):
    server, version = served
    java = _tool("java")
    proc = _run([java, "Client.java", server.url(), "demo", *ASKED])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == _expected(version)
    denied = _run([java, "Client.java", server.url(), "demo", *ASKED], token="wrong")
    assert denied.returncode != 0 and b"HTTP 401" in denied.stderr


def test_node_client(served):
    server, version = served
    node = _tool("node")
    proc = _run([node, "client.mjs", server.url(), "demo", *ASKED])
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == _expected(version)
    denied = _run([node, "client.mjs", server.url(), "demo", *ASKED], token=None)
    assert denied.returncode == 1 and b"HTTP 401" in denied.stderr


def test_curl_script(served):
    server, version = served
    _tool("curl")
    bash = _tool("bash")
    proc = _run([bash, "curl.sh", server.url(), "demo", *ASKED])
    assert proc.returncode == 0, proc.stderr.decode()
    sections = proc.stdout.decode().split("== ")[1:]
    assert json.loads(sections[0].split("\n", 1)[1])["version"] == version
    head, _, body = sections[1].split("\n", 1)[1].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and f"kvio-version: {version}" in head
    assert body.rstrip("\n") == PAIRS[ASKED[0]]
    batch = json.loads(sections[2].split("\n", 1)[1])
    assert [None if v is None else base64.b64decode(v).decode() for v in batch["values"]] == \
        [PAIRS.get(k) for k in ASKED]
    scanned = [json.loads(line) for line in sections[3].split("\n", 1)[1].splitlines()]
    assert [(p["key"], p["value"]) for p in scanned] == _scanned()
    denied = _run([bash, "curl.sh", server.url(), "demo", *ASKED], token=None)
    assert denied.returncode != 0 and b"401" in denied.stderr + denied.stdout
