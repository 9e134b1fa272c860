"""Fixtures of the Spark tests: one small local[2] session shared by the whole directory.

Tests that need another master (task retries, separate executor JVMs) or a fresh JVM
(automatic discovery, spark-submit) run a child process; see :func:`run_child`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kvio
from kvio import layout

ROOT = str(Path(__file__).resolve().parents[2])
HERE = Path(__file__).resolve().parent


def child_env(**extra: str) -> dict[str, str]:
    """Environment for Spark child processes and Python workers: this interpreter (it has
    pyarrow) and this checkout on the path."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *[p for p in paths if p != ROOT]])
    env["PYSPARK_PYTHON"] = sys.executable
    env.update(extra)
    return env


def run_child(args: list[str], timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=child_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="session")
def spark():
    # The JVM and its Python workers inherit this process's environment when it starts.
    os.environ.update({k: child_env()[k] for k in ("PYTHONPATH", "PYSPARK_PYTHON")})
    from pyspark.sql import SparkSession

    import spark_jobs
    session = (SparkSession.builder.master("local[2]").appName("kvio-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.default.parallelism", "2")
               .config("spark.sql.python.filterPushdown.enabled", "true")
               .config("spark.driver.memory", "1g")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    spark_jobs.register(session)
    yield session
    session.stop()


@pytest.fixture(params=[True, False], ids=["pushdown-on", "pushdown-off"])
def pushdown(spark, request):
    """Runs a test with Spark's Python filter pushdown on and off."""
    previous = spark.conf.get("spark.sql.python.filterPushdown.enabled")
    spark.conf.set("spark.sql.python.filterPushdown.enabled", str(request.param).lower())
    yield request.param
    spark.conf.set("spark.sql.python.filterPushdown.enabled", previous)


def build(uri, pairs, conf: dict | None = None) -> dict:
    """A store from sorted (key, value) pairs with the Python API; returns the model dict."""
    kvs = kvio.KeyValueSystem(conf=conf)
    with kvs.create_store(str(uri), mode="overwrite") as writer:
        writer.put_many(pairs)
    return dict(pairs)


def store_items(uri) -> list[tuple[bytes, bytes]]:
    with kvio.KeyValueSystem().open_store(str(uri)) as reader:
        return list(reader.items())


def staging_files(uri) -> list[str]:
    base = os.path.join(str(uri), layout.STAGING)
    return [os.path.join(d, f) for d, _, files in os.walk(base) for f in files]
