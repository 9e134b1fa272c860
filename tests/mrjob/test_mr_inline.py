"""KVStoreJob and CloneStore end to end with mrjob's inline runner and real files."""
from __future__ import annotations

import pytest

from kvio import KeyValueSystem, KvioError, StoreExistsError
from mr_jobs.clone_store import CloneStore
from mr_jobs.plan import Router

from .conftest import assert_disjoint_ranges, build_store, hostile_pairs, run_kv_job, store_files, store_items
from .jobs.bad_output import OutOfRangeReducer, StrKeyMapper, WithReducerFinal
from .jobs.country_counts import MRCountryCounts
from .jobs.deleting_reducer import DeletingReducer
from .jobs.failing_reducer import FailingReducer
from .jobs.text_word_count import TextWordCount

SMALL = {"kvio.partition.size.max": "8KB", "kvio.block.size": "512B"}


@pytest.fixture
def hostile_store(tmp_path):
    pairs = hostile_pairs(1500)
    uri = tmp_path / "src"
    build_store(uri, pairs, SMALL)
    return uri, pairs


def test_clone_equals_source_with_hostile_bytes(hostile_store, tmp_path):
    src, pairs = hostile_store
    result = run_kv_job(CloneStore, "inline", [src], tmp_path / "dst")
    assert store_items(tmp_path / "dst") == pairs
    with KeyValueSystem().open_store(str(src)) as reader:
        source_partitions = len(reader.manifest.partitions)
    assert source_partitions > 5
    manifest = assert_disjoint_ranges(tmp_path / "dst")
    assert result["count"] == len(pairs) == manifest.count
    assert result["output_partitions"] == source_partitions  # default: as many as the source
    assert store_files(tmp_path / "dst").count("_staging") == 1  # empty staging dir only
    assert not [f for f in store_files(tmp_path / "dst") if f.startswith("_staging/")]


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_clone_into_other_partition_counts(hostile_store, tmp_path, partitions):
    src, pairs = hostile_store
    dest = tmp_path / f"dst{partitions}"
    result = run_kv_job(CloneStore, "inline", [src], dest, "--output-partitions", str(partitions))
    assert store_items(dest) == pairs
    assert result["output_partitions"] == partitions
    manifest = assert_disjoint_ranges(dest)
    # Each partition file's keys lie inside one router range: ranges are the routing's.
    with KeyValueSystem().open_store(str(dest)) as reader:
        files = {entry.path: entry for entry in reader.manifest.partitions}
        assert len(files) == len(manifest.partitions)
    assert len({p.path.split("/")[0] for p in manifest.partitions}) == partitions


def test_big_partitions_are_read_as_block_ranges(tmp_path):
    pairs = hostile_pairs(3000, seed=9)
    build_store(tmp_path / "src", pairs, {"kvio.block.size": "256B"})  # one partition, many blocks
    result = run_kv_job(CloneStore, "inline", [tmp_path / "src"], tmp_path / "dst",
                        "--split-size", "4KB", "--output-partitions", "4")
    assert result["map_tasks"] > 4
    assert store_items(tmp_path / "dst") == pairs
    assert_disjoint_ranges(tmp_path / "dst")


def test_clone_of_an_empty_store_is_empty(tmp_path):
    build_store(tmp_path / "src", [])
    result = run_kv_job(CloneStore, "inline", [tmp_path / "src"], tmp_path / "dst")
    assert result["count"] == 0 and result["version"]
    assert store_items(tmp_path / "dst") == []


def test_clone_of_one_huge_value(tmp_path):
    pairs = [(b"a", b"x"), (b"big\n\t", bytes(range(256)) * (12 << 12)), (b"z", b"")]  # 12 MiB
    build_store(tmp_path / "src", pairs)
    run_kv_job(CloneStore, "inline", [tmp_path / "src"], tmp_path / "dst", "--output-partitions", "2")
    assert store_items(tmp_path / "dst") == pairs


def test_many_input_stores_and_many_partitions(tmp_path):
    pairs = hostile_pairs(2400, seed=3)
    build_store(tmp_path / "a", pairs[0::2], SMALL)
    build_store(tmp_path / "b", pairs[1::2], SMALL)
    result = run_kv_job(CloneStore, "inline", [tmp_path / "a", tmp_path / "b"], tmp_path / "dst",
                        "--output-partitions", "25")
    assert store_items(tmp_path / "dst") == pairs
    assert result["output_partitions"] == 25
    assert_disjoint_ranges(tmp_path / "dst")


def test_a_failing_reducer_publishes_nothing_and_leaves_no_debris(hostile_store, tmp_path, monkeypatch):
    src, pairs = hostile_store
    monkeypatch.setenv("KVIO_TEST_FAIL_AT", pairs[len(pairs) // 2][0].hex())
    with pytest.raises(RuntimeError, match="failed on purpose"):
        run_kv_job(FailingReducer, "inline", [src], tmp_path / "dst", "--output-partitions", "3")
    assert not (tmp_path / "dst").exists()


def test_a_failing_overwrite_keeps_the_old_version(hostile_store, tmp_path, monkeypatch):
    src, pairs = hostile_store
    dest = tmp_path / "dst"
    build_store(dest, [(b"old", b"version")])
    before = store_files(dest)
    monkeypatch.setenv("KVIO_TEST_FAIL_AT", pairs[-1][0].hex())
    with pytest.raises(RuntimeError):
        run_kv_job(FailingReducer, "inline", [src], dest, "--output-mode", "overwrite")
    assert store_items(dest) == [(b"old", b"version")]
    assert store_files(dest) == before  # the failed job's staging is gone


def test_reruns_converge(hostile_store, tmp_path, monkeypatch):
    src, pairs = hostile_store
    dest = tmp_path / "dst"
    monkeypatch.setenv("KVIO_TEST_FAIL_AT", pairs[3][0].hex())
    with pytest.raises(RuntimeError):
        run_kv_job(FailingReducer, "inline", [src], dest, "--output-partitions", "4")
    monkeypatch.delenv("KVIO_TEST_FAIL_AT")
    first = run_kv_job(FailingReducer, "inline", [src], dest, "--output-partitions", "4")
    with KeyValueSystem().open_store(str(dest)) as reader:
        ranges_1 = [(p.min_key, p.max_key, p.count) for p in reader.manifest.partitions]
    second = run_kv_job(FailingReducer, "inline", [src], dest, "--output-partitions", "4",
                        "--output-mode", "overwrite")
    with KeyValueSystem().open_store(str(dest)) as reader:
        ranges_2 = [(p.min_key, p.max_key, p.count) for p in reader.manifest.partitions]
    assert second["version"] != first["version"] and second["seq"] == first["seq"] + 1
    assert ranges_1 == ranges_2  # same routing, same partitions
    assert store_items(dest) == pairs


def test_output_modes(hostile_store, tmp_path):
    src, pairs = hostile_store
    dest = tmp_path / "dst"
    build_store(dest, [(b"k", b"v")])
    with pytest.raises(StoreExistsError):
        run_kv_job(CloneStore, "inline", [src], dest)
    assert run_kv_job(CloneStore, "inline", [src], dest, "--output-mode", "ignore")["skipped"]
    assert store_items(dest) == [(b"k", b"v")]


def test_the_issue_example_counts_countries_with_a_combiner(tmp_path):
    countries = [b"USA", b"Japan", b"India", b"Brazil", b"Nigeria"]
    users = [(b"user%06d" % i, countries[i * 7 % 5]) for i in range(3000)]
    build_store(tmp_path / "users", users, SMALL)
    run_kv_job(MRCountryCounts, "inline", [tmp_path / "users"], tmp_path / "counts",
               "--output-partitions", "3")
    expected = sorted((c, b"%d" % sum(1 for _, v in users if v == c)) for c in countries)
    assert store_items(tmp_path / "counts") == expected


def test_text_input_builds_a_store(tmp_path):
    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox\njumps over the lazy dog\nthe end\n")
    points = tmp_path / "points.txt"
    points.write_text(b"f".hex() + "\n" + b"p".hex() + "\n")
    run_kv_job(TextWordCount, "inline", [text], tmp_path / "counts", "--split-points", str(points))
    assert dict(store_items(tmp_path / "counts")) == {
        b"brown": b"1", b"dog": b"1", b"end": b"1", b"fox": b"1", b"jumps": b"1", b"lazy": b"1",
        b"over": b"1", b"quick": b"1", b"the": b"3"}
    manifest = assert_disjoint_ranges(tmp_path / "counts")
    assert len(manifest.partitions) == 3


def test_text_input_needs_split_points_for_several_partitions(tmp_path):
    text = tmp_path / "words.txt"
    text.write_text("a b\n")
    with pytest.raises(KvioError, match="split-points"):
        run_kv_job(TextWordCount, "inline", [text], tmp_path / "out", "--output-partitions", "3")
    assert not (tmp_path / "out").exists()


def test_split_points_from_another_store(hostile_store, tmp_path):
    src, pairs = hostile_store
    run_kv_job(CloneStore, "inline", [src], tmp_path / "a", "--output-partitions", "5")
    run_kv_job(CloneStore, "inline", [src], tmp_path / "b", "--split-points-from", str(tmp_path / "a"),
               "--output-partitions", "5")
    with KeyValueSystem().open_store(str(tmp_path / "b")) as reader:
        assert len(reader.manifest.partitions) == 5
    assert store_items(tmp_path / "b") == pairs


def test_reducer_leaving_its_range_publishes_nothing(hostile_store, tmp_path):
    src, _ = hostile_store
    with pytest.raises(KvioError, match="belongs to output partition"):
        run_kv_job(OutOfRangeReducer, "inline", [src], tmp_path / "dst", "--output-partitions", "3")
    assert not (tmp_path / "dst").exists()


def test_mapper_yielding_text_is_a_clear_error(hostile_store, tmp_path):
    src, _ = hostile_store
    with pytest.raises(TypeError, match="keys and values of a kvio store are bytes"):
        run_kv_job(StrKeyMapper, "inline", [src], tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_router_matches_the_published_ranges(hostile_store, tmp_path):
    """Keys of each published partition route to one and the same partition id."""
    src, pairs = hostile_store
    run_kv_job(CloneStore, "inline", [src], tmp_path / "dst", "--output-partitions", "6")
    with KeyValueSystem().open_store(str(tmp_path / "dst")) as reader:
        entries = reader.manifest.partitions
        ids = sorted(int(e.path.split("-")[1]) for e in entries)
        assert ids == list(range(6))  # attempt dirs are named by partition id
        mins = sorted(e.min_key for e in entries)
    router = Router(mins[1:])
    assert [router(m) for m in mins] == list(range(6))


def test_unsupported_hooks_are_refused(hostile_store, tmp_path):
    src, _ = hostile_store
    with pytest.raises(KvioError, match="reducer_final is not supported"):
        run_kv_job(WithReducerFinal, "inline", [src], tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("split_size", ["256MB", "16KB"])
def test_merged_store_gives_mappers_each_key_once_with_its_winning_value(tmp_path, split_size):
    """Issue 9's defect: map input ignored partition priority, so a merged store's mappers saw
    superseded values (CloneStore failed on 'two values for one key', and an aggregating job
    published wrong counts)."""
    # 6 partitions of many small blocks: with 16KB splits the overlapping groups are cut into 8
    # key-range pieces, each a separate map task merging by priority
    kvs = KeyValueSystem(conf={"kvio.partition.size.max": "24KB", "kvio.block.size": "256B"})
    old = {b"k%04d" % i: b"old" for i in range(1000)}
    new = {b"k%04d" % i: b"new" for i in range(0, 1000, 2)}
    with kvs.create_store(str(tmp_path / "a")) as w:
        w.put_many(sorted(old.items()))
    with kvs.create_store(str(tmp_path / "b")) as w:
        w.put_many(sorted(new.items()))
    kvs.merge_store(str(tmp_path / "b"), str(tmp_path / "a"))
    model = {**old, **new}
    result = run_kv_job(CloneStore, "inline", [tmp_path / "a"], tmp_path / "c", "--split-size", split_size)
    assert store_items(tmp_path / "c") == sorted(model.items())
    assert result["count"] == 1000
    # An aggregating job (count per value) must count each key's winning value once.
    run_kv_job(MRCountryCounts, "inline", [tmp_path / "a"], tmp_path / "counts", "--split-size", split_size)
    assert dict(store_items(tmp_path / "counts")) == {b"new": b"500", b"old": b"500"}


@pytest.mark.parametrize("args, message", [
    (("--split-size", "0"), "split-size must be at least 1 byte"),
    (("--split-size", "lots"), "cannot parse size"),
    (("--split-points", "/missing/points.txt"), "cannot read the split points file /missing/points.txt"),
])
def test_bad_driver_options_are_clear_errors(hostile_store, tmp_path, args, message):
    """Issue 10 item 14: these were tracebacks."""
    src, _ = hostile_store
    with pytest.raises(KvioError, match=message):
        run_kv_job(CloneStore, "inline", [src], tmp_path / "dst", *args)
    assert not (tmp_path / "dst").exists()


def test_bad_driver_options_exit_1_with_one_line(hostile_store, tmp_path):
    import subprocess
    import sys
    src, _ = hostile_store
    proc = subprocess.run([sys.executable, "-m", "mr_jobs.clone_store", "-r", "inline", str(src),
                           "--output-store", str(tmp_path / "dst"), "--split-size", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "split-size must be at least 1 byte" in proc.stderr


def test_the_job_pins_its_input_version_while_it_runs(tmp_path, monkeypatch):
    from kvio import pins
    from kvio.fs import FileIO

    from .jobs.republishing_mapper import INPUT_ENV, RepublishingMapper
    pairs = hostile_pairs(1500, seed=3)
    src = tmp_path / "src"
    build_store(src, pairs, SMALL)
    planned = KeyValueSystem().versions(str(src))[-1]["version"]
    monkeypatch.setenv(INPUT_ENV, str(src))
    RepublishingMapper.published = False
    result = run_kv_job(RepublishingMapper, "inline", [src], tmp_path / "dst", "--split-size", "4KB")
    assert RepublishingMapper.published and result["map_tasks"] > 3
    assert store_items(tmp_path / "dst") == pairs  # later map tasks still read the planned version
    assert store_items(src) == [(b"only", b"new2")]
    assert pins.scan(FileIO(str(src))) == []       # released when the job ended
    no_grace = KeyValueSystem(conf={"kvio.gc.grace": "0", "kvio.versions.retain": "1"})
    assert no_grace.gc(str(src), older_than=0)["versions"] == [planned]


def test_append_job_whose_reducer_yields_none_deletes_keys(tmp_path):
    """--output-mode append: (key, None) from the reducer deletes the key from the store it
    appends to; other pairs are set (new values win); deleting an absent key is fine."""
    dest, src = tmp_path / "dst", tmp_path / "src"
    build_store(dest, [(b"k%03d" % i, b"old") for i in range(100)], SMALL)
    changes = [(b"k%03d" % i, b"del" if i % 3 == 0 else b"new") for i in range(50, 150)]
    build_store(src, changes, SMALL)
    result = run_kv_job(DeletingReducer, "inline", [src], dest, "--output-mode", "append")
    model = {b"k%03d" % i: b"old" for i in range(100)}
    for k, v in changes:
        if v == b"del":
            model.pop(k, None)
        else:
            model[k] = v
    assert dict(store_items(dest)) == model
    with KeyValueSystem().open_store(str(dest)) as reader:
        assert reader.get(b"k051") is None and reader.get(b"k052") == b"new"
        assert any(p.tombstones for p in reader.manifest.partitions)
        assert result["seq"] == 2
        reader.verify()
