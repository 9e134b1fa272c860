"""spark.read.format("kvstore").option("version", ...) on a real local Spark session: a retained
older version reads, one that retention removed says so (issue 10 item 9)."""
from __future__ import annotations

import time

import pytest
from pyspark.errors import PySparkException

import kvio
from kvio import pins
from kvio.fs import FileIO
from spark_jobs.datasource import KvStoreDataSource

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def test_version_option_reads_a_retained_version_and_names_a_collected_one(spark, tmp_path):
    uri = str(tmp_path / "s")
    kvs = kvio.KeyValueSystem(conf={"kvio.gc.grace": "0"})  # published milliseconds apart
    versions = []
    for i in range(3):  # retain 2: the first version is collected by the third publish
        with kvs.create_store(uri, mode="overwrite") as writer:
            writer.put(b"k", b"v%d" % i)
        versions.append(writer.record["version"])
    rows = spark.read.format("kvstore").option("version", versions[1]).load(uri).collect()
    assert [(bytes(r.key), bytes(r.value)) for r in rows] == [(b"k", b"v1")]
    with pytest.raises(PySparkException, match=f"version {versions[0]} \\(commit 1\\) is not "
                                               "retained"):
        spark.read.format("kvstore").option("version", versions[0]).load(uri).collect()
    # The query's plan pinned the version it read (a shared pin, kvio.pin.batch.ttl).
    found = {p.holder: p for p in pins.scan(FileIO(uri))}
    assert found["spark"].version == versions[1] and found["spark"].record.purpose == "spark"


def test_a_plan_pins_its_version_while_new_ones_are_published_and_collected(tmp_path):
    """The issue's failure ("partition file listed in the manifest is missing" while a writer
    publishes): plan a multi-split read, publish twice and gc (no grace, retain 1), then run
    every task of the plan."""
    uri = str(tmp_path / "s")
    pairs = [(b"k%05d" % i, b"v%05d" % i) for i in range(3000)]
    kvs = kvio.KeyValueSystem(conf={"kvio.partition.size.max": "8KB", "kvio.block.size": "512B",
                                    "kvio.gc.grace": "0", "kvio.versions.retain": "1"})
    with kvs.create_store(uri) as writer:
        writer.put_many(pairs)
    planned = kvs.versions(uri)[-1]["version"]
    source = KvStoreDataSource({"path": uri, "splitSize": "4KB"})
    reader = source.reader(source.schema())
    splits = reader.partitions()  # what Spark's planning worker does, then it exits
    assert len(splits) > 3
    for tag in (b"new1", b"new2"):
        with kvs.create_store(uri, mode="overwrite") as writer:
            writer.put(b"only", tag)
    assert kvs.gc(uri, older_than=0)["pinned"] == [planned]
    [pin] = pins.scan(FileIO(uri))
    assert (pin.version, pin.holder) == (planned, "spark")
    assert pin.expires > time.time() + 23 * 3600  # kvio.pin.batch.ttl, 24h by default
    read = [(bytes(k), bytes(v)) for split in splits for batch in reader.read(split)
            for k, v in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)]
    assert read == pairs
