"""kvio.diff: the one streaming store comparison (used by `kvio diff` and clone-store's check),
against a dict model, over batch layouts that do not line up."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem
from kvio.diff import ONLY_IN_A, ONLY_IN_B, VALUE_DIFFERS, Difference, diff_batches, diff_stores


def batches(model: dict[bytes, bytes], sizes: list[int]) -> list[pa.RecordBatch]:
    items = sorted(model.items())
    out, i = [], 0
    for n in sizes or [len(items) or 1]:
        out.append(pa.RecordBatch.from_arrays(
            [pa.array([k for k, _ in items[i:i + n]], pa.large_binary()),
             pa.array([v for _, v in items[i:i + n]], pa.large_binary())], names=["key", "value"]))
        i += n
    if i < len(items):
        out.extend(batches(dict(items[i:]), []))
    return out


def model_diff(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> list[Difference]:
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            out.append(Difference(ONLY_IN_A, k, a[k], None))
        elif k not in a:
            out.append(Difference(ONLY_IN_B, k, None, b[k]))
        elif a[k] != b[k]:
            out.append(Difference(VALUE_DIFFERS, k, a[k], b[k]))
    return out


pairs_st = st.dictionaries(st.binary(max_size=3), st.sampled_from([b"", b"x", b"y", b"\xff"]),
                           max_size=150)


@settings(max_examples=200, deadline=None)
@given(pairs_st, pairs_st, st.lists(st.integers(0, 70), max_size=8),
       st.lists(st.integers(0, 70), max_size=8), st.integers(0, 5))
def test_diff_batches_matches_the_model(a, b, sizes_a, sizes_b, keep):
    # b shares most keys with a, so long equal runs and scattered differences both occur
    b = {**{k: v for k, v in a.items() if hash(k) % 5}, **b}
    expected = model_diff(a, b)
    full = diff_batches(batches(a, sizes_a), batches(b, sizes_b), keep=keep)
    assert full.differences == expected[:keep]
    assert (full.differing, full.pairs_a, full.pairs_b, full.complete) == \
        (len(expected), len(a), len(b), True)
    assert full.equal == len(a) - sum(d.kind != ONLY_IN_B for d in expected)
    assert full.identical == (not expected)
    if expected:
        stop = 1 + len(expected) // 2
        early = diff_batches(batches(a, sizes_a), batches(b, sizes_b), keep=10, stop_after=stop)
        assert early.differing == stop and early.differences == expected[:min(stop, 10)]


def test_many_differences_count_in_bulk_and_stop_exactly():
    a = {b"%06d" % i: b"a" for i in range(50_000)}
    b = {b"%06d" % i: (b"b" if i % 3 == 0 else b"a") for i in range(50_000)}
    b.update({b"x%06d" % i: b"" for i in range(20_000)})
    result = diff_batches(batches(a, [4096] * 20), batches(b, [1000] * 100), keep=3)
    assert result.differing == 16_667 + 20_000 and result.pairs_b == 70_000
    assert [d.key for d in result.differences] == [b"000000", b"000003", b"000006"]
    early = diff_batches(batches(a, [4096] * 20), batches(b, [1000] * 100), stop_after=5)
    assert early.differing == 5 and not early.complete and early.differences[-1].key == b"000012"


def test_diff_stores_reads_two_stores(tmp_path):
    kvs = KeyValueSystem()
    for name, pairs in (("a", {b"k1": b"1", b"k2": b"2"}), ("b", {b"k1": b"1", b"k3": b"3"})):
        with kvs.create_store(str(tmp_path / name)) as w:
            w.put_many(sorted(pairs.items()))
    with kvs.open_store(str(tmp_path / "a")) as ra, kvs.open_store(str(tmp_path / "b")) as rb:
        result = diff_stores(ra, rb)
    assert result.differences == [Difference(ONLY_IN_A, b"k2", b"2", None),
                                  Difference(ONLY_IN_B, b"k3", None, b"3")]
