"""Single and batch gets answered inside the HTTP protocol, with no ASGI scope, cycle or task.

Even through :class:`.fast.FastPath`, a get under uvicorn costs a scope dict, a
``RequestResponseCycle``, an ``asyncio.Event``, a task, a ``receive`` per piece of the body
and two ``send`` messages checked header by header: tens of microseconds around a lookup of a
few, and a burst of requests arriving together waits for all of that in turn (the tail
latency). :class:`DirectGets` answers ``GET``/``HEAD /v1/stores/{name}/keys/{key}`` and
``POST /v1/stores/{name}/get`` (JSON or Arrow body) as one block of bytes, called
synchronously by :class:`.protocol.DirectHttpToolsProtocol` when the request is complete. It
takes only requests it answers exactly as the ASGI app would (same headers, JSON errors,
metrics): stores read on the event loop's thread without a read-through loader, names without
escapes, the right bearer token; batch bodies of a declared length within
``kvio.serve.body.max`` and of a media type the endpoint takes. :meth:`DirectGets.target` and
:meth:`DirectGets.batch_target` say None to everything else (a chunked body, a wrong
Content-Type, a body over the limit, ...), which the ASGI app then answers.
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
#: the metrics' route label of batch gets: the Starlette route template of the same endpoint
GET_ROUTE = "/v1/stores/{name}/get"
_PREFIX = b"/v1/stores/"
_OCTETS = b"content-type: application/octet-stream\r\n"
_CLOSE = b"connection: close\r\n"


class DirectGets:
    """Single and batch gets as bytes on the wire (see the module).

    Args:
        api: the endpoints (its stores, read-through loaders, settings and metrics).
        metrics: where requests are counted.
        token: the bearer token requests must carry; None for none.
    """

    def __init__(self, api: Api, metrics: Metrics, token: bytes | None):
        self.api, self.metrics, self.token = api, metrics, token
        self.body_max = api.conf.serve_body_max
        # Only names that stand for themselves in a URL (ASCII, no escapes) are matched raw.
        self.stores: dict[bytes, ServedStore] = {
            name.encode("ascii"): store for name, store in api.stores.stores.items()
            if store.inline and name not in api.read_through and name.isascii()
            and "%" not in name and "/" not in name and name}

    def _route(self, url: bytes, headers: list[tuple[bytes, bytes]]
               ) -> tuple[ServedStore, bytes, bytes] | None:
        """(store, raw path without the query, the path after the store's name) of a
        request to a store answered here, with the right token; None otherwise."""
        if not url.startswith(_PREFIX) or b"#" in url:
            return None
        path = url.partition(b"?")[0]
        name, sep, rest = path[len(_PREFIX):].partition(b"/")
        if not sep:
            return None
        store = self.stores.get(name)
        if store is None or (self.token is not None and not self._authorized(headers)):
            return None  # the app answers (unknown store: 404, wrong token: 401, ...)
        return store, path, rest

    def target(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[ServedStore,
                                                                              bytes] | None:
        """The store and raw path of a single get (``GET``/``HEAD``) answered here, or None
        for the ASGI app.

        Args:
            url: the request target as received (origin form: path and query).
            headers: its headers (lower-case names).

        Returns:
            (store, raw path without the query) or None.
        """
        route = self._route(url, headers)
        if route is None or not route[2].startswith(b"keys/"):
            return None
        return route[0], route[1]

    def batch_target(self, url: bytes, headers: list[tuple[bytes, bytes]]
                     ) -> tuple[ServedStore, bytes, str] | None:
        """The store, raw path and body media type of a batch get (``POST``) answered here,
        or None for the ASGI app: its body must have a Content-Length (not chunked) within
        ``kvio.serve.body.max`` and be JSON or Arrow (the app answers 413 and 415 before
        reading a body, and reads a chunked one piece by piece).

        Args:
            url: the request target as received.
            headers: its headers (lower-case names).

        Returns:
            (store, raw path without the query, :data:`.codec.JSON` or
            :data:`.codec.ARROW_STREAM`) or None.
        """
        route = self._route(url, headers)
        if route is None or route[2] != b"get":
            return None
        content_type = content_length = None
        for header, value in headers:  # (the last one counts, as in FastPath)
            if header == b"content-type":
                content_type = value
            elif header == b"content-length":
                content_length = value
            elif header == b"transfer-encoding":
                return None
        kind = codec.media_type(None if content_type is None else content_type.decode("latin-1"))
        if kind != codec.JSON and kind != codec.ARROW_STREAM:
            return None
        if content_length is not None and (not content_length.isdigit()
                                           or int(content_length) > self.body_max):
            return None
        return route[0], route[1], kind

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
               default_headers: list[tuple[bytes, bytes]], keep_alive: bool = True) -> bytes:
        """The whole answer (status line, headers, body) to a single get; the request is
        counted in the metrics before this returns, so before any byte of it is sent.

        Args:
            store: the store (from :meth:`target`).
            raw_path: the raw request path (from :meth:`target`).
            head: a HEAD request (the body is left out, its Content-Length kept).
            default_headers: the server's headers of every answer (``date``).
            keep_alive: False to say ``connection: close`` (the server is shutting down).

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
            status, body = _error(exc, method, raw_path, parts)
        else:
            status = 200
            parts += (b"kvio-version: ", version.encode("latin-1"),
                      b"\r\ncontent-length: %d\r\n" % len(value), _OCTETS)
            body = value
        if not keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        if not head:
            parts.append(body)
        self.metrics.observe(KEYS_ROUTE, method, status, started)
        return b"".join(parts)

    def answer_batch(self, store: ServedStore, raw_path: bytes, kind: str, body: bytes,
                     default_headers: list[tuple[bytes, bytes]],
                     keep_alive: bool = True) -> bytes:
        """The whole answer to a batch get (:meth:`.app.Api.batch_inline`); the request is
        counted in the metrics before this returns, so before any byte of it is sent.

        Args:
            store: the store (from :meth:`batch_target`).
            raw_path: the raw request path (from :meth:`batch_target`).
            kind: the body's media type (from :meth:`batch_target`).
            body: the whole request body.
            default_headers: the server's headers of every answer (``date``).
            keep_alive: False to say ``connection: close`` (the server is shutting down).

        Returns:
            The bytes to send.
        """
        started = time.perf_counter()
        parts: list[bytes | memoryview] = [STATUS_LINE[200]]
        for name, value in default_headers:
            parts += (name, b": ", value, b"\r\n")
        content: bytes | memoryview
        try:
            content, media, headers = self.api.batch_inline(store, kind, body)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            status, content = _error(exc, "POST", raw_path, parts)
        else:
            status = 200
            for header, text in headers.items():
                parts += (header.lower().encode("latin-1"), b": ", text.encode("latin-1"),
                          b"\r\n")
            parts += (b"content-length: %d\r\ncontent-type: " % len(content),
                      media.encode("latin-1"), b"\r\n")
        if not keep_alive:
            parts.append(_CLOSE)
        parts += (b"\r\n", content)
        self.metrics.observe(GET_ROUTE, "POST", status, started)
        return b"".join(parts)


def _error(exc: Exception, method: str, raw_path: bytes,
           parts: list[bytes | memoryview]) -> tuple[int, bytes | memoryview]:
    """The JSON answer of a failure: its status line replaces ``parts[0]``, its headers are
    appended to ``parts``; returns the status and the body."""
    path = raw_path.decode("latin-1")
    if not isinstance(exc, (ApiError, KvioError)):
        log.error("%s %s failed", method, path, exc_info=exc)
    response = exception_response(exc, method, path)
    parts[0] = STATUS_LINE[response.status_code]
    for name, value in response.raw_headers:
        parts += (name, b": ", value, b"\r\n")
    return response.status_code, response.body
