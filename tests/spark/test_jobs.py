"""The spark-submit jobs (build_store, clone_store, export_store) in-process on the shared
session, from the command line as a new user runs them (spark-submit on separate executor
JVMs, plain python), and the Spark scenarios that need a JVM of their own (task retries, a
failed job, automatic discovery)."""
from __future__ import annotations

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kvio
from spark_jobs import build_store, clone_store, compact_store, export_store

from .conftest import ROOT, build, last_json, run_child, staging_files, store_items

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def summary_of(capsys) -> dict:
    return last_json(capsys.readouterr().out)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    n = 500
    pq.write_table(pa.table({"id": list(range(n)), "name": [f"name-{i}" for i in range(n)],
                             "extra": [1.5] * n}), d / "in.parquet")
    with open(d / "in.json", "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"user": f"u{i:03d}", "profile": {"age": i, "tags": ["a"]}}) + "\n")
    with open(d / "in.csv", "w") as fh:
        fh.write("word,count\n" + "".join(f"w{i},{i * 2}\n" for i in range(n)))
    return d, n


def test_build_from_parquet_json_csv(spark, inputs, tmp_path, capsys):
    d, n = inputs
    rc = build_store.main([str(d / "in.parquet"), str(tmp_path / "p"), "--key-col", "id",
                           "--value-col", "name", "--num-partitions", "3", "--json"], spark=spark)
    summary = summary_of(capsys)
    assert rc == 0 and summary["records"] == n and summary["partitions"] == 3
    assert summary["bytes"] > 0 and summary["seconds"] > 0
    assert dict(store_items(tmp_path / "p"))[b"42"] == b"name-42"  # ints keyed as text

    rc = build_store.main([str(d / "in.json"), str(tmp_path / "j"), "--key-col", "user",
                           "--value-col", "profile", "--json"], spark=spark)
    assert rc == 0 and summary_of(capsys)["records"] == n
    assert json.loads(dict(store_items(tmp_path / "j"))[b"u007"]) == {"age": 7, "tags": ["a"]}

    rc = build_store.main([str(d / "in.csv"), str(tmp_path / "c"), "--format", "csv",
                           "--key-col", "word", "--value-col", "count"], spark=spark)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and line.startswith("build_store: ") and f"records={n}" in line
    assert dict(store_items(tmp_path / "c"))[b"w10"] == b"20"

    rc = build_store.main([str(d / "in.csv"), str(tmp_path / "c"), "--format", "csv",
                           "--key-col", "word", "--value-col", "count"], spark=spark)
    assert rc == 1 and "store already exists" in capsys.readouterr().err
    rc = build_store.main([str(d / "in.csv"), str(tmp_path / "c"), "--format", "csv", "--key-col",
                           "word", "--value-col", "count", "--mode", "ignore", "--json"], spark=spark)
    assert rc == 0 and summary_of(capsys)["skipped"] is True
    rc = build_store.main([str(d / "in.csv"), str(tmp_path / "x"), "--format", "csv",
                           "--key-col", "nope", "--value-col", "count"], spark=spark)
    err = capsys.readouterr().err
    assert rc == 1 and "key column 'nope' is not in the input" in err and "Traceback" not in err


def test_clone_and_export(spark, tmp_path, capsys):
    src = str(tmp_path / "src")
    model = build(src, [(b"%05d" % i, b"v%d" % i) for i in range(3000)],
                  {"kvio.partition.size.max": "16KB"})
    newer = str(tmp_path / "newer")
    build(newer, [(b"00001", b"new")])
    kvio.KeyValueSystem().merge_store(newer, src)  # overlapping partitions: newer wins
    model[b"00001"] = b"new"
    for name, extra in (("same-splits", []), ("three", ["--num-partitions", "3"])):
        dest = str(tmp_path / name)
        assert clone_store.main([src, dest, *extra, "--json"], spark=spark) == 0
        summary = summary_of(capsys)
        assert summary["records"] == summary["source_records"] == len(model)
        assert store_items(dest) == sorted(model.items())
        with kvio.KeyValueSystem().open_store(dest) as reader:
            assert reader.manifest.disjoint
        if extra:
            assert summary["partitions"] == 3
    out = str(tmp_path / "out.parquet")
    assert export_store.main([src, out, "--format", "parquet", "--json"], spark=spark) == 0
    summary = summary_of(capsys)
    assert summary["records"] == len(model) and summary["files"] >= 1 and summary["bytes"] > 0
    table = pq.read_table(out)
    assert sorted(zip(table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True)) == \
        sorted(model.items())
    out = str(tmp_path / "out.json")
    assert export_store.main([src, out, "--format", "json", "--key-type", "string",
                              "--value-type", "string"], spark=spark) == 0
    lines = []
    for name in sorted(os.listdir(out)):
        if name.endswith(".json"):
            with open(os.path.join(out, name)) as fh:
                lines.extend(json.loads(line) for line in fh)
    assert sorted((d["key"].encode(), d["value"].encode()) for d in lines) == sorted(model.items())
    assert export_store.main([src, out, "--format", "json"], spark=spark) == 1
    assert "already exists" in capsys.readouterr().err


def test_compact_store(spark, tmp_path, capsys):
    """Updates with deletes stacked on a store, compacted by the Spark job: disjoint partitions
    without tombstones, the same pairs; a publish between planning and publishing is refused."""
    uri = str(tmp_path / "s")
    model = build(uri, [(b"%05d" % i, b"v%d" % i) for i in range(3000)],
                  {"kvio.partition.size.max": "16KB"})
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.max.layers": "0"})
    for n in range(3):
        with kvs.update_store(uri) as u:
            for i in range(n, 3000, 97):
                u.set(b"%05d" % i, b"u%d" % n)
                model[b"%05d" % i] = b"u%d" % n
            for i in range(n + 40, 3000, 131):
                u.delete(b"%05d" % i)
                model.pop(b"%05d" % i, None)
    with kvs.open_store(uri) as before:
        assert not before.manifest.disjoint and any(p.tombstones for p in before.manifest.partitions)
        old_version = before.version
    assert compact_store.main([uri, "--json"], spark=spark) == 0
    summary = summary_of(capsys)
    assert summary["source_version"] == old_version and summary["records"] == len(model)
    with kvs.open_store(uri) as after:
        assert after.manifest.disjoint and not any(p.tombstones for p in after.manifest.partitions)
        assert list(after.items()) == sorted(model.items())
        compacted = after.version

    # expectedVersion: a write planned on an older version publishes nothing
    df = spark.createDataFrame([(b"x", b"y")], "key binary, value binary")
    with pytest.raises(Exception, match="expected to replace version"):
        (df.write.format("kvstore").mode("overwrite").option("writeMode", "overwrite")
         .option("expectedVersion", old_version).save(uri))
    with kvs.open_store(uri) as reader:
        assert reader.version == compacted and list(reader.items()) == sorted(model.items())


def test_bad_arguments_fail_before_spark(tmp_path, capsys):
    """No session fixture: these must fail before any Spark work."""
    missing = str(tmp_path / "missing")
    assert clone_store.main([missing, str(tmp_path / "d")]) == 1
    assert "clone_store: error: no store at this location" in capsys.readouterr().err
    assert export_store.main([missing, str(tmp_path / "d"), "--format", "json"]) == 1
    assert "no store at this location" in capsys.readouterr().err
    assert build_store.main([missing, str(tmp_path / "d"), "--format", "csv"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert build_store.main([str(tmp_path), str(tmp_path / "d")]) == 1
    assert "give --format" in capsys.readouterr().err
    build(str(tmp_path / "s"), [(b"a", b"1")])
    assert clone_store.main([str(tmp_path / "s"), str(tmp_path / "d"), "--num-partitions", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
    assert clone_store.main([str(tmp_path / "s"), str(tmp_path / "d"), "--conf", "kvio.nope=1"]) == 1
    assert "unknown setting 'kvio.nope'" in capsys.readouterr().err
    assert clone_store.main([str(tmp_path / "s"), str(tmp_path / "s")]) == 1
    assert "same store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export_store.main([str(tmp_path / "s"), str(tmp_path / "d"), "--format", "avro"])
    assert exit_info.value.code == 2


# ---- child processes: each starts its own JVM ------------------------------------------------
def test_build_store_with_spark_submit_on_separate_executors(tmp_path):
    """spark-submit, as a user runs it, on local-cluster[2,1,1024]: executor JVMs (and their
    Python workers) write the partitions, the driver commits. No PYTHONPATH for the executors:
    the job puts the checkout on the workers' path itself."""
    n = 3000
    pq.write_table(pa.table({"k": [f"key{i:05d}" for i in range(n)], "v": list(range(n))}),
                   tmp_path / "in.parquet")
    submit = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    done = run_child([submit, "--master", "local-cluster[2,1,1024]",
                      "--conf", "spark.executor.memory=768m",
                      "--properties-file", os.path.join(ROOT, "conf", "spark-defaults.conf"),
                      "spark_jobs/build_store.py", str(tmp_path / "in.parquet"),
                      str(tmp_path / "dest"), "--format", "parquet", "--key-col", "k",
                      "--value-col", "v", "--num-partitions", "3", "--json"], PYTHONPATH="")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = last_json(done.stdout)
    assert summary["records"] == n and summary["partitions"] == 3
    assert store_items(tmp_path / "dest") == [(b"key%05d" % i, b"%d" % i) for i in range(n)]
    assert staging_files(tmp_path / "dest") == []


def test_clone_store_with_python(tmp_path):
    src = str(tmp_path / "src")
    model = build(src, [(b"%04d" % i, b"x" * i) for i in range(1000)])
    done = run_child([sys.executable, "spark_jobs/clone_store.py", src, str(tmp_path / "dest"),
                      "--master", "local[2]", "--json"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_json(done.stdout)["records"] == len(model)
    assert store_items(tmp_path / "dest") == sorted(model.items())
    again = run_child([sys.executable, "spark_jobs/clone_store.py", src, str(tmp_path / "dest")])
    assert again.returncode == 1 and "store already exists" in again.stderr


def test_retries_failures_and_discovery(tmp_path):
    """local[2,3] in a fresh JVM: task 1 fails once after writing partition files and is
    retried; a job whose task 1 always fails; and no register() call at all."""
    done = run_child([sys.executable, "-m", "tests.spark.scenarios", "retry", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    result = last_json(done.stdout)
    assert result["discovered"]  # spark.read.format("kvstore") found pyspark_kvio.DefaultSource
    assert result["retry_failed_after_files"]  # the failure hit an attempt that had written files
    assert result["retry_count"] == 4000 and result["retry_items_ok"]
    assert result["retry_attempts_published"] == {"0": 1, "1": 1}  # exactly one attempt per task
    assert result["retry_staging_files"] == []
    assert result["failed_job_raised"] and not result["failed_job_published"]
    assert result["failed_job_staging_files"] == []


def test_local_paths_with_double_colons_are_paths(tmp_path):
    """The jobs' own file checks read a local 'a::b' as that path (kvio.fs.filesystem_for), not
    as an fsspec chain (which made an existing input 'missing' and export sizes unknown)."""
    from spark_jobs.jobs import JobError
    source = tmp_path / "in::v2.csv"
    source.write_text("key,value\na,1\n")
    build_store._check_input(str(source))  # exists: no error
    with pytest.raises(JobError, match="does not exist"):
        build_store._check_input(str(tmp_path / "gone::v2.csv"))
    out = tmp_path / "out::v2"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"x" * 10)
    (out / "_SUCCESS").write_bytes(b"")
    assert export_store._output_bytes(str(out)) == (1, 10)
