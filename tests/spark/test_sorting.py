"""spark_jobs.sorting and spark_jobs.commit without Spark: dedupe, external sort, one task's
write (streaming and sorting paths) and the driver-side commit."""
from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem, layout
from kvio.committer import Job
from kvio.errors import KeyOrderError, KvioError
from spark_jobs import sorting
from spark_jobs.commit import finish_job
from spark_jobs.scan import SCHEMA


def batch(pairs, string: bool = False) -> pa.RecordBatch:
    kind = pa.string() if string else pa.binary()
    conv = (lambda b: b.decode("latin-1")) if string else (lambda b: b)
    return pa.RecordBatch.from_arrays([pa.array([conv(k) for k, _ in pairs], kind),
                                       pa.array([conv(v) for _, v in pairs], kind)],
                                      names=["key", "value"])


def chunks(items, sizes):
    out, i = [], 0
    for n in sizes:
        if i >= len(items):
            break
        out.append(items[i:i + n])
        i += n
    if i < len(items):
        out.append(items[i:])
    return out


def resolve(pairs, mode):
    """The model: the kept value per key in arrival order."""
    kept = {}
    for k, v in pairs:
        if mode == "last" or k not in kept:
            kept[k] = v
    return sorted(kept.items())


keys_st = st.binary(max_size=3).map(lambda b: b.replace(b"\x02", b"\xff"))


@settings(max_examples=150, deadline=None)
@given(st.lists(keys_st, max_size=60), st.lists(st.integers(1, 9), max_size=12),
       st.sampled_from(["first", "last"]))
def test_deduper_keeps_first_or_last(keys, sizes, mode):
    pairs = [(k, b"%d" % i) for i, k in enumerate(keys)]
    ordered = sorted(pairs, key=lambda p: p[0])  # stable: ties keep arrival order
    dedupe = sorting.Deduper(mode, "s")
    out = []
    for part in chunks(ordered, sizes or [7]):
        got = dedupe.push(sorting.normalize_batch(batch(part), "key", "value", "s"))
        if got is not None:
            out.extend(zip(got.column(0).to_pylist(), got.column(1).to_pylist()))
    tail = dedupe.take_held()
    if tail is not None:
        out.extend(zip(tail.column(0).to_pylist(), tail.column(1).to_pylist()))
    assert out == resolve(pairs, mode)


def test_deduper_error_names_the_key_across_batches():
    dedupe = sorting.Deduper("error", "s")
    dedupe.push(sorting.normalize_batch(batch([(b"a", b"1"), (b"dup", b"2")]), "key", "value", "s"))
    with pytest.raises(KeyOrderError, match="dup") as info:
        dedupe.push(sorting.normalize_batch(batch([(b"dup", b"3")]), "key", "value", "s"))
    assert info.value.key == b"dup"
    assert "duplicates=first" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(keys_st, max_size=200), st.integers(1, 600), st.integers(1, 40))
def test_external_sort_is_stable_and_complete(tmp_path_factory, keys, memory, batch_rows):
    spill = str(tmp_path_factory.mktemp("spill"))
    pairs = [(k, b"%d" % i) for i, k in enumerate(keys)]
    sorter = sorting.ExternalSorter(memory, spill)
    for part in chunks(pairs, [batch_rows] * (len(pairs) // batch_rows + 1)):
        sorter.add(sorting.normalize_batch(batch(part), "key", "value", "s"))
    out = [pair for b in sorter.merged()
           for pair in zip(b.column(0).to_pylist(), b.column(1).to_pylist())]
    assert out == sorted(pairs, key=lambda p: p[0])


def test_merge_runs_ties_prefer_earlier_runs():
    runs = [[sorting.normalize_batch(batch([(b"a", b"r0"), (b"b", b"r0")]), "key", "value", "s")],
            [sorting.normalize_batch(batch([(b"a", b"r1")]), "key", "value", "s"),
             sorting.normalize_batch(batch([(b"b", b"r1")]), "key", "value", "s")]]
    out = [p for b in sorting.merge_runs(runs)
           for p in zip(b.column(0).to_pylist(), b.column(1).to_pylist())]
    assert out == [(b"a", b"r0"), (b"a", b"r1"), (b"b", b"r0"), (b"b", b"r1")]


def test_null_key_and_value_fail_clearly():
    bad = pa.RecordBatch.from_arrays([pa.array([b"a", None]), pa.array([b"1", b"2"])],
                                     names=["key", "value"])
    with pytest.raises(KvioError, match=r"key column 'key' is null in 1 row.*isNotNull"):
        sorting.normalize_batch(bad, "key", "value", "s")
    bad = pa.RecordBatch.from_arrays([pa.array([b"a"]), pa.array([None], pa.binary())],
                                     names=["key", "value"])
    with pytest.raises(KvioError, match="value column 'value' is null"):
        sorting.normalize_batch(bad, "key", "value", "s")


# ---- one task, end to end through the committer ----------------------------------------------
def run_job(uri, task_inputs, duplicates="error", sort_memory=1 << 30, mode="overwrite", **conf):
    """What the data source does: setup on the driver, write_task per task, finish_job."""
    job = Job.setup(uri, mode=mode, conf=conf or None)
    messages = []
    for task_id, batches in enumerate(task_inputs):
        message, _ = sorting.write_task(job.ctx, task_id, iter(batches), duplicates=duplicates,
                                        sort_memory=sort_memory, spill_dir=os.path.dirname(uri))
        messages.append(message)
    return finish_job(job, messages, duplicates)


def items(uri):
    with KeyValueSystem().open_store(uri) as r:
        return list(r.items()), r.manifest


def staging_entries(uri):
    base = os.path.join(uri, layout.STAGING)
    return [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs] if os.path.exists(base) else []


@pytest.mark.parametrize("shape", ["sorted", "sorted-then-not", "shuffled"])
@pytest.mark.parametrize("string_columns", [False, True])
def test_write_task_any_order(tmp_path, shape, string_columns):
    rng = random.Random(3)
    keys = sorted({bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))) for _ in range(3000)})
    if string_columns:
        keys = sorted({k.decode("latin-1").encode("utf-8") for k in keys})
    pairs = [(k, b"v" + k) for k in keys]
    if shape == "sorted-then-not":
        pairs = pairs[:1000] + rng.sample(pairs[1000:], len(pairs) - 1000)
    elif shape == "shuffled":
        pairs = rng.sample(pairs, len(pairs))
    if string_columns:
        batches = [batch([(k.decode("utf-8").encode("latin-1"), v.decode("utf-8").encode("latin-1"))
                          for k, v in part], string=True) for part in chunks(pairs, [333] * 20)]
    else:
        batches = [batch(part) for part in chunks(pairs, [333] * 20)]
    uri = str(tmp_path / "s")
    run_job(uri, [batches], sort_memory=20_000, **{"kvio.partition.size.max": "32KB"})
    got, manifest = items(uri)
    assert got == sorted(pairs)
    assert manifest["disjoint"] and len(manifest["partitions"]) > 2
    assert staging_entries(uri) == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kvio-sort-")]


@pytest.mark.parametrize("mode", ["first", "last"])
def test_write_task_duplicates_in_arrival_order(tmp_path, mode):
    rng = random.Random(9)
    pairs = [(b"k%03d" % rng.randrange(300), b"%d" % i) for i in range(2000)]
    for sort_memory in (1 << 30, 5_000):  # in memory, and spilled runs
        uri = str(tmp_path / f"s{sort_memory}")
        run_job(uri, [[batch(p) for p in chunks(pairs, [100] * 20)]], duplicates=mode,
                sort_memory=sort_memory)
        assert items(uri)[0] == resolve(pairs, mode)


def test_duplicate_in_one_task_fails_and_cleans_up(tmp_path):
    uri = str(tmp_path / "s")
    with pytest.raises(KeyOrderError, match="duplicates=first"):
        run_job(uri, [[batch([(b"b", b"1"), (b"a", b"2")]), batch([(b"b", b"3")])]])
    job_dirs = os.listdir(os.path.join(uri, layout.STAGING))
    assert all(os.listdir(os.path.join(uri, layout.STAGING, d)) == [] for d in job_dirs)


def test_overlapping_tasks_checked_for_shared_keys(tmp_path):
    uri = str(tmp_path / "s")
    tasks = [[batch([(b"a", b"t0"), (b"m", b"t0"), (b"z", b"t0")])],
             [batch([(b"b", b"t1"), (b"m", b"t1")])]]
    with pytest.raises(KeyOrderError, match="two Spark tasks") as info:
        run_job(uri, tasks)
    assert info.value.key == b"m"
    for mode, winner in (("first", b"t0"), ("last", b"t1")):
        run_job(uri, tasks, duplicates=mode)
        got, manifest = items(uri)
        assert dict(got)[b"m"] == winner and len(got) == 4
        assert not manifest["disjoint"]
    record = run_job(uri, [[batch([(b"a", b"1"), (b"c", b"1")])], [batch([(b"b", b"2")])]])
    got, manifest = items(uri)
    assert manifest["count"] == 3 and record["version"] == manifest["version"]


def test_empty_tasks_publish_an_empty_store(tmp_path):
    uri = str(tmp_path / "s")
    run_job(uri, [[], [batch([])]])
    got, manifest = items(uri)
    assert got == [] and manifest["count"] == 0


def test_ignore_mode_writes_nothing(tmp_path):
    uri = str(tmp_path / "s")
    run_job(uri, [[batch([(b"a", b"1")])]])
    before = items(uri)
    assert run_job(uri, [[batch([(b"b", b"2")])]], mode="ignore") is None
    assert items(uri) == before
