"""Spark scenarios that need a JVM of their own, run by test_jobs_and_failures.py as a child:

    python -m tests.spark.scenarios retry WORKDIR    # local[2,3]: task retries, failed job, discovery

It prints one JSON object of observations on its last line; the test asserts on it. (Separate
executor JVMs, local-cluster[2,1,1024], are exercised by running build_store.py with
spark-submit.)
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any

FAIL_AFTER_FILE_TIMEOUT = 20.0


def _session(master: str, **conf: str):
    from pyspark.sql import SparkSession
    builder = (SparkSession.builder.master(master).appName("kvio-scenario")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2"))
    for name, value in conf.items():
        builder = builder.config(name, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("OFF")
    return spark


def _rows(spark, n: int, parts: int):
    """n rows with sorted keys per partition (so the writer streams them to disk at once)."""
    from pyspark.sql import functions as F
    return spark.range(0, n, numPartitions=parts).select(
        F.format_string("k%07d", "id").alias("key"), F.repeat(F.lit("v"), 200).alias("value"))


def _fail_in_partition_1(store: str, always: bool):
    """A Python UDF on the value that makes task 1 fail once the kvio writer of the same task
    has finished at least one partition file (so the failed attempt really leaves files)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType
    seen: dict[int, int] = {}

    def passthrough(value: str) -> str:
        from pyspark import TaskContext
        ctx = TaskContext.get()
        if ctx.partitionId() == 1 and (always or ctx.attemptNumber() == 0):
            n = seen[ctx.taskAttemptId()] = seen.get(ctx.taskAttemptId(), 0) + 1
            if n == 1000:
                deadline = time.time() + FAIL_AFTER_FILE_TIMEOUT
                pattern = os.path.join(store, "_staging", "*", "task-00001-*", "*.kvp")
                while not glob.glob(pattern) and time.time() < deadline:
                    time.sleep(0.05)
                if glob.glob(pattern):
                    open(store + ".failed-after-files", "w").close()
                raise RuntimeError("injected failure of task 1 after it wrote files")
        return value
    return F.udf(passthrough, StringType(), useArrow=False)


def _attempt_dirs(entries: list[dict]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for p in entries:
        head = p["path"].split("/", 1)[0]
        if head.startswith("task-"):
            out.setdefault(int(head.split("-")[1]), set()).add(head)
    return out


def retry(workdir: str) -> dict[str, Any]:
    import kvio
    result: dict[str, Any] = {}
    kvs = kvio.KeyValueSystem()
    spark = _session("local[2,3]", **{"spark.sql.execution.arrow.maxRecordsPerBatch": "200"})

    # 1. No register(): Spark finds pyspark_kvio.DefaultSource on its own.
    seed = os.path.join(workdir, "seed")
    with kvs.create_store(seed) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    found = spark.read.format("kvstore").load(seed).collect()
    result["discovered"] = (sorted((bytes(r.key), bytes(r.value)) for r in found)
                            == [(b"a", b"1"), (b"b", b"2")])

    # 2. Task 1 fails once after writing files; its retry succeeds.
    store = os.path.join(workdir, "retry")
    df = _rows(spark, 4000, 2)
    flaky = df.withColumn("value", _fail_in_partition_1(store, always=False)("value"))
    (flaky.write.format("kvstore").mode("overwrite")
     .option("kvio.partition.size.max", "16KB").save(store))
    with kvs.open_store(store) as reader:
        entries = [p.to_json() for p in reader.manifest.partitions]
        result["retry_count"] = len(reader)
        result["retry_items_ok"] = list(reader.keys()) == [b"k%07d" % i for i in range(4000)]
        version_dir = os.path.join(store, "_versions", reader.version)
    dirs = _attempt_dirs(entries)
    result["retry_attempts_published"] = {str(t): len(d) for t, d in sorted(dirs.items())}
    on_disk = sorted(n for n in os.listdir(version_dir) if n.startswith("task-00001-"))
    result["retry_task1_dirs_on_disk"] = len(on_disk)
    result["retry_failed_after_files"] = os.path.exists(store + ".failed-after-files")
    result["retry_staging_files"] = glob.glob(os.path.join(store, "_staging", "**", "*"), recursive=True)

    # 3. Task 1 fails on every attempt: the job fails, nothing is published, staging is gone.
    broken = os.path.join(workdir, "broken")
    doomed = df.withColumn("value", _fail_in_partition_1(broken, always=True)("value"))
    try:
        (doomed.write.format("kvstore").mode("overwrite")
         .option("kvio.partition.size.max", "16KB").save(broken))
        result["failed_job_raised"] = False
    except Exception as exc:  # noqa: BLE001 - any Spark job failure will do
        result["failed_job_raised"] = "injected failure" in str(exc)
    result["failed_job_published"] = kvs.exists(broken)
    result["failed_job_staging_files"] = glob.glob(os.path.join(broken, "_staging", "**", "*.kvp"),
                                                   recursive=True)
    spark.stop()
    return result


if __name__ == "__main__":
    scenario, workdir = sys.argv[1], sys.argv[2]
    print(json.dumps({"retry": retry}[scenario](workdir)))
