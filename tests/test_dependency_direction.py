"""The core depends on no engine: nothing under kvio/ imports spark_jobs, mr_jobs, pyspark or
mrjob, neither in its source (checked statically, so a lazy import inside a function counts
too) nor at run time (every kvio module imported in a fresh interpreter)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("spark_jobs", "mr_jobs", "pyspark", "mrjob", "pyspark_kvio", "py4j")


def _engine_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line module`` for every import of an engine package in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):  # importlib.import_module("x") / __import__("x")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0] if node.args else None
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and isinstance(first.value, str):
                names = [first.value]
        for name in names:
            if name.split(".")[0] in ENGINES:
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_engine_imports_are_detected(tmp_path):
    """The checker itself finds each form of import (so a clean result means something)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nimport spark_jobs.api\nfrom mr_jobs import job\n"
                      "def f():\n    from pyspark.sql import SparkSession\n"
                      "    import importlib; importlib.import_module('mrjob.job')\n"
                      "from . import spark\n")
    found = [line.split(" ", 1)[1] for line in _engine_imports(sample, tmp_path)]
    assert found == ["spark_jobs.api", "mr_jobs", "pyspark.sql", "mrjob.job"]


def test_no_module_under_kvio_imports_an_engine():
    sources = sorted((ROOT / "kvio").rglob("*.py"))
    assert len(sources) > 10
    offending = [hit for path in sources for hit in _engine_imports(path)]
    assert offending == [], "kvio must not import an engine package:\n" + "\n".join(offending)


def test_importing_every_kvio_module_loads_no_engine():
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import kvio, kvio.cli\n"
        "names = [m.name for m in pkgutil.walk_packages(kvio.__path__, 'kvio.')\n"
        "         if m.name != 'kvio.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        f"engines = {ENGINES!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in engines)\n"
        "print(json.dumps({'modules': names, 'engines': loaded}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "kvio.cli" in result["modules"] and "kvio.reader" in result["modules"]
    assert result["engines"] == []
