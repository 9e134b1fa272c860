"""spark.read.format("kvstore").option("version", ...) on a real local Spark session: a retained
older version reads, one that retention removed says so (issue 10 item 9)."""
from __future__ import annotations

import pytest
from pyspark.errors import PySparkException

import kvio

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
