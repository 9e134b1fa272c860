"""kill -9 during ``kvio sync``: the table holds the old or the new version, never a mix, and a
rerun makes it equal to the newest. A real ``kvio sync`` process is stopped at named points
(``KVIO_SQL_PAUSE_AT``, kvio/sql/hooks.py) and killed there with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import kvio
from kvio.sql import connect, parse_table_name, read_state
from kvio.sql.hooks import ENV, MARK

pytestmark = [pytest.mark.slow, pytest.mark.faults]

NO_COMPACT = {"kvio.compact.max.layers": "0", "kvio.compact.size.ratio": "0"}
CONF = [arg for k, v in NO_COMPACT.items() for arg in ("--conf", f"{k}={v}")]


def run_sync(uri, database, table, pause=None, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pause:
        env[ENV] = pause
    cmd = [sys.executable, "-m", "kvio", *CONF, "--no-progress", "sync", uri, database.url,
           "--table", table]
    if not pause:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 or not check, done.stderr
        return done
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the process reports it is at the point
            if line.startswith(MARK):
                assert line.strip() == MARK + pause
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f"kvio sync ended (status {proc.wait()}) before reaching {pause}")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def contents(kvs, uri):
    with kvs.open_store(uri) as reader:
        return reader.version, dict(reader.items())


def table_state(database, table):
    with connect(database.url) as db:
        name = parse_table_name(table)
        if not db.table_exists(name):
            return None, None
        state = read_state(db, name)
    return database.rows(table), state


def make(kvs, uri, n, tag=b"", mode="error"):
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many((b"key-%06d" % i, tag + b"v%d" % i) for i in range(n))


@pytest.mark.parametrize("pause", ["write:batch", "sync:before-state", "sync:before-commit",
                                   "sync:after-commit"])
def test_kill_during_first_sync(database, tmp_path, pause):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, 50_000)
    version, pairs = contents(kvs, uri)
    table = database.table()
    run_sync(uri, database, table, pause)
    rows, state = table_state(database, table)
    if pause == "sync:after-commit":
        assert rows == pairs and state is not None and state.version == version
    else:  # nothing of the killed transaction is visible: no table, no state
        assert rows is None and state is None
    run_sync(uri, database, table)
    assert table_state(database, table)[0] == pairs


# (a replace has no incremental chunks, so no "sync:after-chunk" point)
@pytest.mark.parametrize("change,pause", [
    ("update", "sync:staged"), ("update", "sync:after-chunk"), ("update", "sync:before-commit"),
    ("update", "sync:after-commit"), ("overwrite", "write:batch"),
    ("overwrite", "sync:before-commit"), ("overwrite", "sync:after-commit")])
def test_kill_during_later_sync(database, tmp_path, pause, change):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, 40_000)
    table = database.table()
    run_sync(uri, database, table)
    old_version, old = contents(kvs, uri)
    if change == "update":
        with kvs.update_store(uri) as u:
            for i in range(0, 40_000, 2):  # more keys than one chunk of the incremental path
                if i % 4:
                    u.delete(b"key-%06d" % i)
                else:
                    u.set(b"key-%06d" % i, b"new")
    else:
        make(kvs, uri, 45_000, tag=b"o", mode="overwrite")
    new_version, new = contents(kvs, uri)
    run_sync(uri, database, table, pause)
    rows, state = table_state(database, table)
    assert rows in (old, new)  # exactly one of the two versions
    expected = (new, new_version) if pause == "sync:after-commit" else (old, old_version)
    assert rows == expected[0]
    assert state is not None and state.version == expected[1]
    done = run_sync(uri, database, table)
    assert ("incremental" if change == "update" else "replace") in done.stdout \
        or pause == "sync:after-commit"
    assert table_state(database, table)[0] == new
