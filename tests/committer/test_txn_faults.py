"""Fault injection for updates, compaction and a transaction over three stores: a real child
process (tests/committer/txnfaultlib.py) is killed with SIGKILL at every step — every
filesystem mutation and protocol step, the frequent per-block/per-file ones sampled as in
test_faults.py. After each kill:

* each store is old or new exactly as the commit point implies (for the transaction: as its
  transaction record says, and all three stores agree);
* every read path agrees: the reader (scan, get, get_many, range, len, absent keys, verify),
  ``kvio scan`` and ``kvio verify``, the reader written from docs/FORMAT.md, and (transaction)
  ``open_stores`` over the three stores;
* ``kvio gc --older-than 0`` cleans what the crash left (a crashed transaction's undecided
  records are decided aborted and their versions removed) without changing what is read;
* a rerun converges to the new state, and after gc only the retained versions are left.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import shutil
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kvio import layout, pins, versions
from kvio.cli import main as cli_main
from kvio.fs import TMP_PREFIX, FileIO
from kvio.txn_state import forget
from tests.committer.forkserver import ForkServer

from . import faultlib, txnfaultlib
from .test_faults import observe, select_kill_points

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
_CLI = __import__("threading").Lock()  # the CLI prints to sys.stdout: one at a time

pytestmark = [pytest.mark.slow, pytest.mark.faults]


_FORKS = ForkServer("txnfaultlib")  # children forked from one process that imported kvio once


@pytest.fixture(scope="module", autouse=True)
def _fork_server():
    yield
    _FORKS.close()


def run_child(spec: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python txnfaultlib.py SPEC`` in a real process of its own (forked: see forkserver.py)."""
    return _FORKS.run(spec, timeout)


def other_paths(uri: str) -> dict | None:
    """What ``kvio scan`` and the reader written from the spec see; ``kvio verify`` passes."""
    from tests.format.spec_reader import SpecStore
    out = io.StringIO()
    with _CLI, contextlib.redirect_stderr(io.StringIO()):
        with contextlib.redirect_stdout(out):
            code = cli_main(["scan", "--json", "--hex", uri])
        if code == 0:
            with contextlib.redirect_stdout(io.StringIO()):
                assert cli_main(["verify", uri]) == 0
    if code != 0:
        return None
    scanned = {bytes.fromhex(d["key"]): bytes.fromhex(d["value"])
               for d in map(json.loads, out.getvalue().splitlines())}
    spec = SpecStore(uri)
    assert {k: spec.get(k) for k in scanned} == scanned
    return scanned


def see(sc: faultlib.Scenario, uri: str) -> dict | None:
    """The content through every read path, which must agree."""
    seen = observe(sc, uri)
    assert other_paths(uri) == seen
    return seen


def assert_clean(uri: str, retain: int = 2) -> None:
    """After gc --older-than 0: no staging, no temporary file, exactly the retained versions,
    each holding its manifest and the files it lists."""
    fio = FileIO(uri)
    if not fio.exists():
        return
    history = versions.history(fio)
    # A killed compaction held a reader's pin: it keeps its version until the lease expires
    # (docs/COMMIT.md, "Pins"), which is the point of a lease, not a leftover.
    pinned = set(pins.unexpired(pins.scan(fio), time.time()))
    kept = set(versions.retained_versions(history, retain)) | pinned
    assert set(fio.listdir(layout.VERSIONS)) == kept
    assert fio.listdir(layout.STAGING) == []
    assert set(fio.listdir()) <= {layout.COMMITS, layout.MARKER, layout.VERSIONS, layout.STAGING,
                                  layout.TXNS, layout.PINS}
    everything = [p[len(fio.root) + 1:] for p in fio.fs.find(fio.root, withdirs=True)]
    assert not [rel for rel in everything if posixpath.basename(rel).startswith(TMP_PREFIX)]
    for version in kept:
        listed = {p.path for p in versions.load_manifest(fio, version).partitions}
        vdir = layout.version_dir(version) + "/"
        files = {rel[len(vdir):] for rel in everything if rel.startswith(vdir) and fio.isfile(rel)}
        assert files == listed | {layout.MANIFEST}


def check_store_kill(sc: faultlib.Scenario, uri: str, event: dict) -> None:
    """update / compact: old or new by the commit record; compaction by its op."""
    expected = sc.new if event["published"] else sc.old
    assert see(sc, uri) == expected
    op = versions.read_state(FileIO(uri)).commit.op
    if sc.name == "compact":
        assert (op == "compact") == event["published"]
    sc.kvs().gc(uri, older_than=0)
    assert_clean(uri)
    assert see(sc, uri) == expected
    sc.run(uri)
    assert see(sc, uri) == sc.new
    sc.kvs().gc(uri, older_than=0)
    assert_clean(uri)
    assert see(sc, uri) == sc.new


def txn_decision(base: str) -> str | None:
    """The status of the transaction record in the first store (None: no decision)."""
    txns = Path(base, "a", layout.TXNS)
    names = [n for n in os.listdir(txns) if n.endswith(".txn") and not n.startswith(TMP_PREFIX)] \
        if txns.is_dir() else []
    assert len(names) <= 1
    if not names:
        return None
    return json.loads((txns / names[0]).read_bytes().split(b"\n", 1)[1])["status"]


def txn_state_of(sc: faultlib.Scenario, base: str) -> dict[str, dict | None]:
    seen = {s: see(sc, f"{base}/{s}") for s in txnfaultlib.TXN_STORES}
    present = [s for s in txnfaultlib.TXN_STORES if seen[s] is not None]
    readers = sc.kvs().open_stores([f"{base}/{s}" for s in present])
    try:
        assert {s: dict(r.items()) for s, r in zip(present, readers, strict=True)} == \
            {s: seen[s] for s in present}
    finally:
        for r in readers:
            r.close()
    return seen


def check_txn_kill(sc: faultlib.Scenario, base: str, event: dict) -> None:
    decision = txn_decision(base)
    assert (decision == "committed") == event["published"], (decision, event["published"])
    forget()  # no decision cached in this process: read it from the files
    expected = txnfaultlib.TXN_NEW if event["published"] else txnfaultlib.TXN_OLD
    assert txn_state_of(sc, base) == expected  # all three agree with the record
    for s in txnfaultlib.TXN_STORES:
        # c may not exist yet, or (killed before c's marker) hold only kvio's directories,
        # which gc refuses as "no store" as for any first create that died: the rerun does it.
        if os.path.exists(f"{base}/{s}/{layout.MARKER}"):
            sc.kvs().gc(f"{base}/{s}", older_than=0)  # decides a crashed transaction: aborted
            assert_clean(f"{base}/{s}")
    assert txn_decision(base) in (("committed",) if event["published"] else (None, "aborted"))
    assert txn_state_of(sc, base) == expected
    sc.run(base)
    assert txn_state_of(sc, base) == txnfaultlib.TXN_NEW
    for s in txnfaultlib.TXN_STORES:
        sc.kvs().gc(f"{base}/{s}", older_than=0)
        assert_clean(f"{base}/{s}")
    assert txn_state_of(sc, base) == txnfaultlib.TXN_NEW


@pytest.mark.parametrize("name", list(txnfaultlib.SCENARIOS))
def test_kill_at_every_step(name, ram_tmp):
    sc = txnfaultlib.SCENARIOS[name]
    template = str(ram_tmp / "template" / "store ü")  # a space and a non-ASCII letter
    sc.prepare(template)
    dry = str(ram_tmp / "dry" / "store ü")
    shutil.copytree(template, dry, symlinks=True)
    trace_file = ram_tmp / "trace.json"
    result = run_child({"scenario": name, "uri": dry, "trace": str(trace_file)})
    assert result.returncode == 0, result.stderr
    trace = json.loads(trace_file.read_text())
    points = select_kill_points(trace)
    assert any(e["published"] for e in points) and not all(e["published"] for e in points)

    def attempt(event: dict) -> str | None:
        uri = str(ram_tmp / f"kill-{event['n']:04d}" / "store ü")
        shutil.copytree(template, uri, symlinks=True)
        try:
            child = run_child({"scenario": name, "uri": uri, "kill": event["n"],
                               "expect": event["kind"]})
            assert child.returncode == -signal.SIGKILL, \
                f"kill point not reached ({child.returncode}): {child.stderr[-2000:]}"
            if name == "txn3":
                check_txn_kill(sc, uri, event)
            else:
                check_store_kill(sc, uri, event)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            return f"kill #{event['n']} {event['kind']} {event['detail']!r} ({event['phase']}): " \
                   f"{type(exc).__name__}: {exc}"
        shutil.rmtree(os.path.dirname(uri), ignore_errors=True)
        return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(attempt, points) if f]
    faultlib.REPORT.append({
        "scenario": name, "kills": len(points), "failed": len(failures),
        "phases": dict(Counter(e["phase"] for e in points)),
        "kinds": dict(Counter(e["kind"] for e in points)),
        "published_before_kill": sum(e["published"] for e in points)})
    assert not failures, "\n".join(failures[:10])
