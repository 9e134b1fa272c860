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
import posixpath
import shutil
import signal
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvio import IncompleteStoreError, NotAStoreError, StoreExistsError, StoreNotFoundError, layout, versions
from kvio.fs import TMP_PREFIX, FileIO
from tests.committer.forkserver import ForkServer

from . import faultlib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ABSENT_KEYS = [b"", b"a", b"k", b"k0", b"k99999", b"k00400", b"z"]
THIN = {"before block write": 3, "after partition finish": 2, "before validating a file": 2}
# On the S3 server every kill costs a fresh child process and many requests: the steps that
# repeat per block, per partition file and per validation are sampled more thinly there (the
# protocol's own steps, every create-only put and delete, are all still killed at).
THIN_S3 = {"after partition finish": 1, "before validating a file": 1}
#: Steps that change nothing on an object store, so a kill before them leaves the same objects
#: as a kill at the previous point: directories do not exist there, and s3fs sends a file's
#: bytes when it is closed (blocks are buffered in the client). "after write_new_file" follows
#: "after create-only put" with nothing in between.
S3_NOOPS = {"before makedirs", "before create_dir", "before mkdir", "before open_output",
            "before block write", "after write_new_file"}

pytestmark = [pytest.mark.slow, pytest.mark.faults]


_FORKS = ForkServer("faultlib")  # children forked from one process that imported kvio once


@pytest.fixture(scope="module", autouse=True)
def _fork_server():
    yield
    _FORKS.close()


def run_child(spec: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python faultlib.py SPEC`` in a real process of its own (forked: see forkserver.py)."""
    return _FORKS.run(spec, timeout)


def select_kill_points(trace: list[dict], thin: dict[str, int] = THIN) -> list[dict]:
    """Every event, except that the very frequent ones (one per block written, per partition
    finished or validated) are sampled: the first, the last and ones in between."""
    by_kind: dict[str, list[dict]] = {}
    for event in trace:
        by_kind.setdefault(event["kind"], []).append(event)
    chosen = []
    for kind, events in by_kind.items():
        want = thin.get(kind)
        if want is None or len(events) <= want:
            chosen += events
        elif want == 1:
            chosen.append(events[len(events) // 2])
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
        assert all(n in (layout.MARKER, layout.STAGING, layout.VERSIONS, layout.COMMITS)
                   or n.startswith(TMP_PREFIX) for n in FileIO(uri).listdir())
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
    # Object stores have no empty directories, and nothing is staged there.
    staging = [layout.STAGING] if io.is_local else []
    assert sorted(io.listdir()) == sorted([layout.COMMITS, layout.MARKER, layout.VERSIONS] + staging)
    everything = [p[len(io.root) + 1:] for p in io.fs.find(io.root, withdirs=True)]
    for version in kept:
        manifest = versions.load_manifest(io, version)
        listed = {p.path for p in manifest.partitions}
        vdir = layout.version_dir(version) + "/"
        files = {rel[len(vdir):] for rel in everything if rel.startswith(vdir) and io.isfile(rel)}
        assert files == listed | {layout.MANIFEST}
    assert not [rel for rel in everything if posixpath.basename(rel).startswith(TMP_PREFIX)]


def check_one_kill(sc: faultlib.Scenario, template: str, uri: str, event: dict) -> None:
    copy_store(template, uri)
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


def copy_store(template: str, uri: str) -> None:
    """A fresh copy of the starting store (nothing when the job starts from no store)."""
    src, dst = FileIO(template), FileIO(uri)
    if src.is_local:
        if os.path.exists(template):
            shutil.copytree(template, uri, symlinks=True)
        return
    for path in src.fs.find(src.root):  # server-side copies, object by object
        dst.fs.copy(path, dst.root + path[len(src.root):])


def remove_store(uri: str) -> None:
    FileIO(uri).delete_tree()


# Scenarios run against the S3 server too: the ones whose commit differs there (no rename, a
# create-only put as the commit point). rollback and gc use the same steps as append and gc's
# scenario builds its leftovers with local files.
S3_SCENARIOS = ("create", "overwrite", "append")


@pytest.mark.parametrize("name,filesystem", [(n, "local") for n in faultlib.SCENARIOS]
                         + [(n, "s3") for n in S3_SCENARIOS])
def test_kill_at_every_step(name, filesystem, request, monkeypatch):
    sc = faultlib.SCENARIOS[name]
    if filesystem == "local":
        tmp_path = request.getfixturevalue("ram_tmp")
        base = str(tmp_path)
    else:
        server = request.getfixturevalue("s3_server")
        # The children and this process reach the server through the standard environment
        # (the server runs in this process; killing a child does not touch it).
        for var, val in server.env.items():
            monkeypatch.setenv(var, val)
        base = f"s3://{server.new_bucket('kvio-faults')}"
        tmp_path = request.getfixturevalue("tmp_path")
    template = f"{base}/template/store ü"  # a space and a non-ASCII letter in every path
    sc.prepare(template)
    dry = f"{base}/dry/store ü"
    copy_store(template, dry)
    trace_file = tmp_path / "trace.json"
    result = run_child({"scenario": name, "uri": dry, "trace": str(trace_file)})
    assert result.returncode == 0, result.stderr
    trace = json.loads(trace_file.read_text())
    assert observe(sc, dry) == sc.new
    if filesystem == "local":
        points = select_kill_points(trace)
    else:
        points = select_kill_points([e for e in trace if e["kind"] not in S3_NOOPS], THIN_S3)
    assert points and any(e["published"] for e in points) == (name != "gc")

    def attempt(event: dict) -> str | None:
        uri = f"{base}/kill-{event['n']:04d}/store ü"
        try:
            check_one_kill(sc, template, uri, event)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            return f"kill #{event['n']} {event['kind']} {event['detail']!r} ({event['phase']}): " \
                   f"{type(exc).__name__}: {exc}"
        remove_store(uri)
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(attempt, points) if f]
    faultlib.REPORT.append({
        "scenario": name if filesystem == "local" else f"{name} ({filesystem})",
        "kills": len(points), "failed": len(failures),
        "phases": dict(Counter(e["phase"] for e in points)),
        "kinds": dict(Counter(e["kind"] for e in points)),
        "published_before_kill": sum(e["published"] for e in points)})
    assert not failures, "\n".join(failures[:10])
