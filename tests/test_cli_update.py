"""kvio set, del, apply and compact from a shell (real subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    # The compaction policy off: these tests look at the delta layers the updates leave.
    env = dict(os.environ, KVIO_COMPACT_MAX_LAYERS="0")
    return subprocess.run([sys.executable, "-m", "kvio", "--no-progress", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def test_cli_set_del_apply_compact_scan(tmp_path):
    uri = str(tmp_path / "s")
    assert _cli("set", uri, "k1", "v1").returncode == 0
    assert _cli("set", "--hex", uri, "6b32", "7632").returncode == 0
    assert _cli("set", uri, "k3", "v3").returncode == 0
    done = _cli("del", uri, "k1", "nope")
    assert done.returncode == 0, done.stderr
    ops = tmp_path / "ops.tsv"
    ops.write_text("set\tk9\tv9\ndel\tk3\nset\tk0\tv0\n")
    done = _cli("apply", uri, str(ops))
    assert done.returncode == 0, done.stderr
    jl = tmp_path / "ops.jsonl"
    jl.write_text(json.dumps({"op": "del", "key": "k0"}) + "\n"
                  + json.dumps({"op": "set", "key": "k5", "value": "v5"}) + "\n")
    assert _cli("apply", uri, str(jl)).returncode == 0
    scan = _cli("scan", uri)
    assert scan.returncode == 0 and scan.stdout.split() == ["k2", "v2", "k5", "v5", "k9", "v9"]
    info = json.loads(_cli("info", "--json", uri).stdout)
    assert any(p["tombstones"] for p in info["partitions"]) and info["count"] == 3
    assert " del " in _cli("info", uri).stdout
    done = _cli("compact", uri)
    assert done.returncode == 0, done.stderr
    assert _cli("scan", uri).stdout == scan.stdout
    assert _cli("verify", uri).returncode == 0
    assert _cli("get", uri, "k1").returncode == 1  # deleted
    assert _cli("del", "--base64", uri, "azk=").returncode == 0  # k9
    hexops = tmp_path / "ops2.tsv"
    hexops.write_text("set\t6b37\t7637\ndel\t6b35\n")  # set k7=v7, del k5
    assert _cli("apply", "--hex", uri, str(hexops)).returncode == 0
    assert _cli("scan", uri).stdout.split() == ["k2", "v2", "k7", "v7"]
    assert _cli("set", "--hex", uri, "zz", "00").returncode == 2
    bad = tmp_path / "bad.tsv"
    bad.write_text("upsert\tk\tv\n")
    done = _cli("apply", uri, str(bad))
    assert done.returncode == 1 and done.stderr.startswith("kvio: error:") and "Traceback" not in done.stderr
    assert _cli("compact", str(tmp_path / "none")).returncode == 1

