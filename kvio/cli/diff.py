"""Diff: comparing two stores in key order, in bulk where they agree."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc


class _BatchCursor:
    """Walks a store's Arrow batches: in bulk while two stores agree, row by row where not."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self._batches = iter(batches)
        self._keys = self._values = None
        self._pos = self._len = 0
        self._next_batch()

    def _next_batch(self) -> None:
        self._keys = self._values = None
        for batch in self._batches:
            if batch.num_rows:
                self._keys, self._values = batch.column(0), batch.column(1)
                self._pos, self._len = 0, batch.num_rows
                return

    @property
    def done(self) -> bool:
        return self._keys is None

    @property
    def available(self) -> int:
        return self._len - self._pos

    def window(self, n: int) -> tuple[pa.Array, pa.Array]:
        return self._keys.slice(self._pos, n), self._values.slice(self._pos, n)

    def head(self) -> tuple[bytes, bytes]:
        return self._keys[self._pos].as_py(), self._values[self._pos].as_py()

    def advance(self, n: int) -> None:
        self._pos += n
        if self._pos >= self._len:
            self._next_batch()


def _equal_run(a: _BatchCursor, b: _BatchCursor) -> tuple[int, int]:
    """(rows compared, leading rows where both keys and values are equal) of the next window."""
    n = min(a.available, b.available)
    ka, va = a.window(n)
    kb, vb = b.window(n)
    same = pc.and_(pc.equal(ka, kb), pc.equal(va, vb))
    return n, (n if pc.all(same).as_py() else pc.index(same, False).as_py())


def diff_cursors(a: _BatchCursor, b: _BatchCursor, max_diffs: int,
                 on_rows: Callable[[int], Any] = lambda n: None) -> tuple[int, list[tuple], bool]:
    """(equal pairs seen, first differences as (kind, key, value_a, value_b), truncated)."""
    diffs: list[tuple] = []
    equal = 0
    while not a.done and not b.done and len(diffs) < max_diffs:
        n, run = _equal_run(a, b)
        a.advance(run)
        b.advance(run)
        equal += run
        on_rows(run)
        if run == n:
            continue
        (ka, va), (kb, vb) = a.head(), b.head()
        if ka == kb:
            diffs.append(("value differs", ka, va, vb))
            a.advance(1)
            b.advance(1)
        elif ka < kb:  # bytes compare unsigned, like the store order
            diffs.append(("only in A", ka, va, None))
            a.advance(1)
        else:
            diffs.append(("only in B", kb, None, vb))
            b.advance(1)
        on_rows(1)
    for cursor, kind in ((a, "only in A"), (b, "only in B")):
        while not cursor.done and len(diffs) < max_diffs:
            key, value = cursor.head()
            diffs.append((kind, key, value, None) if kind == "only in A" else (kind, key, None, value))
            cursor.advance(1)
    return equal, diffs, not (a.done and b.done)
