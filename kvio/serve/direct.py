"""Single gets answered inside the HTTP protocol, with no ASGI scope, cycle or task.

Even through :class:`.fast.FastPath`, a single get under uvicorn costs a scope dict, a
``RequestResponseCycle``, an ``asyncio.Event``, a task and two ``send`` messages checked header
by header: tens of microseconds around a lookup of a few, and a burst of requests arriving
together waits for all of that in turn (the tail latency). :class:`DirectGets` answers
``GET``/``HEAD /v1/stores/{name}/keys/{key}`` as one block of bytes, called synchronously by
:class:`.protocol.DirectHttpToolsProtocol` when the request is complete. It takes only requests
it answers exactly as the ASGI app would (same headers, JSON errors, metrics): stores read on
the event loop's thread without a read-through loader, names without escapes, the right bearer
token; :meth:`DirectGets.target` says None to everything else, which the ASGI app then answers.
"""
from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..errors import KvioError
from . import codec
from .errors import ApiError, exception_response

if TYPE_CHECKING:
    from .app import Api
    from .metrics import Metrics
    from .stores import ServedStore

log = logging.getLogger("kvio.serve")
#: the metrics' route label of single gets: the Starlette route template
KEYS_ROUTE = "/v1/stores/{name}/keys/{key:path}"
_PREFIX = b"/v1/stores/"
_OK_TAIL = b"\r\ncontent-type: application/octet-stream\r\n\r\n"


class DirectGets:
    """Single gets as bytes on the wire (see the module).

    Args:
        api: the endpoints (its stores, read-through loaders and metrics).
        metrics: where requests are counted.
        token: the bearer token requests must carry; None for none.
    """

    def __init__(self, api: Api, metrics: Metrics, token: bytes | None):
        self.api, self.metrics, self.token = api, metrics, token
        # Only names that stand for themselves in a URL (ASCII, no escapes) are matched raw.
        self.stores: dict[bytes, ServedStore] = {
            name.encode("ascii"): store for name, store in api.stores.stores.items()
            if store.inline and name not in api.read_through and name.isascii()
            and "%" not in name and "/" not in name and name}

    def target(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[ServedStore,
                                                                              bytes] | None:
        """The store and raw path of a request answered here, or None for the ASGI app.

        Args:
            url: the request target as received (origin form: path and query).
            headers: its headers (lower-case names).

        Returns:
            (store, raw path without the query) or None.
        """
        if not url.startswith(_PREFIX) or b"#" in url:
            return None
        path = url.partition(b"?")[0]
        name, sep, rest = path[len(_PREFIX):].partition(b"/")
        if not sep or not rest.startswith(b"keys/"):
            return None
        store = self.stores.get(name)
        if store is None or (self.token is not None and not self._authorized(headers)):
            return None  # the app answers (unknown store: 404, wrong token: 401, ...)
        return store, path

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """As :class:`.app.TokenAuth` checks (in constant time)."""
        assert self.token is not None
        given = b""
        for header, value in headers:
            if header == b"authorization":
                given = value
        scheme, _, credentials = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(),
                                                                   self.token)

    def answer(self, store: ServedStore, raw_path: bytes, head: bool,
               default_headers: list[tuple[bytes, bytes]]) -> bytes:
        """The whole answer (status line, headers, body) to a single get; the request is
        counted in the metrics before this returns, so before any byte of it is sent.

        Args:
            store: the store (from :meth:`target`).
            raw_path: the raw request path (from :meth:`target`).
            head: a HEAD request (the body is left out, its Content-Length kept).
            default_headers: the server's headers of every answer (``date``).

        Returns:
            The bytes to send.
        """
        started = time.perf_counter()
        method = "HEAD" if head else "GET"
        parts: list[bytes | memoryview] = [STATUS_LINE[200]]
        for name, value in default_headers:
            parts += (name, b": ", value, b"\r\n")
        try:
            value, version = self.api.lookup_inline(store, codec.key_from_path(raw_path))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            if not isinstance(exc, (ApiError, KvioError)):
                log.error("%s %s failed", method, raw_path.decode("latin-1"), exc_info=exc)
            response = exception_response(exc, method, raw_path.decode("latin-1"))
            status = response.status_code
            parts[0] = STATUS_LINE[status]
            for name, value in response.raw_headers:
                parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            body: bytes | memoryview = response.body
        else:
            status = 200
            parts += (b"kvio-version: ", version.encode("latin-1"),
                      b"\r\ncontent-length: %d" % len(value), _OK_TAIL)
            body = value
        if not head:
            parts.append(body)
        self.metrics.observe(KEYS_ROUTE, method, status, started)
        return b"".join(parts)
