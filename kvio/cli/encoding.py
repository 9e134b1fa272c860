"""Byte encodings: how keys and values are escaped, shown and typed (auto, hex, base64)."""
from __future__ import annotations

import base64
import binascii
import os


_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape(data: bytes) -> str:
    """Printable text for any bytes: invalid UTF-8 and unprintable characters become \\xNN
    (per byte) and the backslash itself is doubled, so one output line is one field."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte, smuggled through as a surrogate
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def display(data: bytes, encoding: str, for_json: bool = False) -> str:
    """How bytes are shown: forced hex/base64, else text if clean, else escaped. JSON can
    carry control characters itself, so there only invalid UTF-8 needs escaping."""
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return escape(data)
    return text if for_json or text.isprintable() else escape(data)


def decode_text(text: str | bytes, encoding: str) -> bytes:
    """Bytes from an encoded field or argument; ValueError when it is malformed."""
    if encoding == "hex":
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        return bytes.fromhex(text)
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not valid base64 ({exc})") from None
    # os.fsencode undoes the surrogateescape Python applied to argv, so non-UTF-8 arguments
    # reach the store as the exact bytes the shell passed.
    return os.fsencode(text) if isinstance(text, str) else text


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
