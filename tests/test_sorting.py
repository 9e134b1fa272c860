"""kvio.sorting and kvio.task_writer: dedupe, external sort with spilled runs, and one task's
write of pairs in any order (streaming and sorting paths), through the real committer."""
from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem, layout, sorting
from kvio.committer import Job
from kvio.errors import InvalidArgumentError, KeyOrderError, KvioError
from kvio.task_writer import write_any_order, write_task


def batch(pairs, string: bool = False) -> pa.RecordBatch:
    kind = pa.string() if string else pa.binary()
    conv = (lambda b: b.decode("latin-1")) if string else (lambda b: b)
    return pa.RecordBatch.from_arrays([pa.array([conv(k) for k, _ in pairs], kind),
                                       pa.array([conv(v) for _, v in pairs], kind)],
                                      names=["key", "value"])


def norm(pairs) -> pa.RecordBatch:
    return sorting.normalize_batch(batch(pairs), "key", "value", "s")


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


def pairs_of(batches) -> list[tuple[bytes, bytes]]:
    return [p for b in batches if b is not None
            for p in zip(b.column(0).to_pylist(), b.column(1).to_pylist(), strict=True)]


def resolve(pairs, mode):
    """The model: the kept value per key in arrival order."""
    kept = {}
    for k, v in pairs:
        if mode == "last" or k not in kept:
            kept[k] = v
    return sorted(kept.items())


keys_st = st.binary(max_size=3).map(lambda b: b.replace(b"\x02", b"\xff"))


# ---- dedupe ------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.lists(keys_st, max_size=60), st.lists(st.integers(1, 9), max_size=12),
       st.sampled_from(["first", "last"]))
def test_deduper_keeps_first_or_last(keys, sizes, mode):
    pairs = [(k, b"%d" % i) for i, k in enumerate(keys)]
    ordered = sorted(pairs, key=lambda p: p[0])  # stable: ties keep arrival order
    dedupe = sorting.Deduper(mode, "s")
    out = pairs_of(dedupe.push(norm(part)) for part in chunks(ordered, sizes or [7]))
    out += pairs_of([dedupe.take_held()])
    assert out == resolve(pairs, mode)


def test_deduper_error_names_the_key_across_batches():
    dedupe = sorting.Deduper("error", "s")
    dedupe.push(norm([(b"a", b"1"), (b"dup", b"2")]))
    with pytest.raises(KeyOrderError, match="dup") as info:
        dedupe.push(norm([(b"dup", b"3")]))
    assert info.value.key == b"dup"
    assert "duplicates=first" in str(info.value)


def test_deduper_advice_and_unknown_policy():
    dedupe = sorting.Deduper("error", "s", advice="use --duplicates first or last")
    with pytest.raises(KeyOrderError, match="use --duplicates first or last"):
        dedupe.push(norm([(b"a", b"1"), (b"a", b"2")]))
    with pytest.raises(InvalidArgumentError, match="duplicates must be one of"):
        sorting.Deduper("newest", "s")


# ---- external sort -------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(keys_st, max_size=200), st.integers(1, 600), st.integers(1, 40))
def test_external_sort_is_stable_and_complete(tmp_path_factory, keys, memory, batch_rows):
    spill = str(tmp_path_factory.mktemp("spill"))
    pairs = [(k, b"%d" % i) for i, k in enumerate(keys)]
    with sorting.ExternalSorter(memory, spill) as sorter:
        for part in chunks(pairs, [batch_rows] * (len(pairs) // batch_rows + 1)):
            sorter.add(norm(part))
        # Tiny budgets make many runs, more than one merge takes (fan-in 2): merged in passes.
        out = pairs_of(sorter.merged())
    assert out == sorted(pairs, key=lambda p: p[0])
    assert os.listdir(spill) == []  # runs removed


def test_external_sort_merges_in_passes_when_runs_exceed_the_fan_in(tmp_path):
    pairs = [(b"%05d" % random.Random(i).randrange(10**5), b"%d" % i) for i in range(500)]
    with sorting.ExternalSorter(1, str(tmp_path)) as sorter:
        for part in chunks(pairs, [10] * 50):
            sorter.add(norm(part))
        assert len(sorter.runs) == 50 and sorter.fan_in == 2
        out = pairs_of(sorter.merged())
        assert len(sorter.runs) == 2
    assert out == sorted(pairs, key=lambda p: p[0])
    assert os.listdir(tmp_path) == []


def test_merge_runs_ties_prefer_earlier_runs():
    runs = [[norm([(b"a", b"r0"), (b"b", b"r0")])],
            [norm([(b"a", b"r1")]), norm([(b"b", b"r1")])]]
    assert pairs_of(sorting.merge_runs(runs)) == [(b"a", b"r0"), (b"a", b"r1"), (b"b", b"r0"),
                                                  (b"b", b"r1")]


def test_null_key_and_value_fail_clearly():
    bad = pa.RecordBatch.from_arrays([pa.array([b"a", None]), pa.array([b"1", b"2"])],
                                     names=["key", "value"])
    with pytest.raises(KvioError, match=r"key column 'key' is null in 1 row.*isNotNull"):
        sorting.normalize_batch(bad, "key", "value", "s")
    bad = pa.RecordBatch.from_arrays([pa.array([b"a"]), pa.array([None], pa.binary())],
                                     names=["key", "value"])
    with pytest.raises(KvioError, match="value column 'value' is null"):
        sorting.normalize_batch(bad, "key", "value", "s")


def test_spill_root_prefers_the_setting_then_spark_local_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path}/a,{tmp_path}/b")
    assert sorting.spill_root("/x") == "/x"
    assert sorting.spill_root(None) == f"{tmp_path}/a"
    monkeypatch.delenv("SPARK_LOCAL_DIRS")
    assert os.path.isdir(sorting.spill_root(None))


# ---- one task, end to end through the committer ----------------------------------------------
def write_one(uri, batches, duplicates="error", sort_memory=1 << 30, **conf):
    job = Job.setup(uri, mode="overwrite", conf=conf or None)
    try:
        result = write_any_order(job.ctx, 0, iter(batches), duplicates=duplicates,
                                 sort_memory=sort_memory, spill_dir=os.path.dirname(uri))
        job.commit([result.message], num_tasks=1)
    except BaseException:
        job.abort()
        raise
    return result


def items(uri):
    with KeyValueSystem().open_store(uri) as r:
        return list(r.items()), r.info()


def staging_entries(uri):
    base = os.path.join(uri, layout.STAGING)
    if not os.path.exists(base):
        return []
    return [os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs]


@pytest.mark.parametrize("shape", ["sorted", "sorted-then-not", "shuffled"])
@pytest.mark.parametrize("string_columns", [False, True])
def test_write_any_order(tmp_path, shape, string_columns):
    rng = random.Random(3)
    keys = sorted({rng.randbytes(rng.randint(0, 8)) for _ in range(3000)})
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
    result = write_one(uri, batches, sort_memory=20_000, **{"kvio.partition.size.max": "32KB"})
    got, info = items(uri)
    assert got == sorted(pairs)
    assert info["disjoint"] and len(info["partitions"]) > 2
    assert (result.input_sorted, result.rows_in, result.rows_written) == \
        (shape == "sorted", len(pairs), len(pairs))
    assert staging_entries(uri) == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kvio-sort-")]


@pytest.mark.parametrize("mode", ["first", "last"])
def test_write_any_order_duplicates_in_arrival_order(tmp_path, mode):
    rng = random.Random(9)
    pairs = [(b"k%03d" % rng.randrange(300), b"%d" % i) for i in range(2000)]
    for sort_memory in (1 << 30, 5_000):  # in memory, and spilled runs
        uri = str(tmp_path / f"s{sort_memory}")
        result = write_one(uri, [batch(p) for p in chunks(pairs, [100] * 20)], duplicates=mode,
                           sort_memory=sort_memory)
        assert items(uri)[0] == resolve(pairs, mode)
        assert result.dropped == len(pairs) - len(resolve(pairs, mode))


def test_duplicate_in_one_task_fails_and_cleans_up(tmp_path):
    uri = str(tmp_path / "s")
    job = Job.setup(uri, mode="overwrite")
    with pytest.raises(KeyOrderError, match="duplicates=first"):
        write_task(job.ctx, 0, iter([batch([(b"b", b"1"), (b"a", b"2")]), batch([(b"b", b"3")])]),
                   spill_dir=str(tmp_path))
    job_dir = os.path.join(uri, layout.STAGING, job.ctx.job_id)
    assert os.listdir(job_dir) == []  # neither attempt left files
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kvio-sort-")]
    job.abort()


def test_sort_settings_come_from_the_job_conf(tmp_path):
    """kvio.sort.memory and kvio.sort.spill.dir apply when the caller passes neither."""
    spill = tmp_path / "spill"
    uri = str(tmp_path / "s")
    job = Job.setup(uri, conf={"kvio.sort.memory": "64KB", "kvio.sort.spill.dir": str(spill)})
    seen = []
    real_spill = sorting.ExternalSorter._spill

    def spying_spill(self):
        seen.append(self.spill_root)
        real_spill(self)
    pairs = [(b"%06d" % ((i * 7919) % 20000), b"x" * 40) for i in range(20000)]
    try:
        sorting.ExternalSorter._spill = spying_spill
        message, rows = write_task(job.ctx, 0, [batch(p) for p in chunks(pairs, [1000] * 20)])
    finally:
        sorting.ExternalSorter._spill = real_spill
    job.commit([message], num_tasks=1)
    assert rows == 20000 and len(seen) > 5 and set(seen) == {str(spill)}
    assert os.listdir(spill) == []
    assert items(uri)[0] == sorted(pairs)
