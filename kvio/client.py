"""The Python client of ``kvio serve``: a remote store as a read-only Mapping.

``kvio.connect("http://host:8470", "users")`` has the read API of an in-process reader (get,
``[]``, ``in``, get_many, items/keys/values with start/stop/prefix, len, version, info, close),
so code moves between in-process and remote stores unchanged. Only the standard library is
used: one keep-alive connection per thread (:mod:`kvio.http1`: a get is one ``sendall`` and a
few ``recv`` calls on it), a fresh ``http.client`` connection per scan (a scan streams while
other calls go on).

With ``cache_bytes`` the client keeps a near cache (:mod:`kvio.near_cache`) keyed by
``(store, version, key)``. The version comes from the ``Kvio-Version`` header of the server's
answers. A cached answer is used only while the version it was filed under was confirmed by the
server less than ``kvio.follow.interval`` ago; after that the next lookup goes to the server,
whose answer names the version it serves now. So a remote reader sees a new publish within about
two intervals (the server's follow plus this one), like an in-process live store.
"""
from __future__ import annotations

import binascii
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_from_bytes, urlsplit

import pyarrow as pa

from . import b64, http1
from .config import Config
from .errors import (
    CorruptStoreError,
    InvalidArgumentError,
    KvioError,
    ReaderClosedError,
    StoreNotFoundError,
)
from .mapping import GetMapping
from .near_cache import MISS, CacheStats, NearCache
from .reader import _key

try:  # a C extension, optional: parses a 1,000-value answer in 59 µs instead of 121 (measured)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the installation
    _loads = json.loads  # type: ignore[assignment]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
VERSION_HEADER = "Kvio-Version"
_VERSION_KEY = VERSION_HEADER.lower()
_MISSING: Any = object()


def _pct(key: bytes) -> str:
    return quote_from_bytes(key, safe="")


class _NoDelay:
    """Nagle's algorithm off once connected (for http.client connections)."""

    sock: socket.socket

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ScanConnection(_NoDelay, http.client.HTTPConnection):
    """http.client for streamed scans, with Nagle's algorithm off."""


class _SecureScanConnection(_NoDelay, http.client.HTTPSConnection):
    """The same over TLS."""


def _json_values(body: bytes) -> list[bytes | None]:
    """The values of a JSON batch answer (base64, null = absent). The server lays out
    ``{"version":...,"values":[...]}`` in one way; when the values are of one length and all
    present they are decoded straight from the text (:func:`kvio.b64.decode_json_list`, no
    Python object per item until the list of bytes), otherwise the JSON is parsed as usual."""
    mark = body.find(b',"values":[')
    if mark > 0 and body.endswith(b"]}"):
        try:  # the text before the list must be exactly the object's version member
            head = _loads(body[:mark] + b"}")
        except ValueError:
            head = None
        if type(head) is dict and len(head) == 1 and type(head.get("version")) is str:
            array = b64.decode_json_list(body, mark + 10, len(body) - 1)
            if array is not None:
                values: list[bytes | None] = array.to_pylist()
                return values
    listed = _loads(body)["values"]
    array = b64.decode(listed)
    if array is not None:
        return array.to_pylist()
    a2b = binascii.a2b_base64  # values of several lengths
    return [None if v is None else a2b(v) for v in listed]


class RemoteStore(GetMapping):
    """A store served by ``kvio serve``, read over HTTP (see :func:`connect`)."""

    def __init__(self, url: str, name: str, *, token: str | None = None, cache_bytes: int = 0,
                 timeout: float = 30.0, batch_format: str = "arrow",
                 conf: Mapping[str, Any] | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentError(f"expected an http:// or https:// server URL, got {url!r}")
        if batch_format not in ("arrow", "json"):
            raise InvalidArgumentError(f"batch_format must be 'arrow' or 'json', got "
                                       f"{batch_format!r}")
        self.url = url.rstrip("/")
        self.name = name
        self.uri = f"{self.url}/v1/stores/{quote(name, safe='')}"
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/") + f"/v1/stores/{quote(name, safe='')}"
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._batch_format = batch_format
        self.interval = Config(conf).follow_interval
        self._cache = NearCache(cache_bytes) if cache_bytes else None
        self._local = threading.local()
        self._connections: list[http1.Connection] = []
        self._lock = threading.Lock()
        self._version: str | None = None
        self._confirmed = float("-inf")  # monotonic time the server last named self._version
        self.closed = False
        try:
            self.describe()  # fail now, not at the first get, on a wrong URL, name or token
        except BaseException:
            self.close()
            raise

    # ---- HTTP -------------------------------------------------------------------------------
    def _new_connection(self) -> http.client.HTTPConnection:
        """A connection of its own for one scan (a streamed answer)."""
        cls = _SecureScanConnection if self._https else _ScanConnection
        return cls(self._host, self._port, timeout=self._timeout)

    def _connection(self) -> http1.Connection:
        if self.closed:
            raise ReaderClosedError("the remote store was closed", store=self.uri)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http1.Connection(self._host, self._port, self._https,
                                                       self._timeout)
            with self._lock:
                self._connections.append(conn)
        return conn

    def _unreachable(self, exc: BaseException) -> KvioError:
        return KvioError(f"cannot talk to the kvio server at {self.url}: "
                         f"{type(exc).__name__}: {exc}", store=self.uri)

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's keep-alive connection: (status, headers with lower-case
        names, body). A connection the server closed meanwhile is reopened and the request sent
        once more (every request here only reads)."""
        all_headers = {**self._headers, **(headers or {})}
        for attempt in (0, 1):
            conn = self._connection()
            try:
                return conn.request(method, path, all_headers, body)
            except http1.StaleConnection as exc:
                conn.close()  # reconnects on the next request
                if attempt:
                    raise self._unreachable(exc) from None
            except (OSError, http1.ProtocolError) as exc:
                conn.close()
                raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    def _error(self, status: int, body: bytes, key: bytes | None = None) -> KvioError:
        """The kvio error for a server's error answer."""
        try:
            error = json.loads(body)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "", body[:200].decode("utf-8", "replace")
        text = f"the server answered {status} {code}: {message}".replace(" : ", ": ")
        if code == "unknown_store":
            return StoreNotFoundError(text, store=self.uri)
        if code == "corrupt_store":
            return CorruptStoreError(text, store=self.uri, key=key)
        if 400 <= status < 500:
            return InvalidArgumentError(text, store=self.uri, key=key)
        return KvioError(text, store=self.uri, key=key)

    def _seen(self, version: str | None) -> None:
        """Note the version an answer came from: it is the server's current one."""
        if version is not None:
            self._version = version
            self._confirmed = time.monotonic()

    def _fresh_version(self) -> str | None:
        """The version cached answers may come from now; None when it needs confirming."""
        if time.monotonic() - self._confirmed < self.interval:
            return self._version
        return None

    # ---- description --------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The server's description of the store (``GET /v1/stores/{name}``).

        Returns:
            name, uri, version, commit_seq, pairs, partitions, bytes, ... (docs/SERVING.md).

        Raises:
            StoreNotFoundError: the server serves no such store.
            KvioError: the server cannot be reached or failed.
        """
        status, _, body = self._request("GET", self._base)
        if status != 200:
            raise self._error(status, body)
        info: dict[str, Any] = json.loads(body)
        self._seen(info.get("version"))
        return info

    def info(self) -> dict[str, Any]:
        """The server's description of the store, with ``cache`` (near-cache counters) when the
        client has a near cache (see :meth:`describe`)."""
        info = self.describe()
        if self._cache is not None:
            info["cache"] = self._cache.stats().as_dict()
        return info

    @property
    def version(self) -> str:
        """The version the server serves (asked again at most every ``kvio.follow.interval``)."""
        version = self._fresh_version()
        if version is None:
            version = str(self.describe()["version"])
        return version

    def __len__(self) -> int:
        pairs = self.describe().get("pairs")
        if pairs is None:
            raise KvioError("the server could not count the pairs of this version",
                            store=self.uri)
        return int(pairs)

    def cache_stats(self) -> CacheStats:
        """Hits, misses, evictions, bytes and entries of the near cache (all 0 without one)."""
        if self._cache is None:
            return CacheStats(0, 0, 0, 0, 0, 0)
        return self._cache.stats()

    # ---- point lookups ------------------------------------------------------------------------
    def _fetch(self, key: bytes) -> Any:
        """The value of ``key`` from the server (None if absent), filed in the near cache."""
        status, headers, body = self._request("GET", f"{self._base}/keys/{_pct(key)}")
        version = headers.get(_VERSION_KEY)
        if status == 200:
            value: bytes | None = body
        elif status == 404 and version is not None:  # key_not_found (carries the version)
            value = None
        else:
            raise self._error(status, body, key)
        self._seen(version)
        if self._cache is not None and version is not None:
            self._cache.put(self.name, version, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent.

        Raises:
            InvalidArgumentError: ``key`` is not bytes-like, or the server refused the request.
            StoreNotFoundError: the server no longer serves the store.
            KvioError: the server cannot be reached or failed.
        """
        if type(key) is not bytes:
            key = _key(key)
        cache = self._cache
        if cache is not None:
            version = self._version
            if version is not None and time.monotonic() - self._confirmed < self.interval:
                value = cache.get(self.name, version, key)
                if value is not MISS:
                    return default if value is None else value
        value = self._fetch(key)
        return default if value is None else value

    def get_many(self, keys: Any, default: Any = None) -> list:
        """Values (or ``default``) for many keys, in input order, all from one version: one
        POST for the keys the near cache does not hold.

        Raises:
            InvalidArgumentError: a key is not bytes-like, or the server refused the batch (more
                keys than its ``kvio.serve.batch.max.keys``, a body over its limit).
            KvioError: the server cannot be reached or failed.
        """
        keys = [k if type(k) is bytes else _key(k) for k in keys]
        cache = self._cache
        version = self._fresh_version() if cache is not None else None
        if cache is None or version is None:
            out = self._post_many(keys)[1]
        else:
            out = [cache.get(self.name, version, k) for k in keys]
            todo = [i for i, v in enumerate(out) if v is MISS]
            if todo:
                answered, values = self._post_many([keys[i] for i in todo])
                if answered != version:  # a new version: the cached answers are of the old one
                    out = self._post_many(keys)[1]
                else:
                    for i, value in zip(todo, values, strict=True):
                        out[i] = value
        if default is None:
            return out  # (a list of its own: None stands for absent already)
        return [default if v is None else v for v in out]

    def _post_many(self, keys: list[bytes]) -> tuple[str, list[bytes | None]]:
        """One batch get: the version answered and the values (None = absent)."""
        if self._batch_format == "arrow":
            sink = pa.BufferOutputStream()
            table = pa.table({"key": pa.array(keys, type=pa.binary())})
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            status, headers, body = self._request("POST", f"{self._base}/get",
                                               sink.getvalue().to_pybytes(),
                                               {"Content-Type": ARROW_STREAM})
            if status != 200:
                raise self._error(status, body)
            values = pa.ipc.open_stream(body).read_all().column("value").to_pylist()
        else:
            # Base64 strings need no JSON escaping: the body is laid out directly, and keys
            # and values are coded all at once (kvio.b64).
            doc = b64.json_list(pa.array(keys, type=pa.large_binary()), b'{"keys":',
                                b',"encoding":"base64"}')
            status, headers, body = self._request("POST", f"{self._base}/get", doc,
                                               {"Content-Type": "application/json"})
            if status != 200:
                raise self._error(status, body)
            values = _json_values(body)
        version = str(headers.get(_VERSION_KEY))
        self._seen(version)
        if self._cache is not None:
            for key, value in zip(keys, values, strict=True):
                self._cache.put(self.name, version, key, value)
        return version, values

    # ---- scans --------------------------------------------------------------------------------
    def batches(self, start: Any = None, stop: Any = None,
                prefix: Any = None) -> Iterator[pa.RecordBatch]:
        """The pairs of a range (half-open ``[start, stop)``, and/or ``prefix``) as Arrow
        batches (``key``, ``value``), streamed from the server on a connection of their own;
        the whole range is read from one version.

        Raises:
            InvalidArgumentError: a bound is not bytes-like.
            KvioError: the server cannot be reached, failed, or broke the stream off.
        """
        query = []
        for name, bound in (("start", start), ("stop", stop), ("prefix", prefix)):
            if bound is not None:
                query.append(f"{name}={_pct(_key(bound))}")
        path = f"{self._base}/scan" + ("?" + "&".join(query) if query else "")
        if self.closed:
            raise ReaderClosedError("the remote store was closed", store=self.uri)
        return self._stream(path)

    def _stream(self, path: str) -> Iterator[pa.RecordBatch]:
        conn = self._new_connection()
        try:
            try:
                conn.request("GET", path, headers={**self._headers, "Accept": ARROW_STREAM})
                resp = conn.getresponse()
                if resp.status != 200:
                    raise self._error(resp.status, resp.read())
                self._seen(resp.getheader(VERSION_HEADER))
                reader = pa.ipc.open_stream(resp)
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    yield batch
            except (OSError, http.client.HTTPException, pa.ArrowInvalid) as exc:
                # A stream the server broke off (a damaged file) has no end-of-stream marker:
                # never taken for complete.
                raise self._unreachable(exc) from None
        finally:
            conn.close()

    def _pairs(self, start: Any, stop: Any, prefix: Any, column: int | None) -> Iterator[Any]:
        for batch in self.batches(start, stop, prefix):
            if column is None:
                yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(),
                               strict=True)
            else:
                yield from batch.column(column).to_pylist()

    def items(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A re-iterable view of the (key, value) pairs in key order, of a range with
        ``start``/``stop``/``prefix`` (each iteration is one streamed scan)."""
        return _RemoteRange(self, start, stop, prefix, None)

    def keys(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A re-iterable view of the keys in order (of a range, as :meth:`items`)."""
        return _RemoteRange(self, start, stop, prefix, 0)

    def values(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A re-iterable view of the values in key order (of a range, as :meth:`items`)."""
        return _RemoteRange(self, start, stop, prefix, 1)

    def __iter__(self) -> Iterator[bytes]:
        return self._pairs(None, None, None, 0)

    # ---- life ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connections and drop the near cache. Idempotent; later use raises
        ReaderClosedError."""
        self.closed = True
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if self._cache is not None:
            self._cache.clear()

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteStore {self.uri} version={self._version}>"


class _RemoteRange:
    """A re-iterable view of a range of a remote store (as StoreReader's range views)."""

    def __init__(self, store: RemoteStore, start: Any, stop: Any, prefix: Any,
                 column: int | None):
        self._store, self._bounds, self._column = store, (start, stop, prefix), column

    def __iter__(self) -> Iterator[Any]:
        return self._store._pairs(*self._bounds, self._column)

    def __len__(self) -> int:
        return sum(batch.num_rows for batch in self._store.batches(*self._bounds))

    def __repr__(self) -> str:
        return f"<range of {self._store.uri} {self._bounds}>"


def connect(url: str, name: str, token: str | None = None, cache_bytes: int = 0, *,
            timeout: float = 30.0, conf: Mapping[str, Any] | None = None) -> RemoteStore:
    """A store served by ``kvio serve`` as a read-only Mapping.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8470"``.
        name: the store's name on the server.
        token: the server's bearer token (``--token-file``), if it needs one.
        cache_bytes: the near cache's bound in bytes; 0 for no near cache.
        timeout: seconds to wait for the server on each request.
        conf: settings (``kvio.follow.interval``: how long a cached version is trusted).

    Returns:
        The remote store (close it, or use it as a context manager).

    Raises:
        InvalidArgumentError: a URL that is not http(s), or the server refused the token.
        StoreNotFoundError: the server serves no store of that name.
        KvioError: the server cannot be reached.
    """
    return RemoteStore(url, name, token=token, cache_bytes=cache_bytes, timeout=timeout,
                       conf=conf)
