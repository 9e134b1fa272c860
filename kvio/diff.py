"""Comparing two stores (or any two key-ordered batch streams) pair by pair, streaming.

``kvio diff`` and ``scripts/clone-store`` (through :mod:`mr_jobs.verify`) both use
:func:`diff_batches`. Both sides are walked in key order a window at a time: where they agree
the whole window is compared at Arrow speed; the window shrinks around a difference and grows
again while they agree, so the cost stays linear however many pairs differ. Memory is one batch
of each side plus the differences kept.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["VALUE_DIFFERS", "ONLY_IN_A", "ONLY_IN_B", "Difference", "DiffResult", "diff_batches",
           "diff_stores"]

VALUE_DIFFERS = "value differs"
ONLY_IN_A = "only in A"
ONLY_IN_B = "only in B"
_MIN_WINDOW = 64  # rows compared right after a difference; doubled while the sides agree


@dataclass(frozen=True)
class Difference:
    """One key where the stores disagree.

    Attributes:
        kind: :data:`VALUE_DIFFERS`, :data:`ONLY_IN_A` or :data:`ONLY_IN_B`.
        key: the key.
        value_a: its value in A (None when only in B).
        value_b: its value in B (None when only in A).
    """
    kind: str
    key: bytes
    value_a: bytes | None
    value_b: bytes | None


@dataclass
class DiffResult:
    """What a comparison found.

    Attributes:
        pairs_a: pairs of A walked.
        pairs_b: pairs of B walked.
        equal: pairs found equal in both.
        differing: differences found (all of them when the walk was complete).
        differences: the first differences, in key order (at most the number asked for).
        complete: False when the walk stopped early (``stop_after``) with pairs left unread.
    """
    pairs_a: int = 0
    pairs_b: int = 0
    equal: int = 0
    differing: int = 0
    differences: list[Difference] = field(default_factory=list)
    complete: bool = True

    @property
    def identical(self) -> bool:
        """True when no difference was found (and, if complete, none exists)."""
        return self.differing == 0


class _Cursor:
    """Walks one side's batches: windows of rows for bulk comparison, single rows otherwise."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self._batches: Iterator[pa.RecordBatch] = iter(batches)
        self.keys: pa.Array | None = None
        self.values: pa.Array | None = None
        self.pos = 0
        self._load()

    def _load(self) -> None:
        self.pos = 0
        self.keys = self.values = None
        for batch in self._batches:
            if batch.num_rows:
                self.keys, self.values = batch.column(0), batch.column(1)
                return

    @property
    def done(self) -> bool:
        return self.keys is None

    @property
    def left(self) -> int:
        return 0 if self.keys is None else len(self.keys) - self.pos

    def window(self, n: int) -> tuple[pa.Array, pa.Array]:
        assert self.keys is not None and self.values is not None
        return self.keys.slice(self.pos, n), self.values.slice(self.pos, n)

    def key(self) -> bytes:
        assert self.keys is not None
        return self.keys[self.pos].as_py()

    def value(self) -> bytes:
        assert self.values is not None
        return self.values[self.pos].as_py()

    def advance(self, n: int = 1) -> None:
        self.pos += n
        if self.keys is not None and self.pos >= len(self.keys):
            self._load()


class _Walk:
    """The state of one comparison: counts, kept differences and when to stop."""

    def __init__(self, keep: int, stop_after: int | None, on_rows: Callable[[int], Any] | None):
        self.result = DiffResult()
        self.keep = keep
        self.stop_after = stop_after
        self.report = on_rows or (lambda n: None)

    @property
    def stopped(self) -> bool:
        return self.stop_after is not None and self.result.differing >= self.stop_after

    def found(self, kind: str, key: bytes, value_a: bytes | None, value_b: bytes | None) -> None:
        self.result.differing += 1
        if len(self.result.differences) < self.keep:
            self.result.differences.append(Difference(kind, key, value_a, value_b))

    def aligned(self, a: _Cursor, b: _Cursor, n: int) -> None:
        """The next ``n`` rows of both sides have equal keys: count value differences in bulk
        (keeping the first few), stopping exactly at ``stop_after``."""
        ka, va = a.window(n)
        _, vb = b.window(n)
        if va.equals(vb):
            upto, diffs = n, []
        else:
            positions = pc.indices_nonzero(pc.not_equal(va, vb))
            if self.stop_after is not None:
                positions = positions.slice(0, self.stop_after - self.result.differing)
            diffs = positions.to_pylist()
            full = self.stop_after is not None and \
                self.result.differing + len(diffs) >= self.stop_after
            upto = diffs[-1] + 1 if full else n
        room = max(0, self.keep - len(self.result.differences))
        for i in diffs[:room]:
            self.result.differences.append(Difference(VALUE_DIFFERS, ka[i].as_py(), va[i].as_py(),
                                                      vb[i].as_py()))
        r = self.result
        r.differing += len(diffs)
        r.equal += upto - len(diffs)
        r.pairs_a += upto
        r.pairs_b += upto
        a.advance(upto)
        b.advance(upto)
        self.report(upto)

    def rest(self, cursor: _Cursor, kind: str) -> None:
        """The other side ended: every remaining row of ``cursor`` is a difference."""
        r = self.result
        while not cursor.done and not self.stopped:
            if self.stop_after is None and len(r.differences) >= self.keep:
                n = cursor.left  # nothing more to keep or stop at: count the batch in bulk
                r.differing += n
            else:
                n = 1
                value = cursor.value()
                pair = (value, None) if kind == ONLY_IN_A else (None, value)
                self.found(kind, cursor.key(), *pair)
            if kind == ONLY_IN_A:
                r.pairs_a += n
                self.report(n)
            else:
                r.pairs_b += n
            cursor.advance(n)


def diff_batches(a: Iterable[pa.RecordBatch], b: Iterable[pa.RecordBatch], *,
                 keep: int = 10, stop_after: int | None = None,
                 on_rows: Callable[[int], Any] | None = None) -> DiffResult:
    """Compare two key-ordered streams of (key, value) batches.

    Args:
        a: batches of side A (key column first, value second), strictly increasing keys.
        b: batches of side B, likewise.
        keep: how many differences to keep in :attr:`DiffResult.differences`.
        stop_after: stop walking once this many differences were found (None: walk both
            sides to the end and count every difference).
        on_rows: called with a number of rows of A walked, for progress.

    Returns:
        The counts and the first differences.
    """
    ca, cb = _Cursor(a), _Cursor(b)
    walk = _Walk(keep, stop_after, on_rows)
    r = walk.result
    window = _MIN_WINDOW
    while not ca.done and not cb.done and not walk.stopped:
        n = min(ca.left, cb.left, window)
        ka, _ = ca.window(n)
        kb, _ = cb.window(n)
        same = n if ka.equals(kb) else int(pc.index(pc.equal(ka, kb), False).as_py())
        if same:
            walk.aligned(ca, cb, same)
        if same == n or walk.stopped:
            window *= 2
            continue
        window = _MIN_WINDOW  # a key only one side has: look closely around it
        key_a, key_b = ca.key(), cb.key()
        if key_a < key_b:  # bytes compare unsigned, like the store order
            walk.found(ONLY_IN_A, key_a, ca.value(), None)
            ca.advance()
            r.pairs_a += 1
            walk.report(1)
        else:
            walk.found(ONLY_IN_B, key_b, None, cb.value())
            cb.advance()
            r.pairs_b += 1
    walk.rest(ca, ONLY_IN_A)
    walk.rest(cb, ONLY_IN_B)
    r.complete = ca.done and cb.done
    return r


def diff_stores(a: Any, b: Any, **options: Any) -> DiffResult:
    """Compare two open stores (:class:`kvio.reader.StoreReader`) in key order.

    Args:
        a: side A.
        b: side B.
        **options: passed to :func:`diff_batches` (``keep``, ``stop_after``, ``on_rows``).

    Returns:
        The counts and the first differences.
    """
    return diff_batches(a.batches(), b.batches(), **options)
