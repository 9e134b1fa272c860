"""Running the app under uvicorn: one process, or ``--workers N`` processes sharing one socket,
and a graceful stop.

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections and waits for the requests in
flight, streamed scans included, to finish (at most ``drain_timeout`` seconds) before it exits;
with workers, the parent passes SIGTERM on to each worker, which drains the same way.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from types import FrameType

import uvicorn

from .app import build_app
from .options import ENV, ServeOptions
from .stores import StoreSet

log = logging.getLogger("kvio.serve")
APP_FACTORY = "kvio.serve.app:app_from_environment"


class Stopped(Exception):
    """The server drained and stopped on SIGTERM."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped


@contextlib.contextmanager
def _signals_for_uvicorn() -> Iterator[None]:
    """While uvicorn runs, signals are uvicorn's: after its graceful shutdown it re-raises the
    signal it got, which :func:`_on_sigterm` turns into :class:`Stopped`. The CLI's Ctrl-C
    watchdog (kvio.cli.interrupt, woken through the signal wakeup fd) would end the process
    two seconds into a drain, so the wakeup fd is detached meanwhile; uvicorn ends a drain on a
    second Ctrl-C itself."""
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    old_fd = signal.set_wakeup_fd(-1)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGTERM, old_term)


def serve(options: ServeOptions, *, host: str, port: int, workers: int = 1,
          drain_timeout: float = 30.0, access_log: bool = False,
          stores: StoreSet | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C.

    Args:
        options: what to serve.
        host: address to bind.
        port: port to bind.
        workers: worker processes (each opens the stores itself; mapped files share the page
            cache).
        drain_timeout: longest wait for requests in flight when stopping.
        access_log: log every request (uvicorn's access log).
        stores: the stores, already opened (one worker only); None to open them here.

    Raises:
        Stopped: the server stopped on SIGTERM after draining.
        KeyboardInterrupt: it stopped on Ctrl-C after draining.
        KvioError: a store could not be opened.
    """
    common = {"host": host, "port": port, "access_log": access_log, "log_level": "info",
              "timeout_graceful_shutdown": int(max(1, drain_timeout)), "server_header": False,
              "lifespan": "on", "http": http_protocol()}
    if workers == 1:
        config = uvicorn.Config(build_app(options, stores), **common)  # type: ignore[arg-type]
        with _signals_for_uvicorn():
            uvicorn.Server(config).run()
        return
    if stores is not None:
        stores.close()  # each worker opens its own
    with _metrics_dir() as directory:
        options = replace(options, multiprocess_dir=directory)
        saved = os.environ.get(ENV)
        os.environ[ENV] = options.to_env()  # read by app_from_environment in each worker
        try:
            with _signals_for_uvicorn():
                uvicorn.run(APP_FACTORY, factory=True, workers=workers, **common)  # type: ignore[arg-type]
        finally:
            if saved is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = saved


def http_protocol() -> str:
    """uvicorn's HTTP implementation: httptools (a C parser) with single gets answered in the
    protocol itself and each answer's head and body sent in one write (:mod:`.protocol`), or
    uvicorn's choice (h11) without httptools."""
    try:
        from .protocol import PROTOCOL
    except ImportError:  # httptools is in the serve extra, but may be missing on a platform
        return "auto"
    return PROTOCOL


@contextlib.contextmanager
def _metrics_dir() -> Iterator[str]:
    """The directory where the workers' metrics meet: ``$PROMETHEUS_MULTIPROC_DIR`` if set
    (kept afterwards), else a fresh temporary directory, removed when the server stops."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        yield given
        return
    directory = tempfile.mkdtemp(prefix="kvio-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield directory
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(directory, ignore_errors=True)
