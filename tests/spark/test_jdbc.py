"""Tables too big for one machine: Spark's JDBC source reads a PostgreSQL table in parallel and
spark_jobs.api.write_store builds the store (docs/DATABASES.md). Runs in a child process
because the JDBC driver jar must be on the JVM's classpath when it starts."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import kvio
from tests.helpers import require_module

from .conftest import last_json, run_child

pytestmark = [pytest.mark.spark, pytest.mark.slow]
require_module("pyspark", "Spark tests need pyspark")
JAR = Path("/usr/share/java/postgresql.jar")


def test_jdbc_table_into_a_store(tmp_path):
    from tests.sql.conftest import postgres_or_skip

    url = postgres_or_skip()
    if not JAR.exists():
        reason = f"the PostgreSQL JDBC driver {JAR} is not installed (scripts/services installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from kvio.sql import connect, parse_table_name

    table = f"kvt_jdbc_{os.getpid()}_{tmp_path.name[-12:]}".replace("-", "_")[:60]
    n = 10_000
    keys = [b"k\x00%05d\xff" % i for i in range(n)]
    values = [b"v" * (i % 50) + b"\x00\xff" for i in range(n)]
    data = pa.table({"n": pa.array(range(n), pa.int64()), "key": pa.array(keys, pa.binary()),
                     "value": pa.array(values, pa.binary())})
    try:
        with connect(url) as db:
            db.ingest(parse_table_name(table), data, mode="create")
            db.commit()
        # postgresql://root@127.0.0.1:5432/test -> jdbc:postgresql://127.0.0.1:5432/test?user=root
        jdbc = "jdbc:postgresql://127.0.0.1:5432/test?user=root"
        uri = str(tmp_path / "from-jdbc")
        done = run_child([sys.executable, "tests/spark/jdbc_import.py", jdbc, table, uri])
        assert done.returncode == 0, done.stderr[-3000:]
        summary = last_json(done.stdout)
        assert summary["records"] == n and summary["jdbc_partitions"] == 4
        with connect(url) as db:
            rows = dict(db.rows(f'SELECT "key", "value" FROM "{table}"'))
        with kvio.KeyValueSystem().open_store(uri) as reader:
            assert dict(reader.items()) == rows
            assert len(reader) == n
    finally:
        with connect(url) as db:
            db.execute(f'DROP TABLE IF EXISTS "{table}"')
            db.commit()
