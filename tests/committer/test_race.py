"""Two writer processes overwrite one store in lock-step while a third process reads it: every
publish is a complete version, the loser of each race gets ConcurrentCommitError and publishes
nothing, no update reported as won is lost, and the reader only ever sees complete versions,
never older than one it saw before."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvio import KeyValueSystem
from kvio import layout, versions
from kvio.fs import FileIO

from . import racelib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ITERATIONS = 25
PERIOD = 0.12

pytestmark = pytest.mark.slow


def start(role: str, spec: dict) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, str(HERE / "racelib.py"), role, json.dumps(spec)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_writers_race_while_a_third_process_reads(ram_tmp):
    uri = str(ram_tmp / "raced store")
    racelib.write_version(KeyValueSystem(), uri, "init", mode="error")
    t0 = time.time() + 2.0  # after the interpreters have started
    until = t0 + ITERATIONS * PERIOD + 1.0
    procs = {name: start("writer", {"uri": uri, "name": name, "iterations": ITERATIONS, "t0": t0,
                                    "period": PERIOD, "pause": 0.03, "conf": {"kvio.versions.retain": "3"}, "out": str(ram_tmp / f"{name}.json")})
             for name in ("left", "right")}
    procs["reader"] = start("reader", {"uri": uri, "until": until, "out": str(ram_tmp / "reader.json")})
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {err[-3000:]}"

    results = [r for name in ("left", "right") for r in json.loads((ram_tmp / f"{name}.json").read_text())]
    won = [r for r in results if r["won"]]
    lost = [r for r in results if not r["won"]]
    assert all(r["error"] == "ConcurrentCommitError" and r["landed"] is False for r in lost), lost[:3]
    assert won and lost, "the writers never raced (machine too loaded?)"
    assert all(r["complete"] for r in won)

    # The commit log holds exactly the winners, in seq order, each once: nothing lost.
    history = versions.history(FileIO(uri))
    assert [d["seq"] for d in history] == list(range(1, len(history) + 1))
    assert len(history) == 1 + len(won)
    assert {(d["seq"], d["version"]) for d in history[1:]} == {(r["seq"], r["version"]) for r in won}
    tag_of_seq = {1: "init", **{r["seq"]: r["tag"] for r in won}}

    report = json.loads((ram_tmp / "reader.json").read_text())
    assert report["problems"] == []
    seen = report["seen"]
    assert len(seen) > 10
    assert all(tag_of_seq[s["seq"]] == s["tag"] for s in seen)  # complete and the published one
    assert [s["seq"] for s in seen] == sorted(s["seq"] for s in seen)  # never goes back

    kvs = KeyValueSystem()
    with kvs.open_store(uri) as reader:
        reader.verify()
        assert reader.commit["seq"] == history[-1]["seq"]
        assert set(v.rsplit(b"-", 1)[0] for v in reader.values()) == {tag_of_seq[history[-1]["seq"]].encode()}
    kvs.gc(uri, older_than=0)  # losers left nothing behind that a gc would not remove
    assert os.listdir(os.path.join(uri, layout.STAGING)) == []
    assert len(os.listdir(os.path.join(uri, layout.VERSIONS))) == 2  # the default retention
    print(f"race: {len(won)} publishes won, {len(lost)} lost with ConcurrentCommitError, "
          f"{len(seen)} complete reads")
