"""The Spark ``kvstore`` source and CloneStore on Spark against the model: every store, filter
pushdown on and off, with and without key filters, one or many read splits (local disk)."""
from __future__ import annotations

import pytest

from kvio import KeyValueSystem

from .model import expected_range, range_bounds

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _point_keys(model) -> list[bytes]:
    keys = sorted(model)
    picked = keys[:: max(1, len(keys) // 5)][:5]
    return picked + [k + b"\x00" for k in picked] + [b"absent", b"\xff\xff\xff"]


def _filter(name: str, model):
    """(Spark condition or None, predicate on keys) of the filter ``name``."""
    from pyspark.sql import functions as F
    key = F.col("key")
    if name == "none":
        return None, lambda k: True
    if name == "range":  # from an absent key to a present one, half-open like kvio's ranges
        start, stop, _ = range_bounds("middle", model)
        assert start is not None and stop is not None
        start += b"\x00"
        return (key >= F.lit(start)) & (key < F.lit(stop)), lambda k: start <= k < stop
    if name == "points":  # present and absent keys
        wanted = _point_keys(model)
        return key.isin(wanted), lambda k: k in wanted
    raise ValueError(name)


# (filter, read options, session pushdown): 16 KB splits cut the stores into several pieces
# (partitions and block ranges of one partition); the default makes one split per store.
SPLIT = {"splitSize": "16KB"}
CASES = [("none", {}, True), ("none", SPLIT, True), ("range", SPLIT, True), ("points", SPLIT, True),
         ("range", SPLIT, False)]


@pytest.mark.parametrize("name,options,pushdown", CASES, indirect=["pushdown"],
                         ids=[f"{n}-{'split16KB' if o else 'onesplit'}-pushdown-"
                              f"{'on' if p else 'off'}" for n, o, p in CASES])
def test_source_reads_what_the_model_holds(spark, local_store, name, options, pushdown):
    condition, predicate = _filter(name, local_store.model)
    # A fresh load per query: pyspark 4.3 may reuse a loaded DataFrame's pushed-down plan.
    df = spark.read.format("kvstore").options(**options).load(local_store.uri)
    if condition is not None:
        df = df.where(condition)
    rows = [(bytes(r.key), bytes(r.value)) for r in df.collect()]
    assert len(rows) == len({k for k, _ in rows}), "a key was read twice"
    assert sorted(rows) == [(k, v) for k, v in expected_range(local_store.model) if predicate(k)]


def test_clone_store_on_spark(spark, local_store, tmp_path):
    """spark_jobs/clone_store.py as users run it: the read splits become the new partitions."""
    from spark_jobs import clone_store
    dest = str(tmp_path / "clone")
    assert clone_store.main([local_store.uri, dest, "--json"], spark=spark) == 0
    with KeyValueSystem().open_store(dest) as reader:
        assert list(reader.items()) == sorted(local_store.model.items())
        assert reader.info()["disjoint"]


def test_clone_store_on_spark_into_other_partitions(spark, overlapping_local_store, tmp_path):
    from spark_jobs import clone_store
    dest = str(tmp_path / "clone")
    assert clone_store.main([overlapping_local_store.uri, dest, "--num-partitions", "3", "--json"],
                            spark=spark) == 0
    with KeyValueSystem().open_store(dest) as reader:
        assert list(reader.items()) == sorted(overlapping_local_store.model.items())
