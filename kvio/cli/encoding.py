"""Byte encodings: how keys and values are escaped, shown and typed (auto, hex, base64)."""
from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator

_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_PIECE = 1 << 16            # bytes escaped at a time: output streams, memory stays flat
_BASE64_PIECE = 3 << 16     # a multiple of 3, so pieces encode without padding in between
_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")
_table: list[str] = []


def _escape_char(ch: str) -> str:
    # surrogateescape turns an undecodable byte back into that byte
    return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogateescape"))


def _escape_table() -> list[str]:
    """A ``str.translate`` table for the Basic Multilingual Plane, built once: the named
    escapes, undecodable bytes (``surrogateescape`` maps them to U+DC80..U+DCFF) as ``\\xNN``,
    other unprintable characters as their UTF-8 bytes ``\\xNN...``; the rest unchanged.
    Translating is one C loop over the text instead of Python work per character."""
    if not _table:
        table = []
        for code in range(0x10000):
            ch = chr(code)
            if ch in _NAMED_ESCAPES:
                table.append(_NAMED_ESCAPES[ch])
            elif 0xDC80 <= code <= 0xDCFF:
                table.append(_escape_char(ch))
            elif 0xD800 <= code <= 0xDFFF or ch.isprintable():
                table.append(ch)  # other surrogates never come out of decoding
            else:
                table.append(_escape_char(ch))
        _table[:] = table
    return _table


def _escape_astral(match: re.Match) -> str:
    ch = match.group()
    return ch if ch.isprintable() else _escape_char(ch)


def _escape_piece(data: bytes) -> str:
    text = data.decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    text = text.translate(_escape_table())
    # Left unprintable: only characters beyond the BMP (unassigned or private planes).
    return text if text.isprintable() else _ASTRAL.sub(_escape_astral, text)


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of about ``size`` bytes, never cutting a UTF-8 sequence (a cut one
    would be shown as escaped bytes instead of its character)."""
    start, n = 0, len(data)
    while start < n:
        end = min(n, start + size)
        cut = end
        while start < cut < n and cut > end - 4 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        if cut == start or (cut < n and data[cut] & 0xC0 == 0x80):
            cut = end  # not valid UTF-8 here anyway: any cut is as good
        yield data[start:cut]
        start = cut


def escape_pieces(data: bytes) -> Iterator[str]:
    """:func:`escape`, a piece at a time (for printing large values in flat memory).

    Args:
        data: any bytes.

    Yields:
        Consecutive pieces of the escaped text.
    """
    for piece in _pieces(data, _PIECE):
        yield _escape_piece(piece)


def escape(data: bytes) -> str:
    """Printable text for any bytes, and one field per line: invalid UTF-8 and unprintable
    characters become ``\\xNN`` (per byte), tab, newline and carriage return ``\\t``,
    ``\\n``, ``\\r``, and the backslash itself is doubled, so every output maps back to
    exactly one byte string. Clean printable text without a backslash comes out unchanged.

    Args:
        data: any bytes.

    Returns:
        The escaped text.
    """
    if len(data) <= _PIECE:
        return _escape_piece(data)
    return "".join(escape_pieces(data))


def display_pieces(data: bytes, encoding: str) -> Iterator[str]:
    """:func:`display`, a piece at a time (for printing large values in flat memory).

    Args:
        data: the bytes to show.
        encoding: ``auto``, ``hex`` or ``base64``.

    Yields:
        Consecutive pieces of the text.
    """
    if encoding == "hex":
        for piece in _pieces(data, _PIECE):
            yield piece.hex()
    elif encoding == "base64":
        for start in range(0, len(data), _BASE64_PIECE):
            yield base64.b64encode(data[start:start + _BASE64_PIECE]).decode("ascii")
    else:
        yield from escape_pieces(data)


def display(data: bytes, encoding: str) -> str:
    """How bytes are shown in text output: hex or base64 when asked for, else :func:`escape`
    (which leaves clean, printable text without a backslash unchanged).

    Args:
        data: the bytes to show.
        encoding: ``auto``, ``hex`` or ``base64``.

    Returns:
        The text.
    """
    if encoding == "auto":
        return escape(data)
    return "".join(display_pieces(data, encoding))


def preview(data: bytes, encoding: str, limit: int = 48) -> str:
    """At most ``limit`` characters of :func:`display`, ending in ``...`` when cut; only the
    first bytes are encoded, so the cost does not depend on the size of ``data``.

    Args:
        data: the bytes to show.
        encoding: ``auto``, ``hex`` or ``base64``.
        limit: the longest result.

    Returns:
        The text, cut to ``limit`` characters.
    """
    text = display(data[:limit], encoding)
    if len(data) > limit or len(text) > limit:
        return text[:limit - 3] + "..."
    return text


def json_field(name: str, data: bytes, encoding: str) -> dict[str, str]:
    """A key or value as a JSON field that says exactly which bytes it holds.

    ``--hex``/``--base64`` give ``{name: encoded}``. Otherwise clean UTF-8 is
    ``{name: text}`` (JSON escapes control characters itself) and anything else is
    ``{name + "_base64": base64}``: the field name tells the two apart.

    Args:
        name: ``key`` or ``value``.
        data: the bytes.
        encoding: ``auto``, ``hex`` or ``base64``.

    Returns:
        A one-item dict.
    """
    if encoding == "hex":
        return {name: data.hex()}
    if encoding == "base64":
        return {name: base64.b64encode(data).decode("ascii")}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


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


def _human_bytes(n: int) -> str:
    size, unit = float(n), "B"
    for name in ("B", "KiB", "MiB", "GiB", "TiB"):
        unit = name
        if size < 1024:
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
