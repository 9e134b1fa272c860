"""Errors as HTTP answers: every failure is a JSON body ``{"error": {"status", "code",
"message", ...}}`` with a 4xx status for what the client sent and a 5xx status only for what
went wrong in the server (a damaged store file, a bug)."""
from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import CorruptStoreError, InvalidArgumentError, KvioError, ReaderClosedError, StoreNotFoundError

log = logging.getLogger("kvio.serve")

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "content_too_large",
               415: "unsupported_media_type"}


class ApiError(Exception):
    """A request the server answers with an error.

    Args:
        status: the HTTP status.
        code: a stable, machine-readable name of the problem (``key_not_found``, ...).
        message: what is wrong, naming the store, key or parameter involved.
        headers: extra response headers (``Kvio-Version``, ``WWW-Authenticate``).
        fields: extra members of the error object (``store``, ``key``, ...).
    """

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None, **fields: Any):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.fields = fields


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **fields: Any) -> JSONResponse:
    """The JSON answer of an error."""
    body = {"error": {"status": status, "code": code, "message": message, **fields}}
    return JSONResponse(body, status_code=status, headers=headers)


def exception_response(exc: Exception, method: str, path: str) -> JSONResponse:
    """The JSON answer of an exception raised while answering ``method path``: an
    :class:`ApiError` as it says, a kvio error by :func:`kvio_error_status` (a 5xx one is
    logged), anything else a 500 ``internal_error`` (a bug; its caller logs the traceback).
    The app's exception handlers and its fast path (:mod:`.fast`) both answer with it."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.fields)
    if isinstance(exc, KvioError):
        status, code = kvio_error_status(exc)
        if status >= 500:
            log.error("%s %s: %s", method, path, exc)
        return error_response(status, code, str(exc))
    return error_response(500, "internal_error",
                          f"internal error ({type(exc).__name__}); see the server log")


async def on_error(request: Request, exc: Exception) -> Response:
    """Starlette's handler of ApiError, kvio errors and unexpected exceptions (Starlette logs
    the traceback of an unexpected one)."""
    return exception_response(exc, request.method, request.url.path)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route: 404, wrong method: 405) as JSON."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if exc.status_code != 404 else \
        f"no such endpoint: {request.method} {request.url.path} (see docs/SERVING.md)"
    return error_response(exc.status_code, code, str(message), dict(exc.headers or {}))


def kvio_error_status(exc: KvioError) -> tuple[int, str]:
    """The status and code of a kvio error raised while answering."""
    if isinstance(exc, InvalidArgumentError):
        return 400, "invalid_argument"
    if isinstance(exc, ReaderClosedError):
        return 503, "store_closed"  # a store is being closed (shutdown): ask again elsewhere
    if isinstance(exc, StoreNotFoundError):
        return 503, "store_unavailable"
    if isinstance(exc, CorruptStoreError):
        return 500, "corrupt_store"
    return 500, "store_error"
