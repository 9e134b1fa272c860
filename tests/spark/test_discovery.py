"""How Spark finds the kvstore source: automatic discovery of pyspark_kvio with the install the
README's commands make, a clear error when the workers' Python lacks kvio, and a broken kvio
that does not break other packages' data sources. Each runs a fresh JVM in a child process
started outside the checkout (so only what is installed is on the path)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "discovery.py"

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _run(cwd: Path, *args: str, **env: str) -> dict:
    child = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON")}
    child.update(PYSPARK_PYTHON=sys.executable, **env)
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=child,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_installed_kvio_is_discovered_and_workers_without_kvio_are_explained(tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True,
                   timeout=120)
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = _run(work, "installed", str(work), str(bare / "bin" / "python"))
    assert result["sys_path0"] == str(HERE)  # the checkout's root is not on the path
    assert result["discovered"], result.get("discovery_error")
    error = result["bare_error"]
    assert error is not None and str(bare / "bin" / "python") in error
    assert f"PYSPARK_PYTHON={sys.executable}" in error and "No module named" in error


def test_a_broken_kvio_does_not_break_other_data_sources(tmp_path):
    shadow = tmp_path / "shadow"
    (shadow / "spark_jobs").mkdir(parents=True)
    (shadow / "spark_jobs" / "__init__.py").write_text(
        'raise RuntimeError("kvio broken on purpose by the test")\n')
    (shadow / "pyspark_othersource.py").write_text(textwrap.dedent('''
        from pyspark.sql.datasource import DataSource, DataSourceReader

        class _Reader(DataSourceReader):
            def read(self, partition):
                yield from ((i,) for i in range(3))

        class DefaultSource(DataSource):
            @classmethod
            def name(cls):
                return "othersource"

            def schema(self):
                return "n int"

            def reader(self, schema):
                return _Reader()
    '''))
    # pyspark_kvio is found through the installed kvio; its import of spark_jobs hits the shadow.
    result = _run(tmp_path, "others", str(tmp_path), PYTHONPATH=str(shadow))
    assert result["other_rows"] == [0, 1, 2]
    error = result["kvstore_error"]
    assert error is not None
    assert "kvio broken on purpose by the test" in error and "PYSPARK_PYTHON" in error
