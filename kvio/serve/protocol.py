"""uvicorn's httptools protocol with single and batch gets answered in the protocol itself
(:class:`DirectHttpToolsProtocol`, :mod:`.direct`) and each response's head and body sent in
one write.

uvicorn writes the status line and headers of a response (``http.response.start``) and its body
(``http.response.body``) with two ``transport.write`` calls, so a small answer costs two
``send`` system calls and reaches the client as two TCP segments, waking it twice. Here the
connection's transport is wrapped in :class:`CoalescingTransport`, which holds a small write
back until the next write (joined with it into one) or the end of the event loop's current
pass, whichever comes first. A lookup answer (head, then its body in the same pass) then leaves
in one system call. Memory stays bounded: at most one small write is ever held, and writes
that are not small go out at once (with the held one, in one ``writelines``), so streamed
scans keep uvicorn's flow control.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .fast import FastPath

if TYPE_CHECKING:
    from .direct import DirectGets
    from .stores import ServedStore

#: writes up to this size may be held back to be joined with the next one (a larger next
#: write goes out with the held one in one ``writelines``: one system call, no copy)
HOLD_MAX = 16 << 10
#: direct answers to the requests of one read are sent once they reach this size
JOIN_MAX = 1 << 20


class CoalescingTransport:
    """A transport that joins a small write with the write after it (see the module)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= HOLD_MAX:
                self._transport.write(held + bytes(data))
            else:  # (copying a large body costs more: measured ~60 µs for 140 KB here)
                self._transport.writelines([held, data])
        elif len(data) <= HOLD_MAX:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send the held write, if any (at the end of the loop's pass, or before closing)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def write_now(self, data: bytes) -> None:
        """Send ``data`` at once, after the held write if any (joined with it)."""
        held = self._held
        if held is not None:
            self._held = None
            data = held + data
        self._transport.write(data)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)


def direct_gets(app: Any) -> DirectGets | None:
    """The :class:`.direct.DirectGets` of the kvio app under uvicorn's wrappers (proxy headers,
    message logger: each keeps the app it wraps as ``.app``), or None for another app."""
    for _ in range(8):
        if isinstance(app, FastPath):
            return app.direct
        app = getattr(app, "app", None)
    return None


class DirectHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` that answers single and batch gets itself
    (:mod:`.direct`).

    A request is answered here only when nothing of the ASGI app's is in flight on the
    connection (no cycle unfinished or queued), so answers keep the order of the requests; its
    answer is sent with the other direct answers of the same read, in one write, when the read
    has been parsed (or before anything uvicorn writes itself). Everything else (other routes
    and methods, HTTP/1.0, ``Connection: close``, ``Expect``, upgrades, an access log, a
    connection whose client is not reading its answers) goes to uvicorn's handling and the ASGI
    app unchanged: uvicorn's ``scope`` is built only for those.
    """

    transport: Any  # a CoalescingTransport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        usable = not self.access_log and self.limit_concurrency is None and not self.root_path
        self._direct = direct_gets(self.app) if usable else None
        self._target: tuple[ServedStore, bytes] | None = None  # the request answered here
        self._kind: str | None = None  # the media type of its body: a batch (None: a single get)
        self._body: list[bytes] = []  # the body of a batch answered here, as read so far
        self._head = False
        self._closing = False  # shutdown() came while a request answered here was being read
        self._out: list[bytes] = []  # direct answers not sent yet
        self._out_bytes = 0
        self._answered = False  # a request was answered directly in this read
        self._idle_since = float("-inf")  # loop time of the last direct answer

    def data_received(self, data: bytes) -> None:
        # uvicorn cancels the keep-alive timer on every read and arms a new one after every
        # answer; here a timer that is running is taken out of its sight and kept when the
        # read ends idle after direct answers, and it checks when it fires whether the
        # connection was idle for long enough (timeout_keep_alive_handler).
        timer, self.timeout_keep_alive_task = self.timeout_keep_alive_task, None
        self._answered = False
        super().data_received(data)
        if self._out:
            self._send()
        if self._answered and not self.pipeline and (self.cycle is None or
                                                     self.cycle.response_complete) \
                and not self.transport.is_closing():
            # As uvicorn does after each answer: close the connection if it stays idle.
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                if timer is None:
                    timer = self.loop.call_at(self._idle_since + self.timeout_keep_alive,
                                              self.timeout_keep_alive_handler)
                self.timeout_keep_alive_task, timer = timer, None
        if timer is not None:
            timer.cancel()

    def timeout_keep_alive_handler(self) -> None:
        due = self._idle_since + self.timeout_keep_alive
        if due > self.loop.time():  # answers were sent since the timer was armed
            self.timeout_keep_alive_task = self.loop.call_at(due, self.timeout_keep_alive_handler)
            return
        super().timeout_keep_alive_handler()

    def _send(self) -> None:
        out, self._out, self._out_bytes = self._out, [], 0
        if not self.transport.is_closing():
            self.transport.write_now(out[0] if len(out) == 1 else b"".join(out))

    def shutdown(self) -> None:
        if self._target is not None:  # a request answered here is still being read
            self._closing = True
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        if self._out:
            self._send()  # the answers to the requests before the bad one go first
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        if self._direct is None:
            super().on_message_begin()
            return
        # uvicorn's scope waits until the request turns out to be the app's (below).
        self.url = b""
        self.headers = []
        self.expect_100_continue = False
        self._target = None
        self._kind = None
        self._body = []

    def on_headers_complete(self) -> None:
        direct = self._direct
        if direct is not None:
            parser = self.parser
            method = parser.get_method()
            if (method == b"GET" or method == b"HEAD" or method == b"POST") \
                    and not self.expect_100_continue \
                    and (self.cycle is None or self.cycle.response_complete) \
                    and not self.pipeline and not self.flow.write_paused \
                    and parser.get_http_version() == "1.1" and parser.should_keep_alive() \
                    and not parser.should_upgrade():
                if method == b"POST":
                    batch = direct.batch_target(self.url, self.headers)
                    if batch is not None:
                        self._target, self._kind = (batch[0], batch[1]), batch[2]
                        return
                else:
                    self._target = direct.target(self.url, self.headers)
                    if self._target is not None:
                        self._head = method == b"HEAD"
                        return
            # The app's request: build uvicorn's scope as its on_message_begin does.
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.expect_100_continue = url, expect
            self.headers.extend(headers)
            if self._out:
                self._send()  # whatever uvicorn writes for this request comes after
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._target is None:
            super().on_body(body)
        elif self._kind is not None:  # (within kvio.serve.body.max: its Content-Length is)
            self._body.append(body)
        # (the body of a GET answered here is not read, as the app would not read it)

    def on_message_complete(self) -> None:
        target = self._target
        if target is None:
            super().on_message_complete()
            return
        self._target = None
        direct = self._direct
        assert direct is not None
        keep_alive = not self._closing
        if self._kind is None:
            answer = direct.answer(target[0], target[1], self._head,
                                   self.server_state.default_headers, keep_alive)
        else:
            parts, self._body = self._body, []
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            answer = direct.answer_batch(target[0], target[1], self._kind, body,
                                         self.server_state.default_headers, keep_alive)
        self._out.append(answer)
        self._out_bytes += len(answer)
        self.server_state.total_requests += 1
        self._answered = True
        if not keep_alive:
            # As uvicorn ends a request that was under way when the server began shutting
            # down: answered with "connection: close", then the connection is closed.
            self._send()
            self.transport.close()
        elif self._out_bytes > JOIN_MAX:
            # Many pipelined requests for big values: memory stays bounded, and once the
            # transport's buffer is full (pause_writing), the next requests go the app's way,
            # which waits for the client to read.
            self._send()


#: for ``uvicorn.Config(http=...)`` (a string, so worker processes import it themselves)
PROTOCOL = f"{__name__}:DirectHttpToolsProtocol"
