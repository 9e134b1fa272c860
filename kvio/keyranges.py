"""Key ranges: sorted, disjoint, half-open intervals ``[start, stop)`` of keys.

Keys compare in unsigned byte order; ``None`` means unbounded (a ``start`` of ``None`` is the
same as ``b""``). Filters pushed down by engines (Spark's ``key = x``, ``IN``, ranges,
prefixes), the reader's ``start``/``stop``/``prefix`` arguments and the planner all speak this
one representation, so pruning is exact: a read limited to the ranges returns exactly the
keys they hold.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

Range = tuple["bytes | None", "bytes | None"]
#: every key
ALL: list[Range] = [(None, None)]
#: no key
NOTHING: list[Range] = []


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _max_start(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


def _min_stop(a: bytes | None, b: bytes | None) -> bytes | None:
    if a is None:
        return b
    return a if b is None or a <= b else b


def nonempty(start: bytes | None, stop: bytes | None) -> bool:
    """Whether ``[start, stop)`` holds at least one key."""
    return start is None or stop is None or start < stop


def normalize(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, disjoint, non-empty ranges covering the same keys (adjacent ones joined)."""
    items = [(s or None, e) for s, e in ranges if nonempty(s or None, e)]
    items.sort(key=lambda r: (r[0] is not None, r[0] or b""))
    out: list[Range] = []
    for start, stop in items:
        if out:
            prev_start, prev_stop = out[-1]
            if prev_stop is None:
                break  # the previous range already runs to the end
            if start is None or start <= prev_stop:
                out[-1] = (prev_start, None if stop is None else max(prev_stop, stop))
                continue
        out.append((start, stop))
    return out


def intersect(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Keys in both (both arguments normalized)."""
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, stop = _max_start(a[i][0], b[j][0]), _min_stop(a[i][1], b[j][1])
        if nonempty(start, stop):
            out.append((start, stop))
        a_stop, b_stop = a[i][1], b[j][1]
        if b_stop is None or (a_stop is not None and a_stop <= b_stop):
            i += 1
        else:
            j += 1
    return out


def union(a: Sequence[Range], b: Sequence[Range]) -> list[Range]:
    """Keys in either."""
    return normalize(list(a) + list(b))


def complement(ranges: Sequence[Range]) -> list[Range]:
    """Keys not in ``ranges`` (normalized)."""
    out: list[Range] = []
    previous: bytes | None = None
    for start, stop in ranges:
        if start is not None and (previous is None or previous < start):
            out.append((previous, start))
        if stop is None:
            return out
        previous = stop
    out.append((previous, None))
    return out


def point(key: bytes) -> list[Range]:
    """Just ``key``: the next key in byte order is ``key + b"\\x00"``."""
    return [(key or None, key + b"\x00")]


def prefix(pre: bytes) -> list[Range]:
    """Every key starting with ``pre``."""
    return normalize([(pre, prefix_successor(pre))])


def at_least(key: bytes, inclusive: bool) -> list[Range]:
    """Keys above ``key`` (or equal, when ``inclusive``)."""
    return normalize([(key if inclusive else key + b"\x00", None)])


def below(key: bytes, inclusive: bool) -> list[Range]:
    """Keys below ``key`` (or equal, when ``inclusive``)."""
    return normalize([(None, key + b"\x00" if inclusive else key)])


def bounded(start: bytes | None, stop: bytes | None, pre: bytes | None) -> list[Range]:
    """The ranges of a reader call's ``start``/``stop``/``prefix`` arguments (all optional)."""
    ranges = normalize([(start, stop)])
    if pre is not None:
        ranges = intersect(ranges, prefix(pre))
    return ranges


def touches(ranges: Sequence[Range], low: bytes, high: bytes) -> bool:
    """Whether any range holds a key in the closed interval [low, high]."""
    lo, hi = 0, len(ranges)
    while lo < hi:  # first range whose stop is above ``low``
        mid = (lo + hi) // 2
        stop = ranges[mid][1]
        if stop is not None and stop <= low:
            lo = mid + 1
        else:
            hi = mid
    if lo == len(ranges):
        return False
    start = ranges[lo][0]
    return start is None or start <= high


def clip(ranges: Sequence[Range], low: bytes | None, high_inclusive: bytes | None,
         start: bytes | None = None, stop: bytes | None = None) -> list[Range]:
    """``ranges`` limited to keys in [low, high_inclusive] and [start, stop)."""
    held = normalize([(_max_start(start, low),
                       _min_stop(stop, None if high_inclusive is None else high_inclusive + b"\x00"))])
    return intersect(ranges, held)
