"""scripts/clone-store as users run it, and the Python 3.13 ``pipes`` stand-in."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import build_store, hostile_pairs, store_items

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "clone-store"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_clone_store_script_clones_and_verifies(tmp_path):
    pairs = hostile_pairs(300)
    build_store(tmp_path / "src", pairs, {"kvio.partition.size.max": "8KB"})
    proc = _run(str(tmp_path / "src"), str(tmp_path / "dst"), "--runner", "inline", "--partitions", "3")
    assert proc.returncode == 0, proc.stderr
    assert "verified: identical to the source (300 pairs" in proc.stdout
    assert store_items(tmp_path / "dst") == pairs
    proc = _run(str(tmp_path / "src"), str(tmp_path / "dst"), "--runner", "inline", "--json")
    assert proc.returncode == 1 and "already exists" in proc.stderr  # default mode: error
    proc = _run(str(tmp_path / "src"), str(tmp_path / "dst"), "--runner", "inline", "--json",
                "--mode", "overwrite")
    report = json.loads(proc.stdout)
    assert report["identical"] and report["pairs"] == 300 and report["disjoint"]


@pytest.mark.slow
@pytest.mark.spark
def test_clone_store_script_with_the_spark_engine(tmp_path):
    pairs = hostile_pairs(200, seed=5)
    build_store(tmp_path / "src", pairs, {"kvio.partition.size.max": "8KB"})
    proc = _run(str(tmp_path / "src"), str(tmp_path / "dst"), "--engine", "spark")
    assert proc.returncode == 0, proc.stderr
    assert "verified: identical to the source (200 pairs" in proc.stdout
    assert store_items(tmp_path / "dst") == pairs


def test_compare_stores_names_the_differences(tmp_path):
    from kvio import KeyValueSystem
    from mr_jobs.verify import compare_stores
    build_store(tmp_path / "a", [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    build_store(tmp_path / "b", [(b"a", b"1"), (b"b", b"X"), (b"d", b"4")])
    kvs = KeyValueSystem()
    with kvs.open_store(str(tmp_path / "a")) as a, kvs.open_store(str(tmp_path / "b")) as b:
        report = compare_stores(a, b)
        assert compare_stores(a, a)["identical"]
    assert not report["identical"] and report["differing"] == 3
    assert [(d["kind"], bytes.fromhex(d["key"])) for d in report["differences"]] == [
        ("value differs", b"b"), ("only in A", b"c"), ("only in B", b"d")]


def test_pipes_stand_in(tmp_path):
    """kvio's pipes.py provides quote on 3.13+; run from the checkout on 3.11/3.12 (where it
    shadows the standard library) it hands over to the real module."""
    code = "import pipes, shlex; print(pipes.__file__); assert pipes.quote is shlex.quote"
    for cwd in (ROOT, tmp_path):
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=cwd, capture_output=True,
                              text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
        origin = Path(proc.stdout.strip())
        if sys.version_info >= (3, 13):
            assert origin == ROOT / "pipes.py"
        else:
            assert origin != ROOT / "pipes.py"  # the standard library's module


def test_mrjob_imports_on_this_python():
    """mrjob 0.7.4 needs distutils (setuptools on 3.12+) and pipes (the shim on 3.13+)."""
    proc = subprocess.run([sys.executable, "-c", "import mrjob.job, mrjob.local, mrjob.hadoop"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
