"""Pins: leases that keep the version a reader uses safe from retention and ``kvio gc``.

A pin is a small file ``_pins/<version>.<holder>.pin`` (:mod:`kvio.format.pin`) saying "holder
reads version until time T". Garbage collection never deletes a version with a pin that has not
expired (:func:`unexpired`), and removes expired pin files. A holder that crashes simply stops
renewing, so its pin expires; nothing has to clean up after it.

* A :class:`~kvio.reader.StoreReader` pins its version when it opens (``kvio.pin.ttl``, renewed
  every third of it by one background thread per process, :class:`_Renewer`) and removes the
  pin when it closes. Pinning happens at open only; lookups and scans never touch pins.
* A Spark query plan pins the version it plans with :func:`hold_batch` (``kvio.pin.batch.ttl``,
  never renewed: planning runs in short-lived Python workers), an mrjob driver with
  :func:`acquire` for its whole run.

Pinning is best effort: a store the process may not write to (a read-only mount) is read
without a pin, with one warning per store; such readers are protected by ``kvio.gc.grace``
only. A race between opening and gc is closed by that grace window: a reader pins the version
it has just read as current, and gc deletes only versions superseded longer than the grace
ago, so the pin lands before gc may consider the version.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from dataclasses import dataclass

from . import layout
from .config import Config
from .errors import CorruptStoreError
from .format.pin import PinRecord
from .fs import TMP_PREFIX, FileIO

log = logging.getLogger(__name__)

READER, SPARK, MRJOB = "reader", "spark", "mrjob"
#: How long a pin file that cannot be read (torn or damaged) still protects its version,
#: counted from the file's modification time: the longest lease kvio writes by default
#: (kvio.pin.batch.ttl), so that no holder loses its protection to a torn write.
UNREADABLE_PIN_SECONDS = 24 * 3600.0
_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def new_holder_id() -> str:
    """A new holder id: host, process id and a random tag (no ``.``, see the pin file name)."""
    return f"{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Pin:
    """A lease on one version of a store, held by this process.

    Args:
        io: the store's file I/O.
        version: the version to pin.
        ttl: the lease length in seconds.
        purpose: who holds it (``reader``, ``spark``, ``mrjob``).
        holder: the holder id (default: a new one).
        owner: an object whose garbage collection releases the pin (a reader that was never
            closed); None: only :meth:`release` does.
    """

    def __init__(self, io: FileIO, version: str, ttl: float, purpose: str,
                 holder: str | None = None, owner: object | None = None):
        self.io = io
        self.version = version
        self.ttl = ttl
        self.purpose = purpose
        self.holder = holder or new_holder_id()
        self.rel = layout.pin_path(version, self.holder)
        self.released = False
        self.next_renew = 0.0  # monotonic time of the next renewal (the renewer's)
        self._owner = None if owner is None else weakref.ref(owner)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def bind(self, owner: object) -> None:
        """Release the pin when ``owner`` is garbage-collected without releasing it."""
        self._owner = weakref.ref(owner)

    @property
    def orphaned(self) -> bool:
        """True when the owner was garbage-collected without releasing the pin."""
        return self._owner is not None and self._owner() is None

    def write(self) -> None:
        """Create or extend the pin file: it expires ``ttl`` seconds from now.

        Raises:
            OSError: (or the filesystem's own error) the file could not be written.
        """
        record = PinRecord(self.version, self.holder, time.time() + self.ttl, self.ttl,
                           self.purpose, _host(), os.getpid())
        self.io.replace_file(self.rel, record.encode())

    def renew(self) -> bool:
        """Extend the lease (the renewer calls this every ``ttl / 3``).

        Returns:
            False when the pin was released meanwhile (nothing written).
        """
        with self._lock:  # a release waits for a renewal in progress, so none follows it
            if self.released:
                return False
            self.write()
            return True

    def release(self) -> None:
        """Remove the pin file (idempotent). A forked child that inherited the pin never
        removes it: the pin belongs to the process that created it."""
        if os.getpid() != self._pid:
            # Before taking the lock: the parent's renewer may have held it at the fork.
            self.released = True
            return
        with self._lock:
            if self.released:
                return
            self.released = True
        _RENEWER.remove(self)
        try:
            self.io.delete_file(self.rel)
            if self.io.is_local:  # rmdir is atomic there: a pin written meanwhile stays
                self.io.remove_empty_dir(layout.PINS)
        except Exception as exc:  # noqa: BLE001 - the pin expires by itself
            log.warning("kvio: could not remove pin %s: %s (it expires by itself)",
                        self.io.path(self.rel), exc)

    def __repr__(self) -> str:
        state = " released" if self.released else ""
        return f"<Pin {self.io.uri} version={self.version} holder={self.holder}{state}>"


def _warn_unpinned(io: FileIO, version: str, exc: BaseException) -> None:
    with _WARNED_LOCK:
        if io.uri in _WARNED:
            return
        _WARNED.add(io.uri)
    log.warning("kvio: cannot pin version %s of %s (%s): reading without a pin; gc may remove "
                "the version once it is superseded for longer than kvio.gc.grace", version,
                io.uri, exc)


def acquire(io: FileIO, version: str, conf: Config, *, purpose: str = READER,
            owner: object | None = None) -> Pin | None:
    """Pin ``version`` for ``kvio.pin.ttl``, renewed by this process until released.

    Args:
        io: the store's file I/O.
        version: the version to pin.
        conf: settings (``kvio.pin.ttl``).
        purpose: who holds it.
        owner: see :class:`Pin`.

    Returns:
        The pin; None when it could not be written (a warning is logged once per store and
        the caller reads without a pin).
    """
    pin = Pin(io, version, conf.pin_ttl, purpose, owner=owner)
    try:
        pin.write()
    except Exception as exc:  # noqa: BLE001 - a read-only store is still readable
        _warn_unpinned(io, version, exc)
        return None
    _RENEWER.add(pin)
    return pin


def hold_batch(io: FileIO, version: str, conf: Config, *, purpose: str = SPARK) -> bool:
    """Pin ``version`` for ``kvio.pin.batch.ttl`` without renewing or releasing it: for
    planners that run in short-lived processes (Spark's Python planning workers), whose query
    outlives them. One pin file per version and purpose, shared by every plan (each plan
    extends it), so many queries of one version do not pile up pin files.

    Args:
        io: the store's file I/O.
        version: the version a plan reads.
        conf: settings (``kvio.pin.batch.ttl``).
        purpose: the holder id and purpose written (``spark``).

    Returns:
        True when the pin was written (False: see :func:`acquire`, a warning was logged).
    """
    try:
        Pin(io, version, conf.pin_batch_ttl, purpose, holder=purpose).write()
    except Exception as exc:  # noqa: BLE001 - a read-only store is still readable
        _warn_unpinned(io, version, exc)
        return False
    return True


@dataclass(frozen=True)
class PinFile:
    """A pin file found in a store.

    Attributes:
        version: the version its name pins.
        holder: the holder its name names.
        rel: its path relative to the store root.
        expires: when it stops protecting its version (seconds since the epoch); for an
            unreadable file, its modification time plus :data:`UNREADABLE_PIN_SECONDS`.
        record: its content; None when it cannot be read.
        error: why it cannot be read, or None.
    """

    version: str
    holder: str
    rel: str
    expires: float
    record: PinRecord | None
    error: str | None

    def to_json(self) -> dict[str, object]:
        """What ``kvio versions --json`` shows of a pin."""
        doc: dict[str, object] = {"holder": self.holder, "expires": self.expires}
        if self.record is not None:
            doc.update(purpose=self.record.purpose, host=self.record.host, pid=self.record.pid)
        if self.error is not None:
            doc["error"] = self.error
        return doc


def scan(io: FileIO) -> list[PinFile]:
    """Every pin file of a store (temporary files and other names are skipped).

    Args:
        io: the store's file I/O.

    Returns:
        The pins, in file name order; a file removed while listing is left out.
    """
    found = []
    for name in io.listdir(layout.PINS):
        parsed = layout.parse_pin_name(name)
        if parsed is None:
            continue
        version, holder = parsed
        rel = f"{layout.PINS}/{name}"
        try:
            record = PinRecord.decode(io.read_bytes(rel), version, holder, store=io.uri,
                                      file=io.path(rel))
        except FileNotFoundError:
            continue  # released meanwhile
        except CorruptStoreError as exc:  # torn or damaged: protect for a while (see above)
            stamp = io.modified(rel)
            expires = (stamp or 0.0) + UNREADABLE_PIN_SECONDS
            found.append(PinFile(version, holder, rel, expires, None, str(exc)))
            continue
        found.append(PinFile(version, holder, rel, record.expires, record, None))
    return found


def unexpired(found: list[PinFile], now: float) -> dict[str, list[PinFile]]:
    """The pins that still protect their version, by version."""
    out: dict[str, list[PinFile]] = {}
    for pin in found:
        if pin.expires > now:
            out.setdefault(pin.version, []).append(pin)
    return out


def stray_temp_files(io: FileIO) -> list[str]:
    """Temporary files left in ``_pins/`` by a process that died while writing a pin."""
    return [f"{layout.PINS}/{n}" for n in io.listdir(layout.PINS) if n.startswith(TMP_PREFIX)]


class _Renewer:
    """One daemon thread per process that renews every held pin at a third of its lease.
    It starts with the first pin and ends when no pin has been held for a few seconds."""

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also the fork handler: a child starts with no pins and no thread (the parent's thread
        # does not exist in the child, and its lock may have been held at the fork).
        self._cond = threading.Condition(threading.Lock())
        self._pins: set[Pin] = set()
        self._thread: threading.Thread | None = None

    def add(self, pin: Pin) -> None:
        with self._cond:
            pin.next_renew = time.monotonic() + pin.ttl / 3
            self._pins.add(pin)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kvio-pin-renewer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, pin: Pin) -> None:
        with self._cond:
            self._pins.discard(pin)

    def held(self) -> list[Pin]:
        """The pins this process renews (for tests and diagnostics)."""
        with self._cond:
            return list(self._pins)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                if self._thread is not me:
                    return
                if not self._pins:
                    self._cond.wait(self.IDLE_SECONDS)
                    if not self._pins:
                        self._thread = None
                        return
                now = time.monotonic()
                due = [p for p in self._pins if p.next_renew <= now]
                if not due:
                    self._cond.wait(min(p.next_renew for p in self._pins) - now)
                    continue
                for pin in due:
                    pin.next_renew = now + pin.ttl / 3
            for pin in due:
                self._renew(pin)

    @staticmethod
    def _renew(pin: Pin) -> None:
        if pin.orphaned:
            pin.release()
            return
        try:
            pin.renew()
        except Exception as exc:  # noqa: BLE001 - retried soon; the lease has two thirds left
            pin.next_renew = time.monotonic() + min(pin.ttl / 10, 5.0)
            log.warning("kvio: could not renew pin %s: %s", pin.io.path(pin.rel), exc)


_RENEWER = _Renewer()


def _after_fork_in_child() -> None:
    global _WARNED_LOCK
    _RENEWER._reset()
    _WARNED_LOCK = threading.Lock()  # it may have been held at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def held() -> list[Pin]:
    """The pins this process holds and renews."""
    return _RENEWER.held()
