"""Single gets answered inside the HTTP protocol (kvio.serve.direct, DirectHttpToolsProtocol).

The protocol is fed bytes as a socket would deliver them, over a transport that records what
is written. A request answered directly is answered before ``data_received`` returns (no task,
no loop pass), so these tests also tell which requests took the direct way; the ones given to
the ASGI app are answered once the loop has run. Behaviour over real sockets is in test_api.
"""
from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import kvio
from tests.helpers import require_module

from .conftest import HOSTILE_KEYS, pkey

require_module("httptools", "the server extra (kvio[serve]) is not installed")
uvicorn = require_module("uvicorn", "the server extra (kvio[serve]) is not installed")

TOKEN = "s3cret-token"


class Transport:
    """Records writes; enough of an asyncio transport for uvicorn's protocol."""

    def __init__(self) -> None:
        self.data = b""
        self.writes = 0
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += bytes(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8470), "peername": ("127.0.0.1", 50000)}.get(name,
                                                                                       default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def take(self) -> bytes:
        data, self.data = self.data, b""
        return data


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers in ``data``: (status, headers, body), bodies by Content-Length (none for
    HEAD answers: pass those one at a time and cut the body yourself)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in
                   (line.split(": ", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split(" ")[1]), headers, data[:length]))
        data = data[length:]
    return out


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[bytes, bytes]]:
    model = {b"k%03d" % i: b"v%d" % i for i in range(100)}
    model.update({k: b"h:" + k for k in HOSTILE_KEYS})
    uri = str(tmp_path / "m.kv")
    with kvio.KeyValueSystem().create_store(uri) as w:
        w.put_many(sorted(model.items()))
    return uri, model


class Harness:
    """One connection of DirectHttpToolsProtocol over the app of ``store``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: str, token_file: str | None):
        from uvicorn.server import ServerState

        from kvio.serve.app import build_app
        from kvio.serve.options import ServeOptions
        from kvio.serve.protocol import DirectHttpToolsProtocol

        self.app = build_app(ServeOptions(stores=(("m", uri),), token_file=token_file))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self.state = ServerState()
        self.state.default_headers = [(b"date", b"Fri, 04 Dec 2026 18:00:00 GMT")]  # (the server's)
        self.protocol = DirectHttpToolsProtocol(config, self.state, {}, _loop=loop)
        self.transport = Transport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]
        self.loop = loop

    def feed(self, data: bytes) -> bytes:
        """What is written while ``data`` is received (direct answers only)."""
        self.protocol.data_received(data)
        return self.transport.take()

    async def settle(self) -> bytes:
        """What is written once the app's tasks have run."""
        for _ in range(50):
            await asyncio.sleep(0)
        return self.transport.take()

    def close(self) -> None:
        self.protocol.connection_lost(None)
        self.app.api.stores.close()  # type: ignore[attr-defined]


@pytest.fixture
def harness(store, tmp_path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(token: bool = False) -> Harness:
        token_file = None
        if token:
            token_file = str(tmp_path / "token")
            Path(token_file).write_text(TOKEN + "\n")
        h = Harness(asyncio.get_running_loop(), store[0], token_file)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run in a fresh event loop (its fixtures resolved by pytest as usual)."""
    @functools.wraps(test)
    def run(*args: Any, **kw: Any) -> None:
        asyncio.run(test(*args, **kw))
    return run


def get(target: str, *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "Host: t", *headers, "", ""]).encode()


@in_loop
async def test_pipelined_gets_are_answered_in_one_write(harness, store):
    """A pipelined present and absent key are answered during the read, in order, in one
    write, with Kvio-Version, a JSON 404, and both counted in the metrics."""
    h = harness()
    model = store[1]
    out = h.feed(get("/v1/stores/m/keys/k007") + get("/v1/stores/m/keys/nope"))
    assert h.transport.writes == 1
    (s1, h1, b1), (s2, h2, b2) = answers(out)
    assert (s1, b1, h1["content-type"]) == (200, model[b"k007"], "application/octet-stream")
    assert h1["kvio-version"] and h1["date"] == "Fri, 04 Dec 2026 18:00:00 GMT"
    assert s2 == 404 and h2["content-type"] == "application/json"
    error = json.loads(b2)["error"]
    assert error["code"] == "key_not_found" and h2["kvio-version"] == h1["kvio-version"]
    metrics = h.app.api.metrics.render()[0].decode()  # type: ignore[attr-defined]
    route = 'route="/v1/stores/{name}/keys/{key:path}"'
    assert f'kvio_http_requests_total{{method="GET",{route},status="200"}} 1.0' in metrics
    assert f'kvio_http_requests_total{{method="GET",{route},status="404"}} 1.0' in metrics
    assert 'kvio_keys_served_total{result="absent",store="m"} 1.0' in metrics
    assert not h.transport.closed and h.protocol.timeout_keep_alive_task is not None


@in_loop
async def test_any_key_bytes_and_keep_alive_reuse(harness, store):
    h = harness()
    for key in HOSTILE_KEYS + [b"k000"]:
        out = h.feed(get(f"/v1/stores/m/keys/{pkey(key)}?ignored=1"))
        [(status, _, body)] = answers(out)
        assert (status, body) == (200, store[1][key]), key
    assert h.state.total_requests == len(HOSTILE_KEYS) + 1 and not h.transport.closed
    # The keep-alive timer closes the connection only once it has been idle for the timeout.
    assert h.protocol.timeout_keep_alive_task is not None
    h.protocol.timeout_keep_alive_handler()  # (as if it fired now: the last answer is recent)
    assert not h.transport.closed and h.protocol.timeout_keep_alive_task is not None
    h.protocol._idle_since -= h.protocol.timeout_keep_alive
    h.protocol.timeout_keep_alive_handler()
    assert h.transport.closed


@in_loop
async def test_head_and_request_split_across_reads(harness, store):
    h = harness()
    out = h.feed(get("/v1/stores/m/keys/k001", method="HEAD"))
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and rest == b""
    assert b"\r\ncontent-length: %d\r\n" % len(store[1][b"k001"]) in head
    request = get("/v1/stores/m/keys/k002")
    assert h.feed(request[:20]) == b""
    assert answers(h.feed(request[20:]))[0][2] == store[1][b"k002"]


@in_loop
async def test_bad_percent_encoding_is_a_json_400(harness):
    h = harness()
    [(status, headers, body)] = answers(h.feed(get("/v1/stores/m/keys/a%zz")))
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_percent_encoding"


@in_loop
async def test_other_requests_go_to_the_app_in_order(harness, store):
    """Requests the protocol does not answer (another route, an unknown store, Connection:
    close) are the app's; answers keep the order of the requests."""
    h = harness()
    assert h.feed(get("/healthz") + get("/v1/stores/m/keys/k003")) == b""
    (s1, _, b1), (s2, _, b2) = answers(await h.settle())
    assert (s1, json.loads(b1)["status"], s2, b2) == (200, "ok", 200, store[1][b"k003"])
    out = h.feed(get("/v1/stores/m/keys/k004") + get("/v1/stores/x/keys/k004"))
    assert answers(out)[0][2] == store[1][b"k004"]
    [(status, _, body)] = answers(await h.settle())
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_store"
    assert h.feed(get("/v1/stores/m/keys/k005", "Connection: close")) == b""
    [(status, headers, body)] = answers(await h.settle())
    assert (status, body, headers["connection"]) == (200, store[1][b"k005"], "close")
    assert h.transport.closed


@in_loop
async def test_bearer_token(harness, store):
    """With a token, a request carrying it is answered directly; one without it or with a
    wrong one gets the app's 401."""
    h = harness(token=True)
    out = h.feed(get("/v1/stores/m/keys/k006", f"Authorization: Bearer {TOKEN}"))
    assert answers(out)[0][2] == store[1][b"k006"]
    for header in ("Authorization: Bearer wrong", "X-Other: 1"):
        assert h.feed(get("/v1/stores/m/keys/k006", header)) == b""
        [(status, headers, body)] = answers(await h.settle())
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert "www-authenticate" in headers
