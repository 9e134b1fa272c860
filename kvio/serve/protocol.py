"""uvicorn's httptools protocol with each response's head and body sent in one write.

uvicorn writes the status line and headers of a response (``http.response.start``) and its body
(``http.response.body``) with two ``transport.write`` calls, so a small answer costs two
``send`` system calls and reaches the client as two TCP segments, waking it twice. Here the
connection's transport is wrapped in :class:`CoalescingTransport`, which holds a small write
back until the next write (joined with it into one) or the end of the event loop's current
pass, whichever comes first. A lookup answer (head, then its body in the same pass) then leaves
in one system call. Memory stays bounded: at most one small write is ever held, and writes
that are not small go out at once (after the held one), so streamed scans keep uvicorn's flow
control.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: writes up to this size may be held back to be joined with the next one
HOLD_MAX = 16 << 10
#: a held write is joined with a next write up to this size (larger ones are sent after it)
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
            if len(data) <= JOIN_MAX:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)  # (copying a large body costs more than a send)
            self._transport.write(data)
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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)


#: for ``uvicorn.Config(http=...)`` (a string, so worker processes import it themselves)
PROTOCOL = f"{__name__}:CoalescingHttpToolsProtocol"
