"""Spark integration: the ``kvstore`` data source, registered and used without ceremony.

    import kvio.spark
    kvio.spark.register(spark)                          # once per session
    df = spark.read.format("kvstore").load(uri)         # key binary, value binary
    kvio.spark.write_store(df, uri2, mode="overwrite")  # disjoint, sorted partitions

pyspark is imported only when one of these functions runs, so ``import kvio`` never needs
Spark. The data source itself lives in :mod:`spark_jobs.datasource` (options documented there).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from . import versions
from .config import Config
from .errors import KvioError, StoreExistsError
from .fs import FileIO
from .system import KeyValueSystem

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

FORMAT = "kvstore"
WRITE_MODES = ("error", "ignore", "overwrite", "append")
_MIN_PYSPARK = (4, 1)


def _require_pyspark() -> None:
    try:
        import pyspark
    except ImportError as exc:
        raise ImportError("kvio.spark needs pyspark >= 4.1 (the Python Data Source API with "
                          "filter pushdown): pip install 'kvio[spark]'") from exc
    found = tuple(int(p) for p in pyspark.__version__.split(".")[:2] if p.isdigit())
    if found < _MIN_PYSPARK:
        raise ImportError(f"kvio.spark needs pyspark >= 4.1, found {pyspark.__version__}: "
                          "pip install 'kvio[spark]'")


def register(spark: "SparkSession") -> None:
    """Register the ``kvstore`` format in this session (idempotent)."""
    _require_pyspark()
    from spark_jobs.datasource import KvStoreDataSource
    spark.dataSource.register(KvStoreDataSource)


def read_store(spark: "SparkSession", uri: str, *, key_type: str = "binary",
               value_type: str = "binary", **options: Any) -> "DataFrame":
    """``spark.read.format("kvstore")`` with at least one input split per core by default
    (``minSplits``), so a store with few large partitions still uses the whole cluster."""
    register(spark)
    from spark_jobs.datasource import absolute_uri
    opts = {"keyType": key_type, "valueType": value_type,
            "minSplits": str(spark.sparkContext.defaultParallelism)}
    opts.update({k: str(v) for k, v in options.items()})
    return spark.read.format(FORMAT).options(**opts).load(absolute_uri(uri))


def write_store(df: "DataFrame", uri: str, mode: str = "error", num_partitions: int | None = None,
                *, key_col: str = "key", value_col: str = "value", duplicates: str = "error",
                value_format: str | None = None, presorted: bool = False,
                conf: Mapping[str, Any] | None = None,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``df`` as a store with disjoint, sorted partitions and publish it atomically.

    Rows are range-partitioned by key into ``num_partitions`` tasks (default: as many as
    ``df`` has) and sorted within each, so every key lands in exactly one partition and each
    task streams its rows to disk without sorting in Python. ``mode``: error (default) fails
    if a store exists, ignore leaves it alone, overwrite publishes a new version, append adds
    to it (new values win). ``duplicates``: error | first | last (in ``df``'s row order).
    ``value_format="json"`` stores struct/map/array values as JSON text (Spark's to_json).
    ``presorted=True`` skips the shuffle for a DataFrame whose partitions already hold
    increasing, disjoint key ranges in key order (as one read from a kvio store does); if it
    does not, the store is still correct, with overlapping partitions.
    ``conf``: kvio settings; ``options``: more data source options. Returns a summary of the
    store (uri, version, records, partitions, bytes; ``skipped`` for mode=ignore)."""
    _require_pyspark()
    from pyspark.sql import functions as F

    from spark_jobs.datasource import absolute_uri, check_write_schema

    if mode not in WRITE_MODES:
        raise KvioError(f"unknown write mode {mode!r}; use one of {', '.join(WRITE_MODES)}", store=uri)
    if value_format not in (None, "json"):
        raise KvioError(f"value_format must be None or 'json', got {value_format!r}", store=uri)
    if num_partitions is not None and num_partitions < 1:
        raise KvioError(f"num_partitions must be at least 1, got {num_partitions}", store=uri)
    if presorted and num_partitions is not None:
        raise KvioError("presorted=True keeps the DataFrame's partitions; num_partitions would "
                        "need a shuffle", store=uri)
    uri = absolute_uri(uri)
    skipped = existing_store(uri, mode, conf)
    if skipped is not None:
        return skipped
    register(df.sparkSession)

    for what, name in (("key", key_col), ("value", value_col)):
        if name not in df.columns:
            raise KvioError(f"the DataFrame has no {what} column {name!r} (columns: {df.columns})",
                            store=uri)
    value = F.col(value_col)
    value_type = df.schema[value_col].dataType
    if value_format == "json" and value_type.typeName() in ("struct", "map", "array"):
        value = F.to_json(value)
    pairs = df.select(F.col(key_col).alias("key"), value.alias("value"))
    check_write_schema(pairs.schema, {})  # fail on the driver, before any task runs
    if not presorted:
        parts = num_partitions or max(1, df.rdd.getNumPartitions())
        if duplicates == "error":
            pairs = pairs.repartitionByRange(parts, "key").sortWithinPartitions("key")
        else:  # ties sorted in the DataFrame's order, which is what first/last refer to
            seq = "__kvio_seq"
            pairs = (pairs.withColumn(seq, F.monotonically_increasing_id())
                     .repartitionByRange(parts, "key").sortWithinPartitions("key", seq).drop(seq))
    writer = (pairs.write.format(FORMAT).mode("overwrite").option("writeMode", mode)
              .option("duplicates", duplicates))
    for name, setting in {**dict(conf or {}), **dict(options or {})}.items():
        writer = writer.option(name, str(setting))
    writer.save(uri)
    return store_summary(uri, conf)


def existing_store(uri: str, mode: str,
                   conf: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Decide on the driver, before any Spark job, what an existing store at ``uri`` means:
    mode=error raises StoreExistsError, mode=ignore returns its summary (``skipped``: True);
    otherwise (or when there is no store) None. The committer checks again when the job
    starts and when it publishes, so a store created meanwhile is never overwritten."""
    if mode in ("error", "ignore") and KeyValueSystem(conf=dict(conf or {})).exists(uri):
        if mode == "ignore":
            return {**store_summary(uri, conf), "skipped": True}
        raise StoreExistsError("store already exists; use mode='overwrite' to replace it",
                               store=uri)
    return None


def store_summary(uri: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """uri, version, records, partitions and bytes of a store's current version, from its
    manifest (records of a store with overlapping partitions are counted by a scan)."""
    cfg = Config(dict(conf or {}))
    io = FileIO(uri, allow_non_atomic=cfg.allow_non_atomic)
    state = versions.current_state_for_read(io)
    manifest = versions.load_manifest(io, state.commit["version"])
    records = manifest.get("count")
    if records is None:
        with KeyValueSystem(conf=dict(conf or {})).open_store(uri) as store:
            records = len(store)
    parts = manifest["partitions"]
    return {"uri": uri, "version": manifest["version"], "records": records,
            "partitions": len(parts), "bytes": sum(p["size"] for p in parts)}

