"""The hot routes without Starlette: single gets and batch gets as a plain ASGI app.

``GET``/``HEAD /v1/stores/{name}/keys/{key}`` and ``POST /v1/stores/{name}/get`` are most of a
lookup server's traffic. Going through Starlette costs each of them its middleware stack
(metrics, exceptions, errors), a route search over regular expressions, Request and Response
objects and a send wrapper per layer: several times the microseconds of the lookup itself.
:class:`FastPath` sits in front of the Starlette app and answers these two routes itself, with
the same handlers (:meth:`.app.Api.lookup`, :meth:`.app.Api.batch`), the same JSON errors,
bearer token check and metrics (route label = the route template), and hands every other
request (other paths or methods, a missing or wrong token, lifespan events) to Starlette
unchanged, so those answers are exactly Starlette's.
"""
from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import KvioError
from . import codec
from .direct import GET_ROUTE, KEYS_ROUTE, DirectGets
from .errors import ApiError, exception_response
from .metrics import Metrics

if TYPE_CHECKING:
    from .app import Api

log = logging.getLogger("kvio.serve")
PREFIX = "/v1/stores/"
_OCTETS = b"application/octet-stream"


class FastPath:
    """Answers single and batch gets; passes everything else to ``app``.

    Args:
        app: the Starlette app (every other route, errors of its own, lifespan).
        api: the endpoints.
        metrics: where requests are counted.
        token: the bearer token requests must carry; None for none. A request without the
            right one goes to ``app``, whose middleware answers 401 as for any path.
    """

    def __init__(self, app: ASGIApp, api: Api, metrics: Metrics, token: bytes | None = None):
        self.app, self.api, self.metrics, self.token = app, api, metrics, token
        #: single gets answered inside the HTTP protocol (:mod:`.protocol`), when it finds us
        self.direct = DirectGets(api, metrics, token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                name, sep, rest = path[len(PREFIX):].partition("/")
                method = scope["method"]
                if sep and name and (self.token is None or self._authorized(scope)):
                    if rest.startswith("keys/") and method in ("GET", "HEAD"):
                        await self._answer(KEYS_ROUTE, name, scope, receive, send)
                        return
                    if rest == "get" and method == "POST":
                        await self._answer(GET_ROUTE, name, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        """As :class:`.app.TokenAuth` checks (in constant time)."""
        assert self.token is not None
        given = b""
        for header, value in scope["headers"]:
            if header == b"authorization":
                given = value
        scheme, _, credentials = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(),
                                                                   self.token)

    async def _answer(self, route: str, name: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        started = time.perf_counter()
        status = 500
        observed = False
        try:
            try:
                if route is KEYS_ROUTE:
                    store = self.api.stores.get(name)
                    raw_path = scope.get("raw_path")
                    key = codec.key_from_path(raw_path) if raw_path is not None else \
                        scope["path"].split("/", 5)[5].encode("utf-8")
                    body, headers = await self.api.lookup(store, key)
                    media_type = _OCTETS
                else:
                    content_type = content_length = None
                    for header, value in scope["headers"]:
                        if header == b"content-type":
                            content_type = value.decode("latin-1")
                        elif header == b"content-length":
                            content_length = value.decode("latin-1")
                    body, media, headers = await self.api.batch(
                        name, content_type, content_length, _body(receive))
                    media_type = media.encode("latin-1")
            except ClientDisconnect:
                return  # nobody to answer (uvicorn knows the client went away)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
                if not isinstance(exc, (ApiError, KvioError)):
                    log.error("%s %s failed", scope["method"], scope["path"], exc_info=exc)
                response = exception_response(exc, scope["method"], scope["path"])
                status = response.status_code
                await response(scope, receive, send)
                return
            raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                           for k, v in headers.items()]
            raw_headers.append((b"content-length", b"%d" % len(body)))
            raw_headers.append((b"content-type", media_type))
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            # Counted before the answer leaves: a client that has its answer finds it counted
            # when it scrapes /metrics next (from whichever worker answers that).
            self.metrics.observe(route, scope["method"], status, started)
            observed = True
            await send({"type": "http.response.body", "body": body})
        finally:
            if not observed:
                self.metrics.observe(route, scope["method"], status, started)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body, piece by piece, as Starlette's ``Request.stream``."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()

