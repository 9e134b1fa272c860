"""kvio.http1, the lean keep-alive HTTP/1.1 connection of kvio.connect, against small servers on
loopback that answer the ways HTTP/1.1 allows (kvio serve itself always sends Content-Length:
tests/serve/test_client.py): chunked bodies, bodies delimited by the end of the connection,
interim 100 answers, keep-alive connections the server closes without saying so."""
from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator

import pytest

import kvio
from kvio import http1


class _Handler(socketserver.BaseRequestHandler):
    answer: Callable[[bytes], tuple[bytes, bool]]  # request head+body -> (answer, close after)

    def handle(self) -> None:
        sock = self.request
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                buf += sock.recv(65536)
            body, buf = buf[:length], buf[length:]
            data, close = type(self).answer(head + b"\r\n\r\n" + body)
            sock.sendall(data)
            if close:
                return


@pytest.fixture
def serve() -> Iterator[Callable[..., int]]:
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(answer: Callable[[bytes], tuple[bytes, bool]]) -> int:
        handler = type("Handler", (_Handler,), {"answer": staticmethod(answer)})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_content_length_keep_alive_and_one_send(serve):
    seen: list[bytes] = []

    def answer(request: bytes) -> tuple[bytes, bool]:
        seen.append(request)
        body = b"you sent " + request.split(b"\r\n\r\n", 1)[1]
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n\r\n" % len(body) + body, False

    port = serve(answer)
    conn = http1.Connection("127.0.0.1", port, False, 10)
    status, headers, body = conn.request("POST", "/p?q=1", {"Content-Type": "x/y"}, b"abc" * 1000)
    assert (status, headers["x-a"], body) == (200, "1", b"you sent " + b"abc" * 1000)
    sock = conn.sock
    assert conn.request("GET", "/again", {})[2] == b"you sent "
    assert conn.sock is sock  # kept alive
    assert seen[0].startswith(b"POST /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
    assert b"\r\nContent-Length: 3000\r\n" in seen[0] and b"\r\nContent-Type: x/y\r\n" in seen[0]
    assert b"Content-Length" not in seen[1]
    conn.close()


def test_chunked_interim_and_close_delimited_answers(serve):
    answers = [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n", False),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True),
    ]

    def answer(request: bytes) -> tuple[bytes, bool]:
        return answers.pop(0) if answers else (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                                               False)

    port = serve(answer)
    conn = http1.Connection("127.0.0.1", port, False, 10)
    assert conn.request("GET", "/", {}) == (200, {"transfer-encoding": "chunked"}, b"hello world")
    assert conn.request("GET", "/", {})[:2] == (404, {"content-length": "0"})
    assert conn.request("GET", "/", {})[2] == b"until the end"
    assert conn.sock is None  # closed with the answer: the next request connects again
    assert conn.request("GET", "/", {})[2] == b"ok"
    conn.close()


def test_stale_keep_alive_connection_is_retried_by_the_client(serve):
    """A server that closes every connection after one answer without saying so: the reused
    connection is stale, and RemoteStore sends the request once more on a new one."""
    description = json.dumps({"name": "s", "version": "v1", "pairs": 3}).encode()

    def answer(request: bytes) -> tuple[bytes, bool]:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nKvio-Version: v1\r\n"
                b"Content-Length: %d\r\n\r\n" % len(description) + description, True)

    port = serve(answer)
    conn = http1.Connection("127.0.0.1", port, False, 10)
    assert conn.request("GET", "/", {})[2] == description
    with pytest.raises(http1.StaleConnection):
        for _ in range(50):  # (until the server's close has reached us)
            conn.request("GET", "/", {})
    conn.close()
    with kvio.connect(f"http://127.0.0.1:{port}", "s") as store:
        for _ in range(5):
            assert len(store) == 3 and store.version == "v1"


def test_bad_answers_and_refused_connections(serve):
    port = serve(lambda request: (b"SSH-2.0-not http\r\n\r\n", True))
    conn = http1.Connection("127.0.0.1", port, False, 10)
    with pytest.raises(http1.ProtocolError, match="not an HTTP/1.x answer"):
        conn.request("GET", "/", {})
    assert conn.sock is None  # never reused after a failure
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(OSError):
        http1.Connection("127.0.0.1", free, False, 10).request("GET", "/", {})
    with pytest.raises(kvio.KvioError, match="cannot talk to the kvio server"):
        kvio.connect(f"http://127.0.0.1:{port}", "s")
