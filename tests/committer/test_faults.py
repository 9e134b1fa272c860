"""Fault injection: a writer in a real subprocess is killed with SIGKILL at every step of the
commit protocol, for a first create, an overwrite through the task protocol, an append, a
rollback and a garbage collection (tests/committer/faultlib.py has the scenarios and the kill
points). After each kill:

* the store is absent, or the previous complete version, or the new complete version — and
  exactly the one the kill point implies (new iff the commit record had been created);
* every reader answer is correct (scan, point lookups, absent keys, len) and verify() passes;
* a rerun of the same job converges to the new version, and after ``gc --older-than 0`` no
  staging, temporary file, orphaned version or file of a failed attempt is left.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvio import IncompleteStoreError, NotAStoreError, StoreExistsError, StoreNotFoundError, layout, versions
from kvio.fs import TMP_PREFIX, FileIO

from . import faultlib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ABSENT_KEYS = [b"", b"a", b"k", b"k0", b"k99999", b"k00400", b"z"]
THIN = {"before block write": 3, "after partition finish": 2, "before validating a file": 2}

pytestmark = pytest.mark.slow


def run_child(spec: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(HERE / "faultlib.py"), json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def select_kill_points(trace: list[dict]) -> list[dict]:
    """Every event, except that the very frequent ones (one per block written, per partition
    finished or validated) are sampled: the first, the last and ones in between."""
    by_kind: dict[str, list[dict]] = {}
    for event in trace:
        by_kind.setdefault(event["kind"], []).append(event)
    chosen = []
    for kind, events in by_kind.items():
        want = THIN.get(kind)
        if want is None or len(events) <= want:
            chosen += events
        else:
            step = (len(events) - 1) / (want - 1)
            chosen += [events[round(i * step)] for i in range(want)]
            if kind == "before block write":
                chosen.append(events[1])  # mid-way through the first partition file
    return sorted({e["n"]: e for e in chosen}.values(), key=lambda e: e["n"])


def observe(sc: faultlib.Scenario, uri: str) -> dict | None:
    """The store's content as every read path sees it (None: no store), after verify()."""
    kvs = sc.kvs()
    try:
        reader = kvs.open_store(uri)
    except (StoreNotFoundError, IncompleteStoreError, NotAStoreError):
        # No store: nothing at all, or only what a first create that died left behind.
        assert not os.path.exists(uri) or all(
            n in (layout.MARKER, layout.STAGING, layout.VERSIONS, layout.COMMITS)
            or n.startswith(TMP_PREFIX) for n in os.listdir(uri))
        return None
    with reader:
        reader.verify()
        items = dict(reader.items())
        keys = list(items)
        assert list(reader) == keys == sorted(keys)
        assert reader.get_many(keys) == list(items.values())
        assert all(reader.get(k) == v for k, v in items.items())
        assert all(reader.get(k) is None for k in ABSENT_KEYS if k not in items)
        assert len(reader) == len(items)
        if keys:
            mid = keys[len(keys) // 2]
            assert dict(reader.items(start=mid)) == {k: v for k, v in items.items() if k >= mid}
    return items


def assert_clean(sc: faultlib.Scenario, uri: str) -> None:
    """After gc --older-than 0: only the marker, the commit log and the retained versions,
    each holding exactly its manifest and the files the manifest lists."""
    io = FileIO(uri)
    retain = int(sc.conf.get("kvio.versions.retain", 2))
    history = versions.history(io)
    assert [d.seq for d in history] == list(range(1, len(history) + 1))
    kept = versions.retained_versions(history, retain)
    assert history[-1].version == kept[0]
    assert sorted(io.listdir(layout.VERSIONS)) == sorted(kept)
    assert io.listdir(layout.STAGING) == []
    assert sorted(io.listdir()) == sorted([layout.COMMITS, layout.MARKER, layout.STAGING, layout.VERSIONS])
    for version in kept:
        manifest = versions.load_manifest(io, version)
        listed = {p.path for p in manifest.partitions}
        files = set()
        for top, _dirs, names in os.walk(os.path.join(uri, layout.version_dir(version))):
            for name in names:
                rel = os.path.relpath(os.path.join(top, name), os.path.join(uri, layout.version_dir(version)))
                files.add(rel.replace(os.sep, "/"))
        assert files == listed | {layout.MANIFEST}
    for top, dirs, names in os.walk(uri):
        assert not [n for n in dirs + names if n.startswith(TMP_PREFIX)], top


def check_one_kill(sc: faultlib.Scenario, template: Path, work: Path, event: dict) -> None:
    uri = str(work / "store ü")  # a space and a non-ASCII letter in every path
    if template.exists():
        shutil.copytree(template, uri, symlinks=True)
    result = run_child({"scenario": sc.name, "uri": uri, "kill": event["n"], "expect": event["kind"]})
    assert result.returncode == -signal.SIGKILL, \
        f"kill point not reached or child failed ({result.returncode}): {result.stderr[-2000:]}"
    expected = sc.new if event["published"] else sc.old
    seen = observe(sc, uri)
    if seen != expected:
        what = "absent" if seen is None else \
            "old" if seen == sc.old else "new" if seen == sc.new else "a mix"
        raise AssertionError(f"after the kill the store is {what}; expected the "
                             f"{'new' if event['published'] else 'old'} version")
    try:
        getattr(sc, "rerun", sc.run)(uri)
    except StoreExistsError:
        assert sc.rerun_may_refuse and event["published"]
    assert observe(sc, uri) == sc.new
    sc.kvs().gc(uri, older_than=0)
    assert_clean(sc, uri)
    assert observe(sc, uri) == sc.new


@pytest.mark.parametrize("name", list(faultlib.SCENARIOS))
def test_kill_at_every_step(name, ram_tmp):
    tmp_path = ram_tmp
    sc = faultlib.SCENARIOS[name]
    template = tmp_path / "template" / "store ü"
    sc.prepare(str(template))
    dry = tmp_path / "dry"
    shutil.copytree(template, dry / "store ü", symlinks=True) if template.exists() else None
    trace_file = tmp_path / "trace.json"
    result = run_child({"scenario": name, "uri": str(dry / "store ü"), "trace": str(trace_file)})
    assert result.returncode == 0, result.stderr
    trace = json.loads(trace_file.read_text())
    assert observe(sc, str(dry / "store ü")) == sc.new
    points = select_kill_points(trace)
    assert points and any(e["published"] for e in points) == (name != "gc")

    def attempt(event: dict) -> str | None:
        work = tmp_path / f"kill-{event['n']:04d}"
        try:
            check_one_kill(sc, template, work, event)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            return f"kill #{event['n']} {event['kind']} {event['detail']!r} ({event['phase']}): " \
                   f"{type(exc).__name__}: {exc}"
        shutil.rmtree(work, ignore_errors=True)
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(attempt, points) if f]
    faultlib.REPORT.append({
        "scenario": name, "kills": len(points), "failed": len(failures),
        "phases": dict(Counter(e["phase"] for e in points)),
        "kinds": dict(Counter(e["kind"] for e in points)),
        "published_before_kill": sum(e["published"] for e in points)})
    assert not failures, "\n".join(failures[:10])
