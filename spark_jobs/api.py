"""Spark helpers: the ``kvstore`` data source, registered and used without ceremony.

    import spark_jobs
    spark_jobs.register(spark)                          # once per session
    df = spark.read.format("kvstore").load(uri)         # key binary, value binary
    spark_jobs.write_store(df, uri2, mode="overwrite")  # disjoint, sorted partitions

These live on the Spark side so that the dependency points one way: ``kvio`` never imports
``spark_jobs``. pyspark is imported only when a function here runs. The data source itself is
:mod:`spark_jobs.datasource` (its options are documented there).
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kvio.errors import InvalidArgumentError, KvioError, StoreExistsError
from kvio.system import KeyValueSystem

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

FORMAT = "kvstore"
WRITE_MODES = ("error", "ignore", "overwrite", "append")
_MIN_PYSPARK = (4, 1)
# What a Spark Python worker must be able to import for the kvstore source to work (pyspark
# itself is left out: Spark puts its own copy on the workers' path).
_WORKER_PROBE = "import kvio, spark_jobs.api"
# Worker interpreters already probed in this process: (executable, PYTHONPATH) -> error or None.
_probed: dict[tuple[str, str], str | None] = {}


class SparkSetupError(KvioError):
    """The Spark session cannot use the kvstore source as configured (e.g. its Python workers
    run an interpreter that cannot import kvio)."""


def _require_pyspark() -> None:
    try:
        import pyspark
    except ImportError as exc:
        raise ImportError("spark_jobs needs pyspark >= 4.1 (the Python Data Source API with "
                          "filter pushdown): pip install 'kvio[spark]'") from exc
    found = tuple(int(p) for p in pyspark.__version__.split(".")[:2] if p.isdigit())
    if found < _MIN_PYSPARK:
        raise ImportError(f"spark_jobs needs pyspark >= 4.1, found {pyspark.__version__}: "
                          "pip install 'kvio[spark]'")


def check_worker_python(spark: SparkSession) -> None:
    """Fail early, with the fix, when Spark's Python workers cannot import kvio.

    Spark starts its Python workers (which plan, read and write the kvstore source) with
    ``PYSPARK_PYTHON`` as it was when the session started (default ``python3``), not with the
    interpreter of the driver program. When that interpreter lacks kvio, Spark reports only
    ``DATA_SOURCE_NOT_FOUND`` or a worker traceback. For a local master the workers run on this
    machine, so the interpreter is tried here once per session setup; on a cluster the worker
    nodes cannot be checked from the driver and nothing is done.

    Args:
        spark: the session whose workers are checked.

    Raises:
        SparkSetupError: the workers' interpreter cannot import kvio (the message names it and
            says to set ``PYSPARK_PYTHON``).
    """
    try:
        sc = spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect: no context, workers are remote anyway
        return
    if not str(sc.master).startswith("local"):
        return
    executable = str(getattr(sc, "pythonExec", None) or os.environ.get("PYSPARK_PYTHON")
                     or "python3")
    # Workers get the session's executor environment on top of the JVM's (PYTHONPATH included).
    env = dict(os.environ)
    extra = [p for p in str(sc.environment.get("PYTHONPATH", "")).split(os.pathsep) if p]
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *extra]))
    key = (executable, env["PYTHONPATH"])
    if key not in _probed:
        _probed[key] = _probe(executable, env)
    problem = _probed[key]
    if problem is not None:
        raise SparkSetupError(
            f"Spark's Python workers run {executable!r}, which cannot import kvio's Spark source "
            f"({problem}); set PYSPARK_PYTHON={sys.executable} (or spark.pyspark.python) before "
            "the Spark session starts, so that workers run a Python that has kvio installed")


def _probe(executable: str, env: dict[str, str]) -> str | None:
    """None if ``executable`` imports kvio's Spark source, else what went wrong (one line)."""
    try:
        proc = subprocess.run([executable, "-c", _WORKER_PROBE], env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def register(spark: SparkSession) -> None:
    """Register the ``kvstore`` format in this session (idempotent).

    Needed when Spark cannot discover ``pyspark_kvio`` on its own (see the README's Spark
    section); harmless otherwise. Checks first that the session's Python workers can import
    kvio (local masters).

    Args:
        spark: the session.

    Raises:
        ImportError: pyspark is missing or older than 4.1.
        SparkSetupError: the workers' Python cannot import kvio.
    """
    _require_pyspark()
    check_worker_python(spark)
    from spark_jobs.datasource import KvStoreDataSource
    spark.dataSource.register(KvStoreDataSource)


def read_store(spark: SparkSession, uri: str, *, key_type: str = "binary",
               value_type: str = "binary", **options: Any) -> DataFrame:
    """``spark.read.format("kvstore")`` with at least one input split per core by default.

    Args:
        spark: the session (the source is registered in it).
        uri: the store.
        key_type: ``binary`` or ``string`` (UTF-8).
        value_type: ``binary`` or ``string`` (UTF-8).
        **options: more read options (``minSplits`` defaults to the default parallelism, so a
            store with few large partitions still uses the whole cluster).

    Returns:
        A DataFrame with columns ``key`` and ``value``.

    Raises:
        ImportError: pyspark is missing or too old.
        SparkSetupError: the workers' Python cannot import kvio.
    """
    register(spark)
    from spark_jobs.datasource import absolute_uri
    opts = {"keyType": key_type, "valueType": value_type,
            "minSplits": str(spark.sparkContext.defaultParallelism)}
    opts.update({k: str(v) for k, v in options.items()})
    return spark.read.format(FORMAT).options(**opts).load(absolute_uri(uri))


def write_store(df: DataFrame, uri: str, mode: str = "error", num_partitions: int | None = None,
                *, key_col: str = "key", value_col: str = "value", duplicates: str = "error",
                value_format: str | None = None, presorted: bool = False,
                conf: Mapping[str, Any] | None = None,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``df`` as a store with disjoint, sorted partitions and publish it atomically.

    Rows are range-partitioned by key into ``num_partitions`` tasks and sorted within each, so
    every key lands in exactly one partition and each task streams its rows to disk without
    sorting in Python.

    Args:
        df: the rows to write.
        uri: the destination store.
        mode: error (default) fails if a store exists, ignore leaves it alone, overwrite
            publishes a new version, append adds to it (new values win).
        num_partitions: output partitions (default: as many as ``df`` has).
        key_col: the key column.
        value_col: the value column.
        duplicates: error | first | last (in ``df``'s row order).
        value_format: ``"json"`` stores struct/map/array values as JSON text (Spark's to_json).
        presorted: skip the shuffle for a DataFrame whose partitions already hold increasing,
            disjoint key ranges in key order (as one read from a kvio store does); if it does
            not, the store is still correct, with overlapping partitions.
        conf: kvio settings.
        options: more data source write options.

    Returns:
        A summary of the store: uri, version, records, partitions, bytes (``skipped``: True
        for mode=ignore on an existing store).

    Raises:
        InvalidArgumentError: a bad mode, value_format, num_partitions or column name.
        StoreExistsError: mode=error and a store exists.
        SparkSetupError: the workers' Python cannot import kvio.
        KvioError: the write or its commit failed (nothing is published).
    """
    _require_pyspark()
    from pyspark.sql import functions as F

    from spark_jobs.datasource import absolute_uri, check_write_schema

    if mode not in WRITE_MODES:
        raise InvalidArgumentError(f"unknown write mode {mode!r}; use one of "
                                   f"{', '.join(WRITE_MODES)}", store=uri)
    if value_format not in (None, "json"):
        raise InvalidArgumentError(f"value_format must be None or 'json', got {value_format!r}",
                                   store=uri)
    if num_partitions is not None and num_partitions < 1:
        raise InvalidArgumentError(f"num_partitions must be at least 1, got {num_partitions}",
                                   store=uri)
    if presorted and num_partitions is not None:
        raise InvalidArgumentError("presorted=True keeps the DataFrame's partitions; "
                                   "num_partitions would need a shuffle", store=uri)
    uri = absolute_uri(uri)
    skipped = existing_store(uri, mode, conf)
    if skipped is not None:
        return skipped
    register(df.sparkSession)

    for what, name in (("key", key_col), ("value", value_col)):
        if name not in df.columns:
            raise InvalidArgumentError(f"the DataFrame has no {what} column {name!r} "
                                       f"(columns: {df.columns})", store=uri)
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
    """Decide on the driver, before any Spark job, what an existing store at ``uri`` means.

    The committer checks again when the job starts and when it publishes, so a store created
    meanwhile is never overwritten.

    Args:
        uri: the destination store.
        mode: the write mode.
        conf: kvio settings.

    Returns:
        The store's summary with ``skipped``: True for mode=ignore on an existing store;
        otherwise (or when there is no store) None.

    Raises:
        StoreExistsError: mode=error and a store exists.
    """
    if mode in ("error", "ignore") and KeyValueSystem(conf=dict(conf or {})).exists(uri):
        if mode == "ignore":
            return {**store_summary(uri, conf), "skipped": True}
        raise StoreExistsError("store already exists; use mode='overwrite' to replace it",
                               store=uri)
    return None


def store_summary(uri: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Describe a store's current version from its manifest.

    Args:
        uri: the store.
        conf: kvio settings.

    Returns:
        uri, version, records, partitions and bytes (records of a store with overlapping
        partitions are counted by a scan).

    Raises:
        KvioError: the store is missing, unfinished or damaged.
    """
    # The reader's public description, not the manifest's internals: one source of truth.
    with KeyValueSystem(conf=dict(conf or {})).open_store(uri) as store:
        info = store.info()
    return {"uri": uri, "version": info["version"], "records": info["count"],
            "partitions": len(info["partitions"]), "bytes": info["bytes"]}
