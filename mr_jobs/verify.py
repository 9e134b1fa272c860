"""Compare two stores pair by pair (what ``scripts/clone-store`` checks after copying): the
core's streaming diff (:mod:`kvio.diff`), reported as a JSON-able dict."""
from __future__ import annotations

from typing import Any

from kvio.diff import diff_stores
from kvio.reader import StoreReader


def compare_stores(a: StoreReader, b: StoreReader, max_differences: int = 10) -> dict[str, Any]:
    """Walk both stores to the end and count every difference.

    Args:
        a: the source store.
        b: the copy.
        max_differences: how many differences to list.

    Returns:
        ``{"identical", "pairs_a", "pairs_b", "differing", "differences": [...]}`` where each
        listed difference is ``{"kind": "value differs"|"only in A"|"only in B", "key": hex}``.
    """
    result = diff_stores(a, b, keep=max_differences)
    return {"identical": result.identical, "pairs_a": result.pairs_a, "pairs_b": result.pairs_b,
            "differing": result.differing,
            "differences": [{"kind": d.kind, "key": d.key.hex()} for d in result.differences]}
