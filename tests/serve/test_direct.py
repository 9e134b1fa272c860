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

    def __init__(self, loop: asyncio.AbstractEventLoop, uri: str, token_file: str | None,
                 conf: dict[str, str] | None = None, direct: bool = True):
        from uvicorn.server import ServerState

        from kvio.serve.app import build_app
        from kvio.serve.options import ServeOptions
        from kvio.serve.protocol import DirectHttpToolsProtocol

        self.app = build_app(ServeOptions(stores=(("m", uri),), token_file=token_file,
                                          conf=conf or {}))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self.state = ServerState()
        self.state.default_headers = [(b"date", b"Fri, 04 Dec 2026 18:00:00 GMT")]  # (the server's)
        self.protocol = DirectHttpToolsProtocol(config, self.state, {}, _loop=loop)
        self.transport = Transport()
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]
        if not direct:  # every request the ASGI app's, as without this protocol
            self.protocol._direct = None
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

    def make(token: bool = False, conf: dict[str, str] | None = None,
             direct: bool = True) -> Harness:
        token_file = None
        if token:
            token_file = str(tmp_path / "token")
            Path(token_file).write_text(TOKEN + "\n")
        h = Harness(asyncio.get_running_loop(), store[0], token_file, conf, direct)
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


# ---- batch gets ---------------------------------------------------------------------------------
ARROW = "application/vnd.apache.arrow.stream"


def post(target: str, body: bytes, *headers: str, content_type: str = "application/json",
         length: bool = True) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: t", *headers]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join([*lines, "", ""]).encode() + body


def b64_body(keys: list[bytes]) -> bytes:
    """A JSON batch body as kvio.connect lays it out."""
    import pyarrow as pa

    from kvio import b64
    return b64.json_list(pa.array(keys, type=pa.large_binary()), b'{"keys":',
                         b',"encoding":"base64"}')


def arrow_body(keys: list[bytes]) -> bytes:
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    table = pa.table({"key": pa.array(keys, type=pa.binary())})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def batch_requests() -> list[tuple[str, bytes]]:
    """Batch gets the protocol answers itself: found and absent keys in each body format, and
    the 4xx of bodies that are wrong only once read."""
    import base64
    keys = [b"k001", b"k042", b"nope", b"k099"]
    text = json.dumps({"keys": [k.decode() for k in keys]}).encode()
    spaced = json.dumps({"keys": [base64.b64encode(k).decode() for k in HOSTILE_KEYS],
                         "encoding": "base64"}).encode()
    return [
        ("base64, one length", post("/v1/stores/m/get", b64_body(keys))),
        ("base64, hostile keys", post("/v1/stores/m/get", b64_body(HOSTILE_KEYS))),
        ("base64, spaced JSON", post("/v1/stores/m/get", spaced)),
        ("utf-8", post("/v1/stores/m/get?ignored=1", text,
                       content_type="application/json; charset=utf-8")),
        ("arrow", post("/v1/stores/m/get", arrow_body(keys), content_type=ARROW)),
        ("arrow, hostile keys", post("/v1/stores/m/get", arrow_body(HOSTILE_KEYS),
                                     content_type=ARROW)),
        ("empty list", post("/v1/stores/m/get", b'{"keys":[]}')),
        ("bad base64", post("/v1/stores/m/get", b'{"keys":["azAwMQ==","a!AwMg=="],'
                            b'"encoding":"base64"}')),
        ("bad JSON", post("/v1/stores/m/get", b"{not json")),
        ("no body", post("/v1/stores/m/get", b"", length=False)),
        ("bad encoding", post("/v1/stores/m/get", b'{"keys":[],"encoding":"hex"}')),
        ("bad arrow", post("/v1/stores/m/get", b"not arrow", content_type=ARROW)),
        ("too many keys", post("/v1/stores/m/get", b64_body([b"k%03d" % i for i in range(31)]))),
    ]


def request_counts(h: Harness) -> list[str]:
    text = h.app.api.metrics.render()[0].decode()  # type: ignore[attr-defined]
    return sorted(line for line in text.splitlines()
                  if line.startswith(("kvio_http_requests_total", "kvio_keys_served_total")))


CONF = {"kvio.serve.batch.max.keys": "30", "kvio.serve.body.max": "4096"}


@in_loop
async def test_batches_are_answered_directly_as_the_app_answers(harness):
    """Each batch get is answered during the read that completes it, in one write, with the
    very bytes the ASGI app writes for it (status, headers, JSON or Arrow body, JSON error),
    and counted in the metrics as the app counts it."""
    direct, app = harness(conf=CONF), harness(conf=CONF, direct=False)
    statuses = []
    for name, request in batch_requests():
        out = direct.feed(request)
        assert out and direct.transport.writes == 1, name
        assert app.feed(request) == b""
        assert out == await app.settle(), name
        statuses.append(answers(out)[0][0])
        direct.transport.writes = 0
    assert statuses == [200] * 7 + [400] * 5 + [413]
    assert request_counts(direct) == request_counts(app)
    assert 'route="/v1/stores/{name}/get",status="413"} 1.0' in "\n".join(request_counts(direct))
    assert not direct.transport.closed and direct.protocol.timeout_keep_alive_task is not None


@in_loop
async def test_a_batch_split_across_reads(harness, store):
    """A body arriving in pieces (even one byte at a time) is answered once complete."""
    direct, app = harness(), harness(direct=False)
    request = post("/v1/stores/m/get", b64_body([b"k%03d" % i for i in range(40)]))
    head_end = request.index(b"\r\n\r\n") + 4
    pieces = [request[:30], request[30:head_end + 5], *[request[i:i + 1] for i in
                                                        range(head_end + 5, head_end + 9)],
              request[head_end + 9:-1], request[-1:]]
    for piece in pieces[:-1]:
        assert direct.feed(piece) == b""
        assert direct.protocol.timeout_keep_alive_task is None  # (a request under way)
    out = direct.feed(pieces[-1])
    assert out == app.feed(request) + await app.settle()
    values = json.loads(answers(out)[0][2])["values"]
    assert values == [base64_of(store[1][b"k%03d" % i]) for i in range(40)]


def base64_of(value: bytes) -> str:
    import base64
    return base64.b64encode(value).decode()


@pytest.mark.parametrize("name, request_, status, code", [
    ("chunked body", b"POST /v1/stores/m/get HTTP/1.1\r\nHost: t\r\nContent-Type: "
     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"key\r\n9\r\ns\":[\"a\"]}"
     b"\r\n0\r\n\r\n", 200, None),
    ("chunked body over the limit", b"POST /v1/stores/m/get HTTP/1.1\r\nHost: t\r\n"
     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
     b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n", 413,
     "body_too_large"),
    ("declared length over the limit", post("/v1/stores/m/get", b" " * 5000), 413,
     "body_too_large"),
    ("wrong content type", post("/v1/stores/m/get", b'{"keys":[]}', content_type="text/plain"),
     415, "unsupported_media_type"),
    ("no content type", post("/v1/stores/m/get", b'{"keys":[]}', content_type=""), 415,
     "unsupported_media_type"),
    ("unknown store", post("/v1/stores/x/get", b'{"keys":[]}'), 404, "unknown_store"),
    ("escaped path", post("/v1/stores/m/ge%74", b'{"keys":[]}'), 200, None),
    ("GET of the batch route", get("/v1/stores/m/get"), 405, "method_not_allowed"),
    ("HTTP/1.0", post("/v1/stores/m/get", b'{"keys":["k001"]}').replace(b"HTTP/1.1", b"HTTP/1.0",
                                                                         1), 200, None),
])
@in_loop
async def test_other_batches_go_to_the_app(harness, name, request_, status, code):
    """Chunked bodies, declared lengths over kvio.serve.body.max, wrong media types, unknown
    stores, escaped paths, HTTP/1.0: nothing is written during the read, the app answers."""
    h = harness(conf=CONF)
    assert h.feed(request_) == b""
    [(got, _, body)] = answers(await h.settle())
    assert got == status, (name, body)
    if code is not None:
        assert json.loads(body)["error"]["code"] == code


@in_loop
async def test_expect_100_continue_goes_to_the_app(harness, store):
    h = harness()
    body = b'{"keys":["k003"]}'
    request = post("/v1/stores/m/get", body, "Expect: 100-continue")
    assert h.feed(request[:-len(body)]) == b""
    assert await h.settle() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.feed(request[-len(body):])
    [(status, _, answer)] = answers(await h.settle())
    assert status == 200 and json.loads(answer)["values"] == [store[1][b"k003"].decode()]


@in_loop
async def test_pipelined_batches_keep_the_order(harness, store):
    """Batches and single gets pipelined in one read are answered in order in one write; after
    a request of the app's, the rest waits for its answer (the app answers those too)."""
    h = harness()
    model = store[1]
    first = post("/v1/stores/m/get", b64_body([b"k010", b"k011"]))
    second = post("/v1/stores/m/get", arrow_body([b"k012"]), content_type=ARROW)
    out = h.feed(first + get("/v1/stores/m/keys/k013") + second)
    assert h.transport.writes == 1
    (s1, _, b1), (s2, _, b2), (s3, h3, _) = answers(out)
    assert (s1, s2, s3, h3["content-type"]) == (200, 200, 200, ARROW)
    assert json.loads(b1)["values"] == [base64_of(model[b"k010"]), base64_of(model[b"k011"])]
    assert b2 == model[b"k013"]
    assert h.feed(get("/healthz") + first + get("/v1/stores/m/keys/k013")) == b""
    (s1, _, b1), (s2, _, b2), (s3, _, b3) = answers(await h.settle())
    assert json.loads(b1)["status"] == "ok" and json.loads(b2)["values"][0] == \
        base64_of(model[b"k010"]) and b3 == model[b"k013"]


@in_loop
async def test_batch_with_the_bearer_token(harness, store):
    h = harness(token=True)
    request = post("/v1/stores/m/get", b64_body([b"k020"]), f"Authorization: Bearer {TOKEN}")
    [(status, _, body)] = answers(h.feed(request))
    assert status == 200 and json.loads(body)["values"] == [base64_of(store[1][b"k020"])]
    for header in ("Authorization: Bearer wrong", "X-Other: 1"):
        assert h.feed(post("/v1/stores/m/get", b64_body([b"k020"]), header)) == b""
        [(status, headers, body)] = answers(await h.settle())
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"


@in_loop
async def test_shutdown_while_a_batch_is_read(harness, store):
    """As uvicorn ends a request under way when the server shuts down: answered with
    "connection: close", then the connection is closed; an idle one is closed at once."""
    h = harness()
    request = post("/v1/stores/m/get", b64_body([b"k030"]))
    assert h.feed(request[:-3]) == b""
    h.protocol.shutdown()
    assert not h.transport.closed
    [(status, headers, body)] = answers(h.feed(request[-3:]))
    assert status == 200 and headers["connection"] == "close" and h.transport.closed
    assert json.loads(body)["values"] == [base64_of(store[1][b"k030"])]
    idle = harness()
    assert answers(idle.feed(request))[0][0] == 200
    idle.protocol.shutdown()
    assert idle.transport.closed
