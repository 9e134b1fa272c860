"""What ``pip install kvio`` puts into an environment, checked on a wheel built from this
checkout: the top-level names (no ``pipes``), the data files (the defaults, ``py.typed``), the
extras (``all`` without development tools, ``standard-pipes`` only on 3.13+), and an installed
copy that works outside the checkout."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What setup.cfg needs to build (copied, so the build leaves nothing in the shared checkout).
SOURCES = ["setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in", "conf", "kvio",
           "spark_jobs", "mr_jobs", "pyspark_kvio.py"]
DEV_TOOLS = {"pytest", "hypothesis", "psutil", "lmdb", "pyinstrument", "ruff", "mypy",
             "redis[hiredis]",  # redis: the serving benchmark's reference
             "moto[server]"}  # moto: the S3 server of the object-store tests


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, src / name, follow_symlinks=False)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                           "--wheel-dir", str(work / "dist"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = (work / "dist").glob("kvio-*.whl")
    return built


def _metadata(wheel: Path) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode())
    return meta.get_all("Requires-Dist") or [], meta.get_all("Provides-Extra") or []


def test_top_level_names_and_data_files(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        defaults = zf.read("kvio/kvio-defaults.conf")
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"kvio", "spark_jobs", "mr_jobs", "pyspark_kvio.py"}  # no pipes, no tests
    assert "kvio/py.typed" in names
    # kvio/kvio-defaults.conf is a link to the one source, conf/kvio-defaults.conf; the
    # wheel must carry the file itself, byte for byte.
    assert defaults == (ROOT / "conf" / "kvio-defaults.conf").read_bytes()


def test_extras(wheel):
    requires, extras = _metadata(wheel)
    assert set(extras) == {"spark", "mr", "hdfs", "serve", "sql", "s3", "azure", "gcs", "all",
                           "dev"}

    def extra(name: str) -> list[str]:
        return [r.split(";")[0].strip() for r in requires if f'extra == "{name}"' in r]

    assert extra("all") == ["kvio[azure,hdfs,mr,s3,serve,spark,sql]"]
    user_extras = ("spark", "mr", "hdfs", "serve", "sql", "s3", "azure", "gcs")
    assert not any(r.startswith(tuple(DEV_TOOLS)) for e in user_extras for r in extra(e))
    assert {re.split(r"[<>=!~ ]", r)[0] for r in extra("dev")} == DEV_TOOLS
    (pipes,) = [r for r in requires if r.startswith("standard-pipes")]
    assert 'python_version >= "3.13"' in pipes and 'extra == "mr"' in pipes


def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = ("import json, importlib.util, kvio, pyspark_kvio\n"
            "from kvio.config import Config\n"
            "print(json.dumps({'kvio': kvio.__file__, 'pyspark_kvio': pyspark_kvio.__file__,\n"
            "                  'settings': sorted(Config().raw)}))\n")
    # The installed copy comes first on the path, ahead of the checkout's editable install.
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert Path(found["kvio"]).is_relative_to(site)
    assert Path(found["pyspark_kvio"]).is_relative_to(site)
    from kvio.config import _parse_conf_text
    source = (ROOT / "conf" / "kvio-defaults.conf").read_text()
    assert found["settings"] == sorted(_parse_conf_text(source, "conf/kvio-defaults.conf"))
    assert not (site / "pipes.py").exists()
