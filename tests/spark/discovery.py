"""Spark discovery scenarios, each in a JVM of its own, run by test_discovery.py as a child
from a directory outside the checkout, so only what is installed counts:

    python tests/spark/discovery.py installed WORKDIR BARE_PYTHON
    python tests/spark/discovery.py others WORKDIR

It prints one JSON object of observations on its last line; the test asserts on it.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any


def _session():
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[1]").appName("kvio-discovery")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("OFF")
    return spark


def installed(workdir: str, bare_python: str) -> dict[str, Any]:
    """No register(): Spark finds pyspark_kvio in the environment kvio is installed in. Then a
    session whose Python workers run an interpreter without kvio: register() says what to set."""
    import kvio
    result: dict[str, Any] = {"kvio_file": kvio.__file__, "sys_path0": sys.path[0]}
    store = os.path.join(workdir, "store")
    with kvio.KeyValueSystem().create_store(store) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    spark = _session()
    try:
        rows = spark.read.format("kvstore").load(store).collect()
        result["discovered"] = sorted((bytes(r.key), bytes(r.value)) for r in rows) == \
            [(b"a", b"1"), (b"b", b"2")]
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result["discovered"] = False
        result["discovery_error"] = str(exc)[:2000]
    spark.stop()

    # A new context reads PYSPARK_PYTHON again: its workers would run a Python without kvio.
    os.environ["PYSPARK_PYTHON"] = bare_python
    spark = _session()
    import spark_jobs
    try:
        spark_jobs.register(spark)
        result["bare_error"] = None
    except spark_jobs.SparkSetupError as exc:
        result["bare_error"] = str(exc)
    spark.stop()
    return result


def others(workdir: str) -> dict[str, Any]:
    """kvio's Spark source is broken in this environment (its import raises): another
    package's Python data source is still found, and using kvstore names the problem."""
    store = os.path.join(workdir, "store")
    spark = _session()
    result: dict[str, Any] = {}
    rows = spark.read.format("othersource").load().collect()
    result["other_rows"] = [r.n for r in rows]
    try:
        spark.read.format("kvstore").load(store).collect()
        result["kvstore_error"] = None
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result["kvstore_error"] = str(exc)[-4000:]
    spark.stop()
    return result


if __name__ == "__main__":
    scenario = sys.argv[1]
    print(json.dumps({"installed": installed, "others": others}[scenario](*sys.argv[2:])))
