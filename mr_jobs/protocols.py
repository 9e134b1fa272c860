"""mrjob protocols that carry arbitrary bytes through line-oriented Hadoop Streaming.

Streaming records are lines: ``\\n`` and ``\\r`` end a record, the first ``\\t`` ends the key,
and mrjob strips trailing ``\\r\\n``. mrjob's own ``RawProtocol`` decodes text on Python 3, so
it is not binary-safe. These protocols encode every byte string so that the encoded form holds
only ``[0-9a-f]`` (keys, hex) or ``[A-Za-z0-9+/=]`` (values, base64), never a separator.

Order: the shuffle sorts *encoded* text. Lowercase hex keeps unsigned byte order (``0-9`` sort
below ``a-f`` and every byte becomes exactly two characters), and the tab that follows an
encoded key sorts below every hex digit, so a key that is a prefix of another still sorts
first when whole lines are compared. Base64 does not keep order, which is why it is used for
values only.
"""
from __future__ import annotations

import binascii
import json
from typing import Any

from kvio.byteslike import as_bytes as _need_bytes

__all__ = [
    "encode_key", "decode_key", "encode_value", "decode_value",
    "HexProtocol", "HexValueProtocol", "SortableBytesProtocol",
    "RoutedPairProtocol", "CommitMessageProtocol",
]

_TAB = b"\t"


def encode_key(key: bytes) -> bytes:
    """Lowercase hex: the encoded keys sort exactly like the raw keys (unsigned bytes)."""
    return binascii.hexlify(_need_bytes(key, "key"))


def decode_key(text: bytes) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a hex-encoded key: {bytes(text[:40])!r} ({exc})") from None


def encode_value(value: bytes) -> bytes:
    """Base64 without a newline: 4/3 of the size instead of hex's 2x, and no separators."""
    return binascii.b2a_base64(_need_bytes(value, "value"), newline=False)


def decode_value(text: bytes) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a base64-encoded value: {bytes(text[:40])!r} ({exc})") from None


def _split2(line: bytes) -> tuple[bytes, bytes]:
    key, sep, value = line.partition(_TAB)
    return key, value


class HexProtocol:
    """``hex(key) TAB hex(value)``; both sides bytes. Simple and sortable (values double in size)."""

    def read(self, line: bytes) -> tuple[bytes, bytes]:
        key, value = _split2(line)
        return decode_key(key), decode_key(value)

    def write(self, key: bytes, value: bytes) -> bytes:
        return encode_key(key) + _TAB + encode_key(value)


class HexValueProtocol:
    """A bare value as hex (key is None), e.g. to read or write binary records as text lines."""

    def read(self, line: bytes) -> tuple[None, bytes]:
        return None, decode_key(line)

    def write(self, key: Any, value: bytes) -> bytes:
        return encode_key(value)


class SortableBytesProtocol:
    """``hex(key) TAB base64(value)``: keys sort like raw bytes, values stay compact."""

    def read(self, line: bytes) -> tuple[bytes, bytes]:
        key, value = _split2(line)
        return decode_key(key), decode_value(value)

    def write(self, key: bytes, value: bytes) -> bytes:
        return encode_key(key) + _TAB + encode_value(value)


class RoutedPairProtocol:
    """The shuffle format of kvio jobs: ``%08x(partition) TAB hex(key) TAB base64(value)``.

    The mrjob key is the output partition id (fixed-width hex, so text order is numeric order);
    the mrjob value is the ``(key, value)`` pair. With ``SORT_VALUES`` every runner sorts by
    partition and then by encoded key (Hadoop: two key fields, partitioned on the first), so a
    reducer sees each partition's pairs contiguous and in unsigned byte order of the raw keys.
    """

    def read(self, line: bytes) -> tuple[int, tuple[bytes, bytes]]:
        parts = line.split(_TAB, 2)
        try:
            partition = int(parts[0], 16)
        except ValueError:
            raise ValueError(f"not a routed pair record: {bytes(line[:40])!r}") from None
        key = decode_key(parts[1]) if len(parts) > 1 else b""
        value = decode_value(parts[2]) if len(parts) > 2 else b""
        return partition, (key, value)

    def write(self, partition: int | None, pair: tuple[bytes, bytes] | EncodedRecords) -> bytes:
        if isinstance(pair, EncodedRecords):
            if partition is None:
                return bytes(pair)
            raise ValueError("a block of encoded records is yielded with the partition None")
        if partition is None:
            raise TypeError("a routed pair needs its output partition, not None")
        key, value = pair
        return b"%08x\t%s\t%s" % (partition, encode_key(key), encode_value(value))

    @staticmethod
    def encode_many(partitions: list[int], keys: list[bytes], values: list[bytes]) -> EncodedRecords:
        """Many records as one block of lines (no final newline). A mapper may yield
        ``(None, block)``: mrjob then writes the block in one call instead of one per pair."""
        hexlify, b64 = binascii.hexlify, binascii.b2a_base64
        return EncodedRecords(b"\n".join([b"%08x\t%s\t%s" % (p, hexlify(k), b64(v, newline=False))
                                          for p, k, v in zip(partitions, keys, values, strict=True)]))


class EncodedRecords(bytes):
    """Lines already in ``RoutedPairProtocol`` format (see ``encode_many``)."""


class CommitMessageProtocol:
    """What a kvio reducer outputs: ``%08x(partition) TAB json(commit message)``.

    JSON is produced with the standard library (mrjob's JSONProtocol picks whichever JSON
    package is installed, so its bytes differ by machine)."""

    def read(self, line: bytes) -> tuple[int, dict]:
        partition, _, doc = line.partition(_TAB)
        return int(partition, 16), json.loads(doc)

    def write(self, partition: int, message: dict) -> bytes:
        return b"%08x\t%s" % (partition, json.dumps(message, sort_keys=True,
                                                    separators=(",", ":")).encode("ascii"))
