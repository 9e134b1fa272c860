"""Live stores: a read-only Mapping that serves the current version and follows new publishes.

``KeyValueSystem.open_store(uri, follow=True)`` returns a :class:`LiveStore`. A daemon thread
checks every ``kvio.follow.interval`` whether a newer commit record exists — one small metadata
request: does ``_commits/<seq+1>.commit`` exist — and, when one does, opens the new version,
checks it (``kvio.follow.verify``) and swaps it in. A version that fails to open or verify is
not swapped in: the store keeps serving the last good version, logs the error (logger
``kvio.live``) and reports it as :attr:`LiveStore.last_error`.

Every call answers from exactly one version. Calls and snapshots register on the version they
use; a swap retires the old version, which is closed (and its pin released) when the last call
or snapshot on it ends. Registration is a list append and pop (atomic in CPython), so a
lookup through a live store costs about 0.1 µs more than through a plain reader, and takes no
lock.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from . import keyranges, layout, versions
from .config import Config
from .errors import CorruptStoreError, ReaderClosedError, StoreNotFoundError
from .format.commit_record import CommitRecord
from .keyranges import Range
from .mapping import GetMapping
from .reader import StoreReader, _ranges

log = logging.getLogger(__name__)

_MISSING = object()
#: every how many checks a follower also checks that its own commit record still exists (a
#: store deleted and created again restarts its sequence, so seq+1 may never appear)
_RECHECK_EVERY = 10
#: longest wait between retries after an error that may pass (a filesystem that did not answer)
_MAX_BACKOFF = 60.0

SwapCallback = Callable[[str, str | None, BaseException | None], Any]


class _Held:
    """One version in use: its reader and the calls and snapshots that use it."""

    __slots__ = ("reader", "active", "retired", "closed")

    def __init__(self, reader: StoreReader):
        self.reader = reader
        self.active: list[None] = []  # one entry per call or snapshot using this version
        self.retired = False          # a newer version was swapped in (or the store closed)
        self.closed = False


class LiveStore(GetMapping):
    """The current version of a store, following new publishes, as a read-only
    ``Mapping[bytes, bytes]`` with the read API of :class:`~kvio.reader.StoreReader`.

    Made by :meth:`KeyValueSystem.open_store(uri, follow=True)
    <kvio.system.KeyValueSystem.open_store>`. Close it (or use it as a context manager): that
    stops the follower thread and closes the current version.

    Args:
        uri: the store.
        opener: opens (and pins) the store's current version.
        conf: settings (``kvio.follow.interval``, ``kvio.follow.verify``).

    Raises:
        KvioError: the first version cannot be opened or fails verification.
    """

    def __init__(self, uri: str, opener: Callable[[], StoreReader], conf: Config):
        self.uri = uri
        self.interval = conf.follow_interval
        self.verify_mode = conf.follow_verify
        self._opener = opener
        reader = opener()
        try:
            self._verify(reader)
        except BaseException:
            reader.close()
            raise
        self._io = reader.io
        self._held = _Held(reader)
        self._seq = reader.commit.seq  # the record of the version served
        self._seen = self._seq         # the newest record looked at (a rejected one included)
        self._backoff = 0.0
        self._checks = 0
        self._closed = False
        self._refresh_lock = threading.Lock()
        self._dispose_lock = threading.Lock()
        self._callbacks: list[SwapCallback] = []
        #: the last error of opening or verifying a new version (None after a good swap)
        self.last_error: BaseException | None = None
        #: versions swapped in since the store was opened
        self.swaps = 0
        #: new versions that could not be swapped in
        self.swap_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=_follow,
                                        args=(weakref.ref(self), self._stop, self.interval),
                                        name=f"kvio-follow {uri}", daemon=True)
        self._thread.start()

    # ---- following ------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The version served now."""
        return self._held.reader.version

    @property
    def commit(self) -> CommitRecord:
        """The commit record of the version served now."""
        return self._held.reader.commit

    @property
    def follower_thread(self) -> threading.Thread:
        """The thread that checks for new versions (for diagnostics and benchmarks)."""
        return self._thread

    def on_swap(self, callback: SwapCallback) -> None:
        """Call ``callback(old_version, new_version, error)`` from the follower after each
        attempt to swap: ``error`` is None when ``new_version`` was swapped in; otherwise it is
        the error and ``new_version`` the version rejected (None when it is unknown, e.g. the
        store was deleted). Exceptions of the callback are logged and ignored.

        Args:
            callback: the function to call.
        """
        self._callbacks.append(callback)

    def _wait(self) -> float:
        return self._backoff or self.interval

    def _changed(self, recheck: bool) -> bool:
        """Whether a newer commit record exists: one small request, and with
        ``recheck`` a read of the served version's own record."""
        # A ranged read, not exists(): on an object store it is one request either way, where
        # fsspec's exists() follows a miss with a listing of the name as a directory.
        try:
            self._io.read_small(layout.commit_name(self._seen + 1))
            return True
        except FileNotFoundError:
            pass
        if not recheck:
            return False
        # A store deleted and created again restarts its sequence: our record is then gone
        # or names another version.
        try:
            own: CommitRecord | None = versions.read_commit(self._io, self._seq)
        except FileNotFoundError:
            own = None
        return own is None or own.version != self.version

    def _skip_void(self) -> None:
        """Records of aborted transactions above the served one never count: look past them
        (undecided ones are looked at again at every check until they are decided)."""
        try:
            state = versions.read_state(self._io)
        except Exception:  # noqa: BLE001 - checked again at the next interval
            return
        if not state.undecided and state.seq == self._seq:
            self._seen = max(self._seen, state.newest_seq)

    def refresh(self) -> bool:
        """Check for a new version now (the follower thread does this every interval) and
        swap it in when it opens and verifies. Also notices a store that was deleted (and
        maybe created again), which the follower checks every ``_RECHECK_EVERY`` intervals.

        Returns:
            True when a new version was swapped in.

        Raises:
            ReaderClosedError: the live store was closed.
        """
        return self._refresh(recheck=True)

    def _tick(self) -> None:
        """One check of the follower thread."""
        self._checks += 1
        self._refresh(recheck=self._checks % _RECHECK_EVERY == 0)

    def _refresh(self, recheck: bool) -> bool:
        with self._refresh_lock:
            self._check_open()
            try:
                if not self._changed(recheck):
                    self._backoff = 0.0
                    return False
                newest = versions.commit_seqs(self._io)
            except Exception as exc:  # noqa: BLE001 - e.g. the filesystem did not answer
                self._failed(exc, None, permanent=False)
                return False
            try:
                reader = self._opener()
            except Exception as exc:  # noqa: BLE001 - keep serving the last good version
                # A damaged or delete record stays until a newer one: do not retry it.
                permanent = isinstance(exc, (CorruptStoreError, StoreNotFoundError))
                self._failed(exc, None, permanent=permanent, seq=newest[-1] if newest else None)
                return False
            if reader.version == self.version:
                self._seq = self._seen = reader.commit.seq
                reader.close()
                self._skip_void()
                return False
            try:
                self._verify(reader)
            except Exception as exc:  # noqa: BLE001 - keep serving the last good version
                reader.close()
                self._failed(exc, reader.version, permanent=isinstance(exc, CorruptStoreError),
                             seq=reader.commit.seq)
                return False
            old = self._swap(reader)
        self._notify(old, reader.version, None)
        return True

    def _verify(self, reader: StoreReader) -> None:
        if self.verify_mode == "full":
            reader.verify()
        elif self.verify_mode == "footers":
            # Opening checks each file's trailer and footer against its manifest entry; more
            # partitions than the open limit are opened and closed in turn.
            for _, entry in reader.manifest.live():
                reader._partition(entry)

    def _swap(self, reader: StoreReader) -> str:
        old = self._held
        self._held = _Held(reader)  # from here on, new calls use the new version
        self._seq = self._seen = reader.commit.seq
        self._backoff = 0.0
        self.swaps += 1
        self.last_error = None
        self._retire(old)
        log.info("kvio: %s now serves version %s (was %s)", self.uri, reader.version,
                 old.reader.version)
        return old.reader.version

    def _failed(self, exc: BaseException, version: str | None, *, permanent: bool,
                seq: int | None = None) -> None:
        self.last_error = exc
        self.swap_errors += 1
        if permanent and seq is not None:
            self._seen = max(self._seen, seq)  # wait for a newer record than the bad one
            self._backoff = 0.0
        else:
            self._backoff = min(_MAX_BACKOFF, max(self.interval, self._backoff * 2))
        log.error("kvio: %s keeps serving version %s: %s %s", self.uri, self.version,
                  f"version {version} was not swapped in:" if version else
                  "checking for a new version failed:", exc)
        self._notify(self.version, version, exc)

    def _notify(self, old: str, new: str | None, error: BaseException | None) -> None:
        for callback in list(self._callbacks):
            try:
                callback(old, new, error)
            except Exception:  # noqa: BLE001 - a metrics hook must not stop following
                log.exception("kvio: on_swap callback of %s failed", self.uri)

    # ---- versions in use ------------------------------------------------------------------
    def _acquire(self) -> _Held:
        while True:
            held = self._held
            held.active.append(None)
            # Registered before looking at ``retired``: a swap retires first and then looks
            # at ``active``, so either it sees us or we see the retirement.
            if not held.retired:
                return held
            self._leave(held)
            if self._closed:
                raise ReaderClosedError("the live store is closed (open the store again)",
                                        store=self.uri)

    def _leave(self, held: _Held) -> None:
        held.active.pop()
        if held.retired and not held.active:
            self._dispose(held)

    def _retire(self, held: _Held) -> None:
        held.retired = True
        if not held.active:
            self._dispose(held)

    def _dispose(self, held: _Held) -> None:
        with self._dispose_lock:
            if held.closed or held.active:
                return  # closed already, or a call registered and will leave (and dispose)
            held.closed = True
        held.reader.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ReaderClosedError("the live store is closed (open the store again)",
                                    store=self.uri)

    @contextmanager
    def snapshot(self) -> Iterator[StoreReader]:
        """The current version for a group of calls (one request): every call on the reader
        yielded answers from that version, which stays open until the block ends even when a
        newer version is swapped in meanwhile. Do not close the reader.

        Yields:
            The reader of the current version.

        Raises:
            ReaderClosedError: the live store was closed.
        """
        held = self._acquire()
        try:
            yield held.reader
        finally:
            self._leave(held)

    # ---- the read API (each call on one version) -----------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` in the current version, or ``default`` (see StoreReader.get)."""
        held = self._held
        active = held.active
        active.append(None)
        try:
            if held.retired:  # a swap happened between the two lines above: use the new one
                return self._get_again(key, default)
            return held.reader.get(key, default)
        finally:
            active.pop()
            if held.retired and not active:
                self._dispose(held)

    def get_versioned(self, key: Any) -> tuple[str, Any]:
        """The version read and the value of ``key`` in it (None if absent): :meth:`get` that
        also says which version answered, without a :meth:`snapshot` block (a lookup server
        names the version in every answer)."""
        held = self._held
        active = held.active
        active.append(None)
        try:
            if held.retired:  # a swap happened between the two lines above: use the new one
                with self.snapshot() as reader:
                    return reader.version, reader.get(key)
            reader = held.reader
            return reader.version, reader.get(key)
        finally:
            active.pop()
            if held.retired and not active:
                self._dispose(held)

    def _get_again(self, key: Any, default: Any) -> Any:
        with self.snapshot() as reader:
            return reader.get(key, default)

    def get_many(self, keys: Any, default: Any = None) -> list:
        """Values (or ``default``) for many keys, all from one version."""
        with self.snapshot() as reader:
            return reader.get_many(keys, default)

    def __len__(self) -> int:
        with self.snapshot() as reader:
            return len(reader)

    def _scan(self, ranges: list[Range], column: int | None) -> Iterator[Any]:
        # Registered on one version for the whole scan (until exhausted or closed).
        with self.snapshot() as reader:
            yield from reader._iter_column(ranges, column)

    def __iter__(self) -> Iterator[bytes]:
        return self._scan(keyranges.ALL, 0)

    def items(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A re-iterable view of the pairs in key order (of a range with ``start``/``stop``/
        ``prefix``); each iteration scans one version.

        Raises:
            InvalidArgumentError: a bound is not bytes-like.
        """
        if start is None and stop is None and prefix is None:
            return _LiveItems(self)
        return _LiveRange(self, _ranges(start, stop, prefix), None)

    def keys(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A view of the keys in order (of a range, as :meth:`items`)."""
        if start is None and stop is None and prefix is None:
            return _LiveKeys(self)
        return _LiveRange(self, _ranges(start, stop, prefix), 0)

    def values(self, start: Any = None, stop: Any = None, prefix: Any = None) -> Any:
        """A view of the values in key order (of a range, as :meth:`items`)."""
        if start is None and stop is None and prefix is None:
            return _LiveValues(self)
        return _LiveRange(self, _ranges(start, stop, prefix), 1)

    def items_range(self, start: Any = None, stop: Any = None,
                    prefix: Any = None) -> Iterator[tuple[bytes, bytes]]:
        """An iterator of the pairs of a range, from one version."""
        return self._scan(_ranges(start, stop, prefix), None)

    def batches(self, start: Any = None, stop: Any = None,
                prefix: Any = None) -> Iterator[pa.RecordBatch]:
        """Arrow record batches of a range, all from one version (see StoreReader.batches).

        Raises:
            InvalidArgumentError: a bound is not bytes-like.
        """
        return self._batches(_ranges(start, stop, prefix))

    def _batches(self, ranges: list[Range]) -> Iterator[pa.RecordBatch]:
        with self.snapshot() as reader:
            yield from reader._batches(ranges)

    def to_table(self, start: Any = None, stop: Any = None, prefix: Any = None) -> pa.Table:
        """The pairs of a range as one Arrow table, from one version."""
        with self.snapshot() as reader:
            return reader.to_table(start, stop, prefix)

    def info(self) -> dict[str, Any]:
        """StoreReader.info() of the current version, plus ``follow``: the interval, the
        verification, swaps, swap errors and the last error."""
        with self.snapshot() as reader:
            doc = reader.info()
        doc["follow"] = {"interval": self.interval, "verify": self.verify_mode,
                         "swaps": self.swaps, "swap_errors": self.swap_errors,
                         "last_error": None if self.last_error is None else str(self.last_error)}
        return doc

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def close(self) -> None:
        """Stop following and close the current version once its last call or snapshot ends.
        Idempotent; later calls raise ReaderClosedError."""
        if self._closed:
            return
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        with self._refresh_lock:  # a refresh in progress finishes first
            self._closed = True
            self._retire(self._held)

    def __enter__(self) -> LiveStore:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<LiveStore {self.uri} version={self.version} swaps={self.swaps}{state}>"


def _follow(ref: weakref.ref[LiveStore], stop: threading.Event, wait: float) -> None:
    """The follower thread. It holds the live store weakly, so a store that is dropped without
    being closed stops being followed."""
    while not stop.wait(wait):
        live = ref()
        if live is None:
            return
        try:
            live._tick()
        except ReaderClosedError:
            return
        except Exception:  # noqa: BLE001 - never let the follower die
            log.exception("kvio: following %s failed", live.uri)
        wait = live._wait()
        del live


class _LiveRange:
    """A re-iterable view of a key range of a live store; each iteration scans one version."""

    def __init__(self, live: LiveStore, ranges: list[Range], column: int | None):
        self._live, self._ranges, self._column = live, ranges, column

    def __iter__(self) -> Iterator[Any]:
        return self._live._scan(self._ranges, self._column)

    def __len__(self) -> int:
        return sum(b.num_rows for b in self._live._batches(self._ranges))


class _LiveItems(ItemsView):
    _mapping: LiveStore

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self._mapping._scan(keyranges.ALL, None)


class _LiveKeys(KeysView):
    _mapping: LiveStore

    def __iter__(self) -> Iterator[bytes]:
        return self._mapping._scan(keyranges.ALL, 0)


class _LiveValues(ValuesView):
    _mapping: LiveStore

    def __iter__(self) -> Iterator[bytes]:
        return self._mapping._scan(keyranges.ALL, 1)

    def __contains__(self, value: object) -> bool:
        return any(v == value for v in self)
