"""Read-through for ``kvio serve --read-through NAME=LOADER``: a key the store does not hold is
asked of a loader, and the loader's answer (a value, or None for "absent too") is kept for
``kvio.serve.read.through.ttl``.

* One load per key at a time (per worker process): requests for a key being loaded wait for that
  load's answer instead of starting another (no stampede on a hot missing key).
* A loader that fails (raises, or returns something other than bytes or None) gives a 503
  ``load_failed`` for that key and is asked again by the next request: a failure is never cached,
  and nothing but the loader's bytes is ever served as a value.
* Loaders may block (a database query): they run in worker threads, off the event loop.

A loader is a Python callable named ``module:function`` taking ``(store_name, key: bytes)``.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread

from ..errors import InvalidArgumentError, KvioError
from ..near_cache import MISS, NearCache
from .codec import show
from .errors import ApiError

log = logging.getLogger("kvio.serve")
#: what a loader is: ``loader(store_name, key) -> value or None``
Loader = Callable[[str, bytes], "bytes | None"]
#: bytes of loaded answers a worker keeps per store (least recently used dropped first)
CACHE_BYTES = 64 * 1024 * 1024


def parse_read_through_spec(text: str) -> tuple[str, str]:
    """Split a ``NAME=module:function`` argument.

    Args:
        text: the argument as typed.

    Returns:
        ``(name, "module:function")``.

    Raises:
        InvalidArgumentError: no ``=``, or the loader is not ``module:function``.
    """
    name, sep, spec = text.partition("=")
    module, colon, function = spec.partition(":")
    if not sep or not name or not colon or not module or not function:
        raise InvalidArgumentError(f"expected NAME=module:function, got {text!r}")
    return name, spec


def load_loader(spec: str) -> Loader:
    """Import the loader named ``module:function``.

    Args:
        spec: ``module:function`` (the function may be ``Class.method``-style dotted).

    Returns:
        The callable.

    Raises:
        KvioError: the module cannot be imported, or has no such callable.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise KvioError(f"cannot import the read-through loader module {module_name!r}: "
                        f"{type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise KvioError(f"the read-through loader {spec!r} is not a callable in {module_name}")
    loader: Loader = target
    return loader


class ReadThrough:
    """The loader of one store, its answers with a time to live, and the loads in flight.

    Args:
        store: the store's name (passed to the loader).
        loader: the callable.
        ttl: seconds a loaded answer is kept (0: never kept; every miss asks the loader).
        max_bytes: the bound of the kept answers.
    """

    def __init__(self, store: str, loader: Loader, ttl: float, max_bytes: int = CACHE_BYTES):
        self.store, self.loader, self.ttl = store, loader, ttl
        self._cache = NearCache(max_bytes)
        self._loading: dict[bytes, asyncio.Future[tuple[bool, Any]]] = {}

    async def get(self, key: bytes) -> bytes | None:
        """The loader's answer for ``key``: kept, being loaded by another request, or loaded now.

        Raises:
            ApiError: 503 ``load_failed`` when the loader failed for this key.
        """
        kept = self._cache.get(self.store, "", key)
        if kept is not MISS:
            expires, kept_value = kept
            if time.monotonic() < expires:
                answer: bytes | None = kept_value
                return answer
            self._cache.discard(self.store, "", key)
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                outcome = await self._load(key)
            except BaseException:  # cancelled: the waiters get a failure, not a hang
                outcome = (False, "the load was cancelled")
                raise
            finally:
                del self._loading[key]
                pending.set_result(outcome)
        else:
            outcome = await asyncio.shield(pending)
        ok, result = outcome
        if not ok:
            raise ApiError(503, "load_failed", f"the read-through loader of store {self.store!r} "
                           f"failed for key {show(key)!r}: {result}", store=self.store,
                           key=show(key))
        value: bytes | None = result
        return value

    async def _load(self, key: bytes) -> tuple[bool, Any]:
        """(True, value or None) from the loader, or (False, why it failed); the answer is kept."""
        try:
            value = await anyio.to_thread.run_sync(self.loader, self.store, key)
        except Exception as exc:
            log.error("read-through loader of store %s failed for key %s: %s: %s", self.store,
                      show(key), type(exc).__name__, exc)
            return False, f"{type(exc).__name__}: {exc}"
        if value is not None and not isinstance(value, bytes):
            log.error("read-through loader of store %s returned %s for key %s", self.store,
                      type(value).__name__, show(key))
            return False, f"the loader returned {type(value).__name__}, not bytes or None"
        if self.ttl > 0:
            self._cache.put(self.store, "", key, (time.monotonic() + self.ttl, value),
                            size=0 if value is None else len(value))
        return True, value
