"""scripts/clone-store as users run it, and where mrjob's ``pipes`` comes from."""
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


def test_pipes_comes_from_the_standard_library_or_standard_pipes(tmp_path):
    """mrjob imports ``pipes``: the standard library's module on 3.11/3.12, the standard-pipes
    distribution (the mr extra, 3.13+ only) on 3.13; never a module of kvio's."""
    code = ("import json, sys, pipes, shlex; from importlib import metadata\n"
            "files = metadata.files('standard-pipes') if sys.version_info >= (3, 13) else None\n"
            "print(json.dumps({'file': pipes.__file__, 'quote': pipes.quote is shlex.quote,\n"
            "                  'dist': [str(f) for f in files or ()]}))")
    for cwd in (ROOT, tmp_path):  # a source checkout on the path shadows nothing either
        proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        found = json.loads(proc.stdout)
        origin = Path(found["file"])
        assert found["quote"] and origin.parent != ROOT  # no top-level pipes of kvio's
        if sys.version_info >= (3, 13):  # installed into this environment by standard-pipes
            assert origin.is_relative_to(sys.prefix)
            assert any(f.startswith("pipes") for f in found["dist"])
        else:
            assert Path(found["file"]).parent == Path(json.__file__).parent.parent  # stdlib


def test_mrjob_imports_on_this_python():
    """mrjob 0.7.4 needs distutils (setuptools on 3.12+) and pipes (standard-pipes on 3.13+)."""
    proc = subprocess.run([sys.executable, "-c", "import mrjob.job, mrjob.local, mrjob.hadoop"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
