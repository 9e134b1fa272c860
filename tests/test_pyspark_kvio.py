"""pyspark_kvio is imported by Spark in every application of the environment: importing it never
raises, whatever is broken. Each case imports it in a fresh interpreter where a module it needs
is replaced by one that fails (a directory ahead of everything else on PYTHONPATH)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json
import pyspark_kvio
out = {"has_source": hasattr(pyspark_kvio, "DefaultSource")}
if out["has_source"]:
    src = pyspark_kvio.DefaultSource
    from pyspark.sql.datasource import DataSource
    out["is_data_source"] = issubclass(src, DataSource)
    out["name"] = src.name()
    out["real"] = src.__module__ != "pyspark_kvio"
    if not out["real"]:
        try:
            src(options={}).schema()
        except ImportError as exc:
            out["error"] = str(exc)
print(json.dumps(out))
"""


def _import_with_broken(tmp_path: Path, broken: dict[str, str]) -> dict:
    """Import pyspark_kvio with each ``module path -> source`` written ahead on the path."""
    shadow = tmp_path / "shadow"
    for name, source in broken.items():
        target = shadow / (name.replace(".", "/") + "/__init__.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr  # the import itself never raises
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.spark  # needs pyspark (the Python 3.13 leg of scripts/test has no Spark)
def test_the_real_source_when_everything_imports(tmp_path):
    out = _import_with_broken(tmp_path, {})
    assert out == {"has_source": True, "is_data_source": True, "name": "kvstore", "real": True}


@pytest.mark.parametrize("module, source", [
    ("spark_jobs", "raise RuntimeError('spark_jobs broken on purpose')\n"),
    ("kvio", "import does_not_exist_anywhere\n"),
    ("pyarrow", "raise ImportError('pyarrow broken on purpose')\n"),
    ("spark_jobs", "def broken(:\n"),  # a SyntaxError
])
@pytest.mark.spark
def test_a_broken_kvio_gives_a_stand_in_that_names_the_problem(tmp_path, module, source):
    out = _import_with_broken(tmp_path, {module: source})
    assert out["has_source"] and out["is_data_source"] and out["name"] == "kvstore"
    assert not out["real"]
    assert "could not be imported" in out["error"] and "PYSPARK_PYTHON" in out["error"]
    detail = {"spark_jobs": "Error", "kvio": "does_not_exist_anywhere", "pyarrow": "pyarrow broken"}
    assert detail[module] in out["error"]


def test_without_pyspark_nothing_is_registered(tmp_path):
    out = _import_with_broken(tmp_path, {"pyspark": "raise ImportError('no pyspark here')\n"})
    assert out == {"has_source": False}
