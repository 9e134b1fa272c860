"""The one check every API entry point applies to keys and values."""
from __future__ import annotations

from typing import Any

from .errors import ArgumentTypeError


def as_bytes(obj: Any, what: str = "key") -> bytes:
    """``obj`` as bytes: bytes pass through, bytearray/memoryview are copied, anything else
    (None, str, int...) is an ArgumentTypeError (an InvalidArgumentError and a TypeError) that
    says what was expected."""
    if type(obj) is bytes:
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise ArgumentTypeError(f"{what} must be bytes, got {type(obj).__name__}"
                    + (" (encode str with .encode())" if isinstance(obj, str) else ""))
