"""Compare two stores pair by pair (what ``scripts/clone-store`` checks after copying)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import pyarrow as pa

from kvio.reader import StoreReader


class _Cursor:
    """Walks a store's batches; compares whole aligned windows at Arrow speed."""

    def __init__(self, batches: Iterable[pa.RecordBatch]):
        self._batches: Iterator[pa.RecordBatch] = iter(batches)
        self.keys = self.values = None
        self.pos = 0
        self._load()

    def _load(self) -> None:
        self.pos = 0
        for batch in self._batches:
            if batch.num_rows:
                self.keys, self.values = batch.column(0), batch.column(1)
                return
        self.keys = self.values = None

    @property
    def done(self) -> bool:
        return self.keys is None

    @property
    def left(self) -> int:
        return len(self.keys) - self.pos

    def window(self, n: int) -> tuple[pa.Array, pa.Array]:
        return self.keys.slice(self.pos, n), self.values.slice(self.pos, n)

    def head(self) -> tuple[bytes, bytes]:
        return self.keys[self.pos].as_py(), self.values[self.pos].as_py()

    def advance(self, n: int = 1) -> None:
        self.pos += n
        if self.pos >= len(self.keys):
            self._load()


def compare_stores(a: StoreReader, b: StoreReader, max_differences: int = 10) -> dict[str, Any]:
    """``{"identical", "pairs_a", "pairs_b", "differences": [...]}`` where each difference is
    ``{"kind": "value differs"|"only in A"|"only in B", "key": hex}`` (first few only)."""
    ca, cb = _Cursor(a.batches()), _Cursor(b.batches())
    count_a = count_b = 0
    diffs: list[dict[str, str]] = []
    differing = 0

    def note(kind: str, key: bytes) -> None:
        nonlocal differing
        differing += 1
        if len(diffs) < max_differences:
            diffs.append({"kind": kind, "key": key.hex()})

    while not ca.done and not cb.done:
        n = min(ca.left, cb.left)
        ka, va = ca.window(n)
        kb, vb = cb.window(n)
        if ka.equals(kb) and va.equals(vb):
            ca.advance(n)
            cb.advance(n)
            count_a += n
            count_b += n
            continue
        (key_a, value_a), (key_b, value_b) = ca.head(), cb.head()
        if key_a == key_b:
            if value_a != value_b:
                note("value differs", key_a)
            ca.advance()
            cb.advance()
            count_a += 1
            count_b += 1
        elif key_a < key_b:
            note("only in A", key_a)
            ca.advance()
            count_a += 1
        else:
            note("only in B", key_b)
            cb.advance()
            count_b += 1
    for cursor, kind in ((ca, "only in A"), (cb, "only in B")):
        while not cursor.done:
            note(kind, cursor.head()[0])
            if kind == "only in A":
                count_a += 1
            else:
                count_b += 1
            cursor.advance()
    return {"identical": differing == 0, "pairs_a": count_a, "pairs_b": count_b,
            "differing": differing, "differences": diffs}
