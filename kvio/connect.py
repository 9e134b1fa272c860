"""Bounded first contact with a remote filesystem (HDFS NameNodes, through hdfs-native).

hdfs-native connects to a NameNode without a timeout and retries a refused connection 15 times
with growing sleeps (about three minutes), inside Rust code that Ctrl-C cannot interrupt. So
before kvio's first call on an HDFS filesystem, :func:`check_reachable` asks the NameNode for
the store root's status in a daemon thread and waits at most ``kvio.fs.connect.timeout``: a
refused connection fails at once with the reason, a silent address (a firewall that drops
packets, a hung NameNode) fails when the time is up. A thread left waiting on a dead address
does not keep the process alive (daemon), and the waiting main thread stays interruptible.
"""
from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from .errors import FilesystemUnreachableError


def namenode_address(uri: str) -> tuple[str, int] | None:
    """The NameNode ``(host, port)`` a URI names, None for a name service (no port: the
    NameNodes come from the Hadoop configuration) and for ``viewfs://``.

    Args:
        uri: an ``hdfs://`` or ``viewfs://`` URI.

    Returns:
        (host, port) or None.
    """
    parsed = urllib.parse.urlparse(uri)
    try:
        port = parsed.port
    except ValueError:  # not a number: hdfs-native reports it on the first call
        return None
    if parsed.scheme != "hdfs" or not parsed.hostname or port is None:
        return None
    return parsed.hostname, port


def _describe(uri: str) -> str:
    address = namenode_address(uri)
    if address is not None:
        return f"the HDFS NameNode {address[0]}:{address[1]}"
    host = urllib.parse.urlparse(uri).hostname
    return f"the NameNode(s) of {host}" if host else "the default HDFS NameNode"


def _run_within(call: Callable[[], Any], timeout: float) -> tuple[bool, BaseException | None]:
    """Run ``call`` in a daemon thread; (finished in time, the exception it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="kvio-first-contact", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return False, None
    return True, outcome[0]


def check_reachable(fs: Any, root: str, uri: str, timeout: float) -> None:
    """Fail fast, with the store's URI, when an HDFS filesystem's NameNode cannot be reached.

    Args:
        fs: the hdfs-native fsspec filesystem (its client has not connected yet).
        root: the store's path on it (missing is fine: the NameNode answered).
        uri: the store URI, for the message.
        timeout: seconds to wait for the first answer (``kvio.fs.connect.timeout``).

    Raises:
        FilesystemUnreachableError: the connection was refused, the address did not resolve,
            or no answer came within ``timeout``.
    """
    address = namenode_address(uri)

    def first_contact() -> None:
        if address is not None:
            # A plain TCP connect first: hdfs-native would retry a refused one for minutes.
            socket.create_connection(address, timeout=timeout).close()
        try:
            fs.info(root)
        except (FileNotFoundError, PermissionError):
            pass  # the NameNode answered

    finished, error = _run_within(first_contact, timeout)
    # Our wait and the probe's socket timeout are the same length: either may end first.
    if not finished or isinstance(error, TimeoutError):
        raise FilesystemUnreachableError(
            f"{_describe(uri)} did not answer within {timeout:g}s (kvio.fs.connect.timeout): "
            "check the address and that the NameNode is up", store=uri)
    if isinstance(error, OSError):
        raise FilesystemUnreachableError(f"cannot reach {_describe(uri)}: {error} "
                                         f"(kvio.fs.connect.timeout={timeout:g}s)",
                                         store=uri) from error
    if error is not None:
        raise error
