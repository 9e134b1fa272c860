"""Two writer processes overwrite one store in rounds while a third process reads it: in every
round both writers start from the same version and publish at once, exactly one wins, the loser
gets ConcurrentCommitError and publishes nothing, no update reported as won is lost, and the
reader only ever sees a complete version, the one before the round or the one it publishes.

The rounds are fenced by barriers (see racelib), so every assertion holds whatever the
interleaving and however loaded the machine is; nothing here depends on timing."""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from kvio import KeyValueSystem, layout, versions
from kvio.fs import FileIO

from . import racelib
from .racelib import field

ROUNDS = 20

pytestmark = pytest.mark.slow


def test_two_writers_race_while_a_third_process_reads(ram_tmp):
    uri = str(ram_tmp / "raced store")
    racelib.write_version(KeyValueSystem(), uri, "init", mode="error")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited fsspec state
    ready, done = ctx.Barrier(3), ctx.Barrier(3)
    conf = {"kvio.versions.retain": "3"}
    out = {name: str(ram_tmp / f"{name}.json") for name in ("left", "right", "reader")}
    procs = {name: ctx.Process(target=racelib.writer, name=name, args=(
        {"uri": uri, "name": name, "rounds": ROUNDS, "conf": conf, "out": out[name]}, ready, done))
        for name in ("left", "right")}
    procs["reader"] = ctx.Process(target=racelib.reader, name="reader", args=(
        {"uri": uri, "rounds": ROUNDS, "out": out["reader"]}, ready, done))
    for proc in procs.values():
        proc.start()
    for name, proc in procs.items():
        proc.join(timeout=600)
        assert proc.exitcode == 0, f"{name} exited with {proc.exitcode}"

    results = [r for name in ("left", "right") for r in json.loads(Path(out[name]).read_text())]
    fatal = [r for r in results if "fatal" in r]
    assert fatal == [], fatal[0].get("traceback") if fatal else ""
    for i in range(ROUNDS):  # one winner and one loser in every round
        this_round = [r for r in results if r["round"] == i]
        assert sorted(r["won"] for r in this_round) == [False, True], this_round
    won = sorted((r for r in results if r["won"]), key=lambda r: r["round"])
    lost = [r for r in results if not r["won"]]
    assert all(r["error"] == "ConcurrentCommitError" and r["landed"] is False for r in lost)
    assert all(r["complete"] for r in won)

    # The commit log holds exactly the winners, in round order, each once: nothing lost.
    history = versions.history(FileIO(uri))
    assert [field(d, "seq") for d in history] == list(range(1, ROUNDS + 2))
    assert [(field(d, "seq"), field(d, "version")) for d in history[1:]] == \
        [(r["seq"], r["version"]) for r in won]
    tag_of_seq = {1: "init", **{r["seq"]: r["tag"] for r in won}}

    # The reader read once per round, while both writers published: it saw the version from
    # before the round (seq i + 1) or the round's winner (seq i + 2), complete, never older.
    report = json.loads(Path(out["reader"]).read_text())
    assert report["problems"] == []
    seen = report["seen"]
    assert [s["round"] for s in seen] == list(range(ROUNDS))
    assert all(s["seq"] in (s["round"] + 1, s["round"] + 2) for s in seen), seen
    assert all(tag_of_seq[s["seq"]] == s["tag"] for s in seen)

    kvs = KeyValueSystem(conf={"kvio.gc.grace": "0"})  # versions published milliseconds apart
    with kvs.open_store(uri) as reader:
        reader.verify()
        assert field(reader.commit, "seq") == ROUNDS + 1
        assert {v.rsplit(b"-", 1)[0] for v in reader.values()} == {won[-1]["tag"].encode()}
    kvs.gc(uri, older_than=0)  # losers left nothing behind that a gc would not remove
    assert os.listdir(os.path.join(uri, layout.STAGING)) == []
    assert len(os.listdir(os.path.join(uri, layout.VERSIONS))) == 2  # the default retention
