"""The Starlette app of ``kvio serve``: routes, authentication and metrics.

Endpoints (docs/SERVING.md is the reference):

* ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
* ``GET /v1/stores``, ``GET /v1/stores/{name}``
* ``GET /v1/stores/{name}/keys/{key}``: the value as raw bytes
* ``POST /v1/stores/{name}/get``: batch get, JSON or Arrow IPC
* ``GET /v1/stores/{name}/scan``: a key range as NDJSON or Arrow IPC, streamed

Every answer about a store carries ``Kvio-Version``, the version it was read from; one request
reads one version (see :mod:`.stores`).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pyarrow as pa
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import b64
from ..config import Config
from ..errors import KvioError
from ..reader import StoreReader
from . import codec
from .codec import ARROW_STREAM, JSON, NDJSON, PAIR_SCHEMA
from .errors import (
    ApiError,
    error_response,
    kvio_error_status,
    on_error,
    on_http_exception,
)
from .fast import FastPath
from .metrics import UNMATCHED, Metrics
from .options import ServeOptions, read_token
from .read_through import ReadThrough, load_loader
from .stores import ServedStore, StoreSet

log = logging.getLogger("kvio.serve")
VERSION_HEADER = "Kvio-Version"
#: on a value that came from a read-through loader, not from the store
SOURCE_HEADER = "Kvio-Source"
#: paths answered without the bearer token (probes of load balancers and orchestrators)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_SCAN_PARAMETERS = ("start", "stop", "prefix", "limit", "encoding")
_BATCH_MEMBERS = {"keys", "encoding"}
#: a JSON batch body as kvio.connect lays it out: these bytes around the list of keys
_JSON_HEAD, _JSON_TAIL = b'{"keys":', b',"encoding":"base64"}'


# ---- middleware -----------------------------------------------------------------------------
class MetricsMiddleware:
    """Counts every request by route template (never the raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", UNMATCHED), scope["method"], status,
                                 started)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body") \
                    and not observed:
                observe()  # before the last byte leaves: a client with its answer finds it counted
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if not observed:
                observe()


class TokenAuth:
    """Requires ``Authorization: Bearer <token>`` on every path but :data:`OPEN_PATHS`; the
    comparison takes the same time wherever the first difference is."""

    def __init__(self, app: ASGIApp, token: bytes):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    given = value
            scheme, _, credentials = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credentials.strip(),
                                                                      self.token):
                reason = "missing" if not given else "wrong"
                response = error_response(
                    401, "unauthorized", f"this server needs a bearer token ({reason} "
                    "Authorization header; send 'Authorization: Bearer <token>')",
                    {"WWW-Authenticate": 'Bearer realm="kvio"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SnapshotStream(StreamingResponse):
    """A streamed answer that releases its snapshot when it ends, however it ends (complete,
    failed, or the client went away)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kw: Any):
        super().__init__(content, **kw)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            finally:
                self._release()


# ---- helpers ----------------------------------------------------------------------------------
def batch_kind(content_type: str | None) -> str:
    """The media type of a batch body (:data:`.codec.JSON` or :data:`.codec.ARROW_STREAM`)
    from its Content-Type header.

    Raises:
        ApiError: 415 ``unsupported_media_type`` for anything else.
    """
    kind = codec.media_type(content_type)
    if kind not in (JSON, ARROW_STREAM):
        raise ApiError(415, "unsupported_media_type",
                       f"send the keys as {JSON} or {ARROW_STREAM}, not "
                       f"{kind or 'a body without Content-Type'}")
    return kind


def _accepts_arrow(request: Request) -> bool:
    return ARROW_STREAM in request.headers.get("accept", "").lower()


async def _read_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A request body (``declared``: its Content-Length header), refusing one over ``limit``
    bytes before reading more than that."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        parts.append(chunk)
    return b"".join(parts)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body ({size} bytes or more) is over "
                    f"the limit of {limit} bytes (kvio.serve.body.max); split the batch", limit=limit)


def _parse_limit(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.decode("ascii", "replace")
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, "bad_limit", f"limit must be a positive integer, got {text!r}",
                       parameter="limit")
    return int(text)


# ---- the app ----------------------------------------------------------------------------------
class Api:
    """The endpoints over one set of stores.

    Args:
        stores: the stores served.
        conf: settings (``kvio.serve.batch.max.keys``, ``kvio.serve.body.max``).
        metrics: where requests and keys are counted.
        read_through: the read-through loaders by store name.
    """

    def __init__(self, stores: StoreSet, conf: Config, metrics: Metrics,
                 read_through: dict[str, ReadThrough] | None = None):
        self.stores, self.conf, self.metrics = stores, conf, metrics
        self.read_through = read_through or {}
        for store in stores.stores.values():
            self._note_version(store)
            store.live.on_swap(self._swap_callback(store))

    def _note_version(self, store: ServedStore) -> None:
        live = store.live
        self.metrics.store_version(store.name, live.version, live.commit.seq, live.swaps)

    def _swap_callback(self, store: ServedStore) -> Callable[[str, str | None, BaseException | None], None]:
        """What the live store calls (from its follower thread) after each attempt to swap."""
        def swapped(old: str, new: str | None, error: BaseException | None) -> None:
            if error is None:
                self._note_version(store)
            else:
                self.metrics.swap_error(store.name)
        return swapped

    # ---- service endpoints ----
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid()})

    async def readyz(self, request: Request) -> Response:
        versions = {name: s.version for name, s in self.stores.stores.items()}
        ready = all(v is not None for v in versions.values())
        return JSONResponse({"ready": ready, "stores": versions}, status_code=200 if ready else 503)

    async def metrics_text(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    # ---- stores ----
    async def list_stores(self, request: Request) -> Response:
        return JSONResponse({"stores": [await s.describe() for s in self.stores.stores.values()]})

    async def store_info(self, request: Request) -> Response:
        info = await self.stores.get(request.path_params["name"]).describe()
        return JSONResponse(info, headers={VERSION_HEADER: info["version"]})

    async def get_key(self, request: Request) -> Response:
        store = self.stores.get(request.path_params["name"])
        raw_path = request.scope.get("raw_path")
        # Without the raw path (a server other than uvicorn), the decoded one is all there is.
        key = codec.key_from_path(raw_path) if raw_path is not None else \
            request.path_params["key"].encode("utf-8")
        value, headers = await self.lookup(store, key)
        return Response(value, media_type="application/octet-stream", headers=headers)

    async def lookup(self, store: ServedStore, key: bytes) -> tuple[bytes, dict[str, str]]:
        """The value of one key and the headers of its answer (``GET .../keys/{key}``).

        Raises:
            ApiError: 404 ``key_not_found`` (with ``Kvio-Version``), 503 ``load_failed``.
        """
        version, value = await store.call(lambda reader: reader.get(key))
        headers = {VERSION_HEADER: version}
        loader = self.read_through.get(store.name)
        if value is None and loader is not None:
            value = await loader.get(key)
            headers[SOURCE_HEADER] = "read-through"
        return self._found(store, key, version, value, headers)

    def lookup_inline(self, store: ServedStore, key: bytes) -> tuple[bytes, str]:
        """:meth:`lookup` without awaiting, for a store read on the event loop's thread
        (``store.inline``) that has no read-through loader (:mod:`.direct` checks both).

        Returns:
            The value and the version it was read from.

        Raises:
            ApiError: 404 ``key_not_found`` (with ``Kvio-Version``).
        """
        version, value = store.live.get_versioned(key)
        return self._found(store, key, version, value, {VERSION_HEADER: version})[0], version

    def _found(self, store: ServedStore, key: bytes, version: str, value: bytes | None,
               headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        """Count one key looked up; an absent one raises its 404."""
        if value is None:
            self.metrics.keys_served(store.name, 0, 1)
            raise ApiError(404, "key_not_found", f"key {codec.show(key)!r} is not in store "
                           f"{store.name!r} (version {version})", headers=headers,
                           store=store.name, key=codec.show(key), version=version)
        self.metrics.keys_served(store.name, 1, 0)
        return value, headers

    async def batch_get(self, request: Request) -> Response:
        body, media_type, headers = await self.batch(
            request.path_params["name"], request.headers.get("content-type"),
            request.headers.get("content-length"), request.stream())
        return Response(body, media_type=media_type, headers=headers)

    async def batch(self, name: str, content_type: str | None, content_length: str | None,
                    chunks: AsyncIterator[bytes]) -> tuple[bytes, str, dict[str, str]]:
        """A batch get (``POST .../get``): the body, media type and headers of its answer.

        Args:
            name: the store's name.
            content_type: the request's Content-Type header.
            content_length: its Content-Length header.
            chunks: the request body, piece by piece.

        Raises:
            ApiError: the 4xx of a bad request (docs/SERVING.md, "Errors").
        """
        store = self.stores.get(name)
        kind = batch_kind(content_type)
        body = await _read_body(content_length, chunks, self.conf.serve_body_max)
        loader = self.read_through.get(store.name)
        if loader is None and store.inline:
            return self.batch_inline(store, kind, body)
        keys, encoding, key_array, column = self._batch_keys(kind, body)
        if loader is None and (column is not None or encoding == codec.BASE64):
            version, array = await store.call(
                lambda reader: reader.get_many_array(keys, key_array))
            return self._array_answer(store, version, array, column)
        version, values = await store.call(lambda reader: reader.get_many(keys))
        if loader is not None:
            await self._load_missing(loader, keys, values)
        return self._list_answer(store, version, keys, values, encoding, column)

    def batch_inline(self, store: ServedStore, kind: str,
                     body: bytes) -> tuple[bytes, str, dict[str, str]]:
        """:meth:`batch` of a whole body, without awaiting, for a store read on the event
        loop's thread (``store.inline``) that has no read-through loader (the callers check
        both): the body, media type and headers of the answer.

        Args:
            store: the store.
            kind: the body's media type (from :func:`batch_kind`).
            body: the request body (at most ``kvio.serve.body.max`` bytes).

        Raises:
            ApiError: the 4xx of a bad request (docs/SERVING.md, "Errors").
        """
        keys, encoding, key_array, column = self._batch_keys(kind, body)
        with store.snapshot() as reader:
            version = reader.version
            if column is not None or encoding == codec.BASE64:
                array = reader.get_many_array(keys, key_array)
                return self._array_answer(store, version, array, column)
            values = reader.get_many(keys)
        return self._list_answer(store, version, keys, values, encoding, column)

    def _batch_keys(self, kind: str, body: bytes) -> tuple[list[bytes], str | None,
                                                           pa.Array | None, pa.Array | None]:
        """The keys of a batch body: (keys, JSON encoding or None for Arrow, the keys as a
        large_binary array if made, the Arrow key column as sent or None for JSON).

        Raises:
            ApiError: 400 for a body that does not parse, 413 ``too_many_keys``.
        """
        column: pa.Array | None = None
        encoding: str | None
        if kind == JSON:
            keys, encoding, key_array = self._json_keys(body)
        else:
            column, keys, key_array = codec.read_arrow_keys(body)
            encoding = None
        limit = self.conf.serve_batch_max_keys
        if len(keys) > limit:
            raise ApiError(413, "too_many_keys", f"{len(keys)} keys in one batch, the limit is "
                           f"{limit} (kvio.serve.batch.max.keys); split the batch", limit=limit)
        return keys, encoding, key_array, column

    def _array_answer(self, store: ServedStore, version: str, array: pa.Array,
                      column: pa.Array | None) -> tuple[bytes, str, dict[str, str]]:
        """Arrow or base64 out: the values stay an Arrow array from the map to the answer."""
        absent = array.null_count
        self.metrics.keys_served(store.name, len(array) - absent, absent)
        if column is None:
            return codec.batch_json_base64(version, array), JSON, {VERSION_HEADER: version}
        table = pa.Table.from_arrays([column, array], names=["key", "value"])
        return codec.arrow_table_bytes(table), ARROW_STREAM, {VERSION_HEADER: version}

    def _list_answer(self, store: ServedStore, version: str, keys: list[bytes],
                     values: list[bytes | None], encoding: str | None,
                     column: pa.Array | None) -> tuple[bytes, str, dict[str, str]]:
        found = len(values) - values.count(None)
        self.metrics.keys_served(store.name, found, len(values) - found)
        headers = {VERSION_HEADER: version}
        if column is None:
            assert encoding is not None
            encoded = codec.encode_values(keys, values, encoding, store.name)
            return codec.batch_json(version, encoded, encoding), JSON, headers
        table = pa.table({"key": column, "value": pa.array(values, type=pa.large_binary())})
        return codec.arrow_table_bytes(table), ARROW_STREAM, headers

    @staticmethod
    async def _load_missing(loader: ReadThrough, keys: list[bytes],
                            values: list[bytes | None]) -> None:
        """Fill the keys the store does not hold from the read-through loader (concurrently;
        one failure fails the batch with its 503)."""
        missing = [i for i, v in enumerate(values) if v is None]
        loaded = await asyncio.gather(*(loader.get(keys[i]) for i in missing))
        for i, value in zip(missing, loaded, strict=True):
            values[i] = value

    @staticmethod
    def _json_keys(body: bytes) -> tuple[list[bytes], str, pa.Array | None]:
        """The keys of a JSON batch, its encoding, and the keys as a ``large_binary`` array
        when base64 keys were decoded all at once (:mod:`kvio.b64`)."""
        if body.startswith(_JSON_HEAD) and body.endswith(_JSON_TAIL):
            # kvio.connect's layout, {"keys":[...],"encoding":"base64"}: decoded from the text
            # when the keys are of one length (otherwise parsed below, to the same keys).
            array = b64.decode_json_list(body, len(_JSON_HEAD), len(body) - len(_JSON_TAIL))
            if array is not None:
                return array.to_pylist(), codec.BASE64, array
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or "keys" not in doc:
            raise ApiError(400, "bad_json", 'the body must be a JSON object {"keys": [...], '
                           '"encoding": "utf-8" | "base64"}')
        unknown = sorted(set(doc) - _BATCH_MEMBERS)
        if unknown:
            raise ApiError(400, "bad_json", f"unknown member(s) {', '.join(map(repr, unknown))} "
                           "(the body takes keys and encoding)")
        encoding = codec.parse_encoding(doc.get("encoding", codec.UTF8), '"encoding"')
        keys = doc["keys"]
        if encoding == codec.BASE64 and type(keys) is list:
            array = b64.decode(keys)
            if array is not None and array.null_count == 0:
                return array.to_pylist(), encoding, array
        # One by one: text keys, or base64 keys of several lengths, or a wrong one (named).
        return codec.decode_json_keys(keys, encoding), encoding, None

    async def scan(self, request: Request) -> Response:
        store = self.stores.get(request.path_params["name"])
        params = codec.parse_query(request.scope.get("query_string", b""), _SCAN_PARAMETERS)
        limit = _parse_limit(params.get("limit"))
        encoding = codec.parse_encoding(params.get("encoding", codec.UTF8.encode()), "encoding")
        arrow = _accepts_arrow(request)
        bounds = (params.get("start"), params.get("stop"), params.get("prefix"))
        stack = contextlib.ExitStack()
        reader = stack.enter_context(store.snapshot())
        try:
            body = self._scan_body(store, reader, bounds, limit, encoding, arrow)
            return _SnapshotStream(body, stack.close, media_type=ARROW_STREAM if arrow else NDJSON,
                                   headers={VERSION_HEADER: reader.version})
        except BaseException:
            stack.close()
            raise

    async def _scan_body(self, store: ServedStore, reader: StoreReader,
                         bounds: tuple[bytes | None, ...], limit: int | None, encoding: str,
                         arrow: bool) -> AsyncIterator[bytes]:
        encoder = codec.ArrowStreamEncoder(PAIR_SCHEMA) if arrow else None
        batches = reader.batches(*bounds)  # a generator: closed below, however the stream ends
        remaining = limit
        try:
            async for batch in store.stream(reader, batches):
                if remaining is not None:
                    batch = batch.slice(0, remaining)
                    remaining -= batch.num_rows
                if batch.num_rows:
                    self.metrics.keys_served(store.name, batch.num_rows, 0)
                    if encoder is not None:
                        yield encoder.write(batch)
                    else:
                        yield codec.ndjson_lines(batch.column(0).to_pylist(),
                                                 batch.column(1).to_pylist(), encoding)
                if remaining == 0:
                    break
            if encoder is not None:
                yield encoder.take() + encoder.close()
        except KvioError as exc:
            # The status line is gone already: end NDJSON with an error object, then break the
            # chunked stream so no client takes the answer for complete.
            log.error("scan of store %s failed: %s", store.name, exc)
            if encoder is None:
                status, code = kvio_error_status(exc)
                yield (json.dumps({"error": {"status": status, "code": code,
                                             "message": str(exc)}}) + "\n").encode()
            raise
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                await store.run(close)


def create_app(stores: StoreSet, conf: Config, metrics: Metrics,
               token: bytes | None = None,
               read_through: dict[str, ReadThrough] | None = None) -> ASGIApp:
    """The ASGI app over opened stores; it closes them when it shuts down: single and batch
    gets answered by :class:`.fast.FastPath`, everything else by a Starlette app.

    Args:
        stores: the stores to serve.
        conf: settings.
        metrics: the metrics to count into.
        token: the bearer token every request but the probes must carry; None for none.
        read_through: the read-through loaders by store name.

    Returns:
        The app.
    """
    api = Api(stores, conf, metrics, read_through)
    prefix = "/v1/stores"
    routes = [
        Route("/healthz", api.healthz),
        Route("/readyz", api.readyz),
        Route("/metrics", api.metrics_text),
        Route(prefix, api.list_stores),
        Route(prefix + "/{name}", api.store_info),
        Route(prefix + "/{name}/keys/{key:path}", api.get_key),
        Route(prefix + "/{name}/get", api.batch_get, methods=["POST"]),
        Route(prefix + "/{name}/scan", api.scan),
    ]
    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    if token is not None:
        middleware.append(Middleware(TokenAuth, token=token))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # What exists now (modules, the opened stores) lives as long as the server: moved out
        # of the collector's sight, a full collection no longer walks it (measured: p99 of
        # single gets at concurrency 16 from about 2.2 to 1.5 ms).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            stores.close()

    handlers: dict[Any, Any] = {ApiError: on_error, HTTPException: on_http_exception,
                                KvioError: on_error, Exception: on_error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers,
                    lifespan=lifespan)
    return FastPath(app, api, metrics, token)


def build_app(options: ServeOptions, stores: StoreSet | None = None) -> ASGIApp:
    """The app for ``options``, opening the stores unless given.

    Raises:
        KvioError: a store cannot be opened, or the token file is unusable.
    """
    conf = Config(options.conf)
    token = read_token(options.token_file) if options.token_file else None
    if options.multiprocess_dir is not None and \
            os.environ.get("PROMETHEUS_MULTIPROC_DIR") != options.multiprocess_dir:
        raise KvioError("PROMETHEUS_MULTIPROC_DIR must name the metrics directory of the workers "
                        f"({options.multiprocess_dir}) before the worker starts")
    metrics = Metrics(options.multiprocess_dir)
    read_through = {name: ReadThrough(name, load_loader(spec), conf.serve_read_through_ttl)
                    for name, spec in options.read_through}
    return create_app(stores or StoreSet.open(options), conf, metrics, token, read_through)


def app_from_environment() -> ASGIApp:
    """The app factory of worker processes (``--workers N``): the options come from the
    environment variable the parent ``kvio serve`` set (:data:`kvio.serve.options.ENV`)."""
    return build_app(ServeOptions.from_env())
