"""Ctrl-C: every command stops on SIGINT with a short message and exit status 130.

Python turns SIGINT into ``KeyboardInterrupt`` only when the main thread next runs Python code,
so a command blocked inside native code (a network client retrying a connect, say) would
ignore Ctrl-C. :class:`InterruptGuard` keeps the normal path, in which the exception unwinds
through the command's cleanups (an unfinished import aborts its job) and ``main`` prints the
message, and adds a watchdog thread woken by the signal itself (``signal.set_wakeup_fd``). If
the main thread has not started handling the interrupt within :data:`GRACE_SECONDS`, or on a
second Ctrl-C, the watchdog prints the message and ends the process with status 130. An
unfinished write then leaves only staging behind, which no reader ever sees and ``kvio gc``
removes.

A signal can also miss the main thread while it is blocked in a system call that would have
returned for it: when the kernel hands it to another thread, or when it lands in the main
thread just before the call starts (CPython only looks for signals between bytecodes and when
a call fails with EINTR). The read then goes on waiting, and the command would only end
through the watchdog, skipping its cleanups (an import interrupted while waiting for input
left its store directory behind, about 1 run in 100 on a busy machine). So if the main thread
has not taken the interrupt within :data:`NUDGE_SECONDS`, the watchdog sends SIGINT once more
to the main thread alone: the blocked call fails with EINTR and the normal path runs. That
second signal is not counted as a second Ctrl-C, and it is ignored if the first one got
through meanwhile.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

from .output import PROG

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
GRACE_SECONDS = 5.0  # long enough for a loaded machine to run the handler; still prompt
#: how long the main thread may take to run the handler before it is sent the signal itself
NUDGE_SECONDS = 0.25
_SIGINT_BYTE = signal.SIGINT.value.to_bytes(1, "little")  # what set_wakeup_fd writes for it
MESSAGE = f"{PROG}: interrupted"


def _hard_exit() -> None:
    # os.write, not print: the main thread may hold sys.stderr's lock forever.
    try:
        os.write(2, (MESSAGE + "\n").encode())
    finally:
        os._exit(EXIT_INTERRUPTED)


class InterruptGuard:
    """While active (a context manager), SIGINT raises ``KeyboardInterrupt`` in the main
    thread as usual, and a watchdog ends the process if that does not happen in time.

    Outside the main thread, or where signals cannot be set up, it does nothing."""

    def __init__(self, grace: float = GRACE_SECONDS, nudge: float = NUDGE_SECONDS):
        self.grace = grace
        self.nudge = min(nudge, grace)
        self._active = False
        self._acknowledged = threading.Event()
        self._closing = threading.Event()
        self._nudging = False  # a SIGINT of the watchdog's own is on its way to the main thread

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            self._reader, self._writer = socket.socketpair()
            self._writer.setblocking(False)  # required by set_wakeup_fd
            self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
            self._old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        except (ValueError, OSError):
            return self
        self._active = True
        self._thread = threading.Thread(target=self._watch, name="kvio-interrupt", daemon=True)
        self._thread.start()
        return self

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._acknowledged.is_set() and self._nudging:
            # The watchdog's nudge, arriving after the user's Ctrl-C got through after all:
            # the command is already stopping, and a second KeyboardInterrupt would cut its
            # cleanups short.
            self._nudging = False
            return
        self._acknowledged.set()
        raise KeyboardInterrupt

    def _watch(self) -> None:
        seen = 0  # Ctrl-Cs from outside
        own = 0  # the watchdog's own nudges not yet seen on the wakeup fd
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data or self._closing.is_set():
                return
            count = data.count(_SIGINT_BYTE)
            mine = min(count, own)
            own -= mine
            seen += count - mine
            if not seen:
                continue  # another signal Python also reports through the wakeup fd
            if seen == 1 and not self._acknowledged.wait(self.nudge) and self._nudge():
                own += 1
            if seen > 1 or not self._acknowledged.wait(max(0.0, self.grace - self.nudge)):
                if not self._closing.is_set():
                    _hard_exit()

    def _nudge(self) -> bool:
        """Send SIGINT to the main thread alone (see the module's docstring); whether it
        was sent."""
        main = threading.main_thread().ident
        if self._acknowledged.is_set() or self._closing.is_set() or main is None:
            return False
        self._nudging = True
        try:
            signal.pthread_kill(main, signal.SIGINT)
        except (AttributeError, OSError):  # no pthread_kill (Windows), or the thread is gone
            self._nudging = False
            return False
        return True

    def __exit__(self, *exc: Any) -> None:
        if not self._active:
            return
        self._closing.set()
        signal.signal(signal.SIGINT, self._old_handler)
        signal.set_wakeup_fd(self._old_fd)
        self._writer.close()  # the watchdog's recv returns b"" and it ends
        self._thread.join(timeout=5)
        self._reader.close()
        self._active = False
