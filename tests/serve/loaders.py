"""Read-through loaders for tests/serve/test_read_through.py, imported by the server process
(``--read-through NAME=tests.serve.loaders:FUNCTION``). Every call is appended to the file named
by ``KVIO_TEST_LOADER_LOG`` (one line per call, the key in hex), so the test can count loads."""
from __future__ import annotations

import os
import time


def _note(key: bytes) -> None:
    with open(os.environ["KVIO_TEST_LOADER_LOG"], "a") as f:
        f.write(key.hex() + "\n")


def lookup(store: str, key: bytes) -> bytes | None:
    """``loaded:<store>:<key>``; None (absent too) for keys starting with ``none``; keys
    starting with ``slow`` take half a second; keys starting with ``fail`` raise; keys starting
    with ``text`` return a str (a broken loader)."""
    _note(key)
    if key.startswith(b"slow"):
        time.sleep(0.5)
    if key.startswith(b"fail"):
        raise ConnectionError("the database is down")
    if key.startswith(b"none"):
        return None
    if key.startswith(b"text"):
        return "not bytes"  # type: ignore[return-value]
    return b"loaded:" + store.encode() + b":" + key
