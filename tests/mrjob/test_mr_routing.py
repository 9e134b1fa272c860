"""Output routing: order-preserving key ranges, identical in every process."""
from __future__ import annotations

import subprocess
import sys
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mr_jobs.plan import Router, choose_split_points

keys = st.lists(st.binary(max_size=12), max_size=200)


@given(keys=keys, n=st.integers(1, 40))
def test_split_points_are_increasing_quantiles(keys, n):
    points = choose_split_points(keys, n)
    assert len(points) <= max(0, n - 1)
    assert all(a < b for a, b in pairwise(points))
    if keys:
        assert all(p > min(keys) for p in points)  # partition 0 is never empty
    assert set(points) <= set(keys)


@given(keys=keys, sample=keys, n=st.integers(1, 20))
def test_routing_is_monotone_so_ranges_are_disjoint(keys, sample, n):
    router = Router(choose_split_points(sample, n))
    ordered = sorted(set(keys))
    routes = [router(k) for k in ordered]
    assert routes == sorted(routes)
    assert all(0 <= r < router.num_partitions for r in routes)
    for k, r in zip(ordered, routes, strict=True):
        low, high = router.bounds(r)
        assert (low is None or low <= k) and (high is None or k < high)


def test_router_rejects_unsorted_points():
    with pytest.raises(ValueError):
        Router([b"b", b"a"])


def test_routing_does_not_depend_on_the_process():
    """No salted hash(): another interpreter with another PYTHONHASHSEED routes the same."""
    points = [b"\x00\t", b"c", b"m\n", b"z\xff"]
    probe = [b"", b"\x00", b"\x00\t", b"b", b"c", b"m", b"m\n\x00", b"zz", b"\xff"]
    mine = [Router(points)(k) for k in probe]
    code = ("import sys; from mr_jobs.plan import Router; "
            f"print(list(map(Router({points!r}), {probe!r})))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)},
                             check=True).stdout
        assert out.strip() == str(mine)
    assert mine == [0, 0, 1, 1, 2, 2, 3, 3, 4]
