"""The named stores a server answers from, and one snapshot per request.

Every store follows new publishes: it is a :class:`~kvio.live.LiveStore`
(``kvs.open_store(uri, follow=True)``), which checks for a new version every
``kvio.follow.interval`` and swaps it in atomically. Every request reads one version: it takes a
:meth:`ServedStore.snapshot` (the current reader) and uses only that reader until its answer is
complete, streamed answers included; a swap meanwhile leaves it on its version, which is closed
when the last request on it ends.

A :class:`~kvio.reader.StoreReader` is not thread-safe (its partition and block caches are
plain dicts), so a worker process uses its readers from one thread at a time: stores on local
disk are read on the event loop's thread (a lookup is a few microseconds from the page cache),
others (object stores, HDFS: every read may wait on the network) in worker threads under a lock
per store, so the event loop never waits on the network.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio.to_thread

from ..errors import KvioError
from ..live import LiveStore
from ..reader import StoreReader
from ..system import KeyValueSystem
from .errors import ApiError
from .options import ServeOptions

T = TypeVar("T")
_DONE = object()


class ServedStore:
    """One named store of a server.

    Args:
        name: the name in URLs.
        uri: the store.
        kvs: the system it is opened with (settings, storage options).

    Raises:
        KvioError: the store cannot be opened (the error of ``open_store``).
    """

    def __init__(self, name: str, uri: str, kvs: KeyValueSystem):
        self.name, self.uri, self._kvs = name, uri, kvs
        live = kvs.open_store(uri, follow=True)
        try:
            with live.snapshot() as reader:
                self.inline = reader.io.is_local
        except BaseException:
            live.close()
            raise
        self.live: LiveStore = live
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counting: dict[str, anyio.Event] = {}

    @property
    def version(self) -> str:
        return self.live.version

    def snapshot(self) -> contextlib.AbstractContextManager[StoreReader]:
        """The current version for one request (a context manager yielding its reader)."""
        return self.live.snapshot()

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` where this store's readers may be used: inline for local stores, in a
        worker thread under the store's lock otherwise."""
        if self.inline:
            return fn()
        return await anyio.to_thread.run_sync(self._locked, fn)

    async def call(self, fn: Callable[[StoreReader], T]) -> tuple[str, T]:
        """``fn(reader)`` on one snapshot.

        Returns:
            The version read and what ``fn`` returned.
        """
        with self.snapshot() as reader:
            return reader.version, await self.run(lambda: fn(reader))

    async def stream(self, reader: StoreReader, items: Iterator[T]) -> AsyncIterator[T]:
        """The items of a blocking iterator over ``reader``, each produced where readers may be
        used (see :meth:`run`)."""
        if self.inline:
            for item in items:
                yield item
            return

        def step() -> Any:
            return next(items, _DONE)

        while True:
            item = await self.run(step)
            if item is _DONE:
                return
            yield item

    async def pair_count(self, reader: StoreReader) -> int | None:
        """The number of pairs of ``reader``'s version. The manifest has it unless partitions
        overlap; then it is counted once per version by a merged scan in a worker thread, on a
        reader of its own, so that lookups go on meanwhile. None if counting failed."""
        if reader.manifest.count is not None:
            return reader.manifest.count
        version = reader.version
        while version not in self._counts:
            pending = self._counting.get(version)
            if pending is not None:  # another request is counting: wait for it
                await pending.wait()
                if version not in self._counts:
                    return None
                break
            done = self._counting[version] = anyio.Event()
            try:
                self._counts[version] = await anyio.to_thread.run_sync(self._count, version)
            except KvioError:
                return None
            finally:
                del self._counting[version]
                done.set()
        return self._counts[version]

    def _count(self, version: str) -> int:
        with self._kvs.open_store(self.uri, version=version) as reader:
            return len(reader)

    async def describe(self) -> dict[str, Any]:
        """What ``GET /v1/stores/{name}`` answers."""
        error = self.live.last_error
        with self.snapshot() as reader:
            manifest = reader.manifest
            return {"name": self.name, "uri": self.uri, "version": reader.version,
                    "commit_seq": reader.commit.seq, "pairs": await self.pair_count(reader),
                    "partitions": len(manifest.partitions), "bytes": manifest.size,
                    "disjoint": manifest.disjoint, "follow_interval": self.live.interval,
                    "swaps": self.live.swaps, "swap_errors": self.live.swap_errors,
                    "last_error": None if error is None else str(error)}

    def close(self) -> None:
        self.live.close()


class StoreSet:
    """The stores of one server, by name.

    Args:
        stores: the opened stores, in the order given on the command line.
    """

    def __init__(self, stores: list[ServedStore]):
        self.stores = {s.name: s for s in stores}

    @classmethod
    def open(cls, options: ServeOptions) -> StoreSet:
        """Open every store of ``options``.

        Raises:
            KvioError: a store cannot be opened (those already opened are closed again).
        """
        kvs = KeyValueSystem(conf=options.conf)
        opened: list[ServedStore] = []
        try:
            for name, uri in options.stores:
                opened.append(ServedStore(name, uri, kvs))
        except BaseException:
            for store in opened:
                store.close()
            raise
        return cls(opened)

    def get(self, name: str) -> ServedStore:
        """The store called ``name``.

        Raises:
            ApiError: 404 ``unknown_store``.
        """
        store = self.stores.get(name)
        if store is None:
            raise ApiError(404, "unknown_store", f"no store named {name!r} is served here (served: "
                           f"{', '.join(sorted(self.stores))})", store=name)
        return store

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
