"""df.write.format("kvstore") and spark_jobs.write_store on a real local Spark session."""
from __future__ import annotations

import json
import os

import pytest
from pyspark.errors import PySparkException
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, BooleanType, StringType, StructField, StructType

import kvio
import spark_jobs
from kvio.errors import StoreExistsError

from .conftest import staging_files, store_items

pytestmark = [pytest.mark.spark, pytest.mark.slow]

PAIRS = StructType([StructField("key", BinaryType()), StructField("value", BinaryType())])


def manifest(uri):
    with kvio.KeyValueSystem().open_store(uri) as reader:
        return reader.manifest


def frame(spark, pairs, partitions=2, schema=PAIRS):
    return spark.createDataFrame(pairs, schema).repartition(partitions)


def test_round_trip_spark_python_spark(spark, tmp_path):
    uri = str(tmp_path / "s")
    df = spark.range(0, 5000, numPartitions=3).select(
        F.format_string("key-%05d", (F.col("id") * 7919) % 5000).cast("binary").alias("key"),
        F.sha2(F.col("id").cast("string"), 256).cast("binary").alias("value"))
    expected = sorted((bytes(r.key), bytes(r.value)) for r in df.collect())
    summary = spark_jobs.write_store(df, uri, num_partitions=4)
    assert summary["records"] == 5000 and summary["partitions"] == 4
    assert store_items(uri) == expected  # the Python API reads what Spark wrote
    assert manifest(uri).disjoint
    back = spark.read.format("kvstore").load(uri)
    assert sorted((bytes(r.key), bytes(r.value)) for r in back.collect()) == expected
    assert staging_files(uri) == []


def test_direct_write_of_unsorted_rows_spills_and_sorts(spark, tmp_path):
    uri = str(tmp_path / "s")
    df = spark.range(0, 20000, numPartitions=2).select(
        F.format_string("u%06d", (F.col("id") * 7919) % 20000).alias("key"),
        F.col("id").cast("string").alias("value"))
    (df.write.format("kvstore").mode("overwrite").option("sortMemory", "64KB")
     .option("kvio.partition.size.max", "128KB").save(uri))
    items = store_items(uri)
    assert items == sorted((b"u%06d" % ((i * 7919) % 20000), str(i).encode()) for i in range(20000))
    parts = manifest(uri).partitions
    assert len(parts) > 4 and not manifest(uri).disjoint  # each task's rows overlap the other's
    assert manifest(uri).count == 20000  # checked for shared keys, so the count is known
    assert not [n for n in os.listdir(tmp_path) if n.startswith("kvio-sort-")]


def test_save_modes(spark, tmp_path):
    uri = str(tmp_path / "s")
    first = frame(spark, [(b"a", b"1"), (b"b", b"1")])
    first.write.format("kvstore").mode("overwrite").save(uri)
    with pytest.raises(PySparkException, match="UNSUPPORTED_DATA_SOURCE_SAVE_MODE"):
        first.write.format("kvstore").save(uri)  # Spark's default errorifexists
    with pytest.raises(PySparkException, match="store already exists"):
        first.write.format("kvstore").mode("overwrite").option("writeMode", "error").save(uri)
    frame(spark, [(b"z", b"9")]).write.format("kvstore").mode("overwrite") \
        .option("writeMode", "ignore").save(uri)
    assert store_items(uri) == [(b"a", b"1"), (b"b", b"1")]
    frame(spark, [(b"b", b"2"), (b"c", b"2")]).write.format("kvstore").mode("append").save(uri)
    assert store_items(uri) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"2")]  # appended value wins
    frame(spark, [(b"x", b"3")]).write.format("kvstore").mode("overwrite").save(uri)
    assert store_items(uri) == [(b"x", b"3")]
    assert [v["op"] for v in kvio.KeyValueSystem().versions(uri)][-2:] == ["append", "overwrite"]


def test_write_store_modes(spark, tmp_path):
    uri = str(tmp_path / "s")
    df = frame(spark, [(b"a", b"1")])
    spark_jobs.write_store(df, uri)
    with pytest.raises(StoreExistsError):
        spark_jobs.write_store(df, uri)  # refused on the driver, before any Spark job
    skipped = spark_jobs.write_store(frame(spark, [(b"b", b"2")]), uri, mode="ignore")
    assert skipped["skipped"] and skipped["records"] == 1
    spark_jobs.write_store(frame(spark, [(b"b", b"2")]), uri, mode="overwrite")
    assert store_items(uri) == [(b"b", b"2")]


def test_duplicates(spark, tmp_path):
    rows = [(b"k%d" % (i % 50), b"%04d" % i) for i in range(400)]
    df = spark.createDataFrame(rows, PAIRS).coalesce(3)  # keeps the list's order
    with pytest.raises(PySparkException, match=r"duplicate key.*duplicates=first.*key=b'k"):
        spark_jobs.write_store(df, str(tmp_path / "error"), num_partitions=4)
    assert not kvio.KeyValueSystem().exists(str(tmp_path / "error"))
    assert staging_files(tmp_path / "error") == []
    first = {k: v for k, v in reversed(rows)}
    last = dict(rows)
    spark_jobs.write_store(df, str(tmp_path / "first"), num_partitions=4, duplicates="first")
    spark_jobs.write_store(df, str(tmp_path / "last"), num_partitions=4, duplicates="last")
    assert store_items(tmp_path / "first") == sorted(first.items())
    assert store_items(tmp_path / "last") == sorted(last.items())
    # The direct writer: equal keys in different tasks are found at commit.
    split = spark.createDataFrame([(b"a", b"0"), (b"m", b"0"), (b"b", b"1"), (b"m", b"1")],
                                  PAIRS).coalesce(2)
    with pytest.raises(PySparkException, match="two Spark tasks"):
        split.write.format("kvstore").mode("overwrite").save(str(tmp_path / "direct"))
    split.write.format("kvstore").mode("overwrite").option("duplicates", "last") \
        .save(str(tmp_path / "direct"))
    assert dict(store_items(tmp_path / "direct"))[b"m"] == b"1"


def test_null_key_fails_and_publishes_nothing(spark, tmp_path):
    uri = str(tmp_path / "s")
    df = frame(spark, [(b"a", b"1"), (None, b"2"), (b"c", b"3")])
    with pytest.raises(PySparkException, match=r"key column 'key' is null.*isNotNull"):
        df.write.format("kvstore").mode("overwrite").save(uri)
    assert not kvio.KeyValueSystem().exists(uri)
    assert not os.path.exists(uri)  # a failed first write leaves no store behind (issue 10 item 8)
    with pytest.raises(PySparkException, match="value column 'value' is null"):
        frame(spark, [(b"a", None)]).write.format("kvstore").mode("overwrite").save(uri)


def test_column_types(spark, tmp_path):
    uri = str(tmp_path / "s")
    ints = spark.createDataFrame([Row(key="a", value=1)])
    with pytest.raises(PySparkException, match=r"value column 'value' has type bigint.*cast\('string'\)"):
        ints.write.format("kvstore").mode("overwrite").save(uri)
    with pytest.raises(kvio.KvioError, match="has type bigint"):
        spark_jobs.write_store(ints, uri)
    nested = spark.createDataFrame([Row(key="a", value=Row(n=1, s="x"))])
    with pytest.raises(PySparkException, match="to_json"):
        nested.write.format("kvstore").mode("overwrite").save(uri)
    spark_jobs.write_store(nested, uri, value_format="json")
    assert json.loads(store_items(uri)[0][1]) == {"n": 1, "s": "x"}
    extra = spark.createDataFrame([Row(id=1, key="a", value="b")])
    with pytest.raises(PySparkException, match="select them first"):
        extra.write.format("kvstore").mode("overwrite").save(uri)
    extra.write.format("kvstore").mode("overwrite").option("keyColumn", "key") \
        .option("valueColumn", "value").save(uri)
    assert store_items(uri) == [(b"a", b"b")]


def test_string_columns_are_utf8(spark, tmp_path):
    uri = str(tmp_path / "s")
    schema = StructType([StructField("key", StringType()), StructField("value", StringType())])
    spark.createDataFrame([("日本", "é"), ("a", "")], schema).write.format("kvstore") \
        .mode("overwrite").save(uri)
    assert store_items(uri) == [(b"a", b""), ("日本".encode(), "é".encode())]


def test_zero_rows_make_an_empty_valid_store(spark, tmp_path):
    empty = spark.createDataFrame([], PAIRS)
    summary = spark_jobs.write_store(empty, str(tmp_path / "helper"))
    assert summary["records"] == 0
    empty.write.format("kvstore").mode("overwrite").save(str(tmp_path / "direct"))
    for name in ("helper", "direct"):
        uri = str(tmp_path / name)
        with kvio.KeyValueSystem().open_store(uri) as reader:
            assert len(reader) == 0 and reader.get(b"a") is None
        assert spark.read.format("kvstore").load(uri).count() == 0
        assert staging_files(uri) == []


def test_conf_and_bad_options(spark, tmp_path):
    uri = str(tmp_path / "s")
    df = frame(spark, [(b"%05d" % i, b"x" * 100) for i in range(3000)], partitions=1)
    spark_jobs.write_store(df, uri, conf={"kvio.partition.size.max": "64KB",
                                          "kvio.block.compression": "zstd"})
    parts = manifest(uri).partitions
    assert len(parts) > 3 and manifest(uri).options["compression"] == "zstd"
    with pytest.raises(PySparkException, match="duplicates must be one of"):
        df.write.format("kvstore").mode("overwrite").option("duplicates", "any").save(uri)
    with pytest.raises(PySparkException, match="unknown setting 'kvio.nope'"):
        df.write.format("kvstore").mode("overwrite").option("kvio.nope", "1").save(uri)
    with pytest.raises(kvio.KvioError, match="unknown write mode"):
        spark_jobs.write_store(df, uri, mode="merge")


def test_append_with_delete_column_upserts_and_deletes_in_one_publish(spark, tmp_path):
    """.option("deleteColumn", ...): true deletes the key (value may be null), false sets it;
    one new version; keys spread over several Spark partitions; deleting absent keys is fine;
    without mode append the option is refused."""
    uri = str(tmp_path / "s")
    base = [(b"k%03d" % i, b"old") for i in range(60)]
    frame(spark, base).write.format("kvstore").mode("overwrite").save(uri)
    schema = StructType([StructField("key", BinaryType()), StructField("value", BinaryType()),
                         StructField("deleted", BooleanType())])
    rows = [(b"k%03d" % i, None if i % 4 == 0 else b"new", i % 4 == 0) for i in range(40, 90)]
    frame(spark, rows, partitions=3, schema=schema).write.format("kvstore").mode("append") \
        .option("deleteColumn", "deleted").save(uri)
    model = dict(base)
    for k, v, d in rows:
        if d:
            model.pop(k, None)
        else:
            model[k] = v
    assert dict(store_items(uri)) == model
    with kvio.KeyValueSystem().open_store(uri) as reader:
        assert reader.get(b"k040") is None and reader.get(b"k041") == b"new"
        assert len(reader) == len(model) and reader.commit.op == "append"
        assert any(p.tombstones for p in reader.manifest.partitions)
    read = spark.read.format("kvstore").load(uri)
    assert read.count() == len(model) and read.filter(F.col("key") == b"k044").count() == 0
    with pytest.raises(PySparkException, match="needs mode append"):
        frame(spark, rows, schema=schema).write.format("kvstore").mode("overwrite") \
            .option("deleteColumn", "deleted").save(uri)
    assert dict(store_items(uri)) == model


@pytest.mark.parametrize(("options", "expected"), [
    ({}, 256 << 20),                                       # the default of kvio.sort.memory
    ({"kvio.sort.memory": "1MB"}, 1 << 20),                # the kvio setting as an option
    ({"kvio.sort.memory": "1MB", "sortMemory": "64KB"}, 64 << 10),  # the source's own option wins
])
def test_sort_memory_follows_the_kvio_setting(tmp_path, options, expected):
    """Spark writes used to ignore kvio.sort.memory (always 256MB unless sortMemory was given)."""
    from spark_jobs.datasource import _writer
    schema = StructType([StructField("key", BinaryType()), StructField("value", BinaryType())])
    writer = _writer({"path": str(tmp_path / "s"), **options}, schema, overwrite=True)
    try:
        assert writer.sort_memory == expected
    finally:
        writer.abort([])
