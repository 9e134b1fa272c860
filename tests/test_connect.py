"""Bounded first contact with HDFS NameNodes (kvio/connect.py): an unreachable NameNode ends
a command with ``kvio: error:`` naming the URI instead of hanging for minutes. Real sockets and
real ``python -m kvio`` processes; no cluster is needed because each case fails before HDFS."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kvio import KeyValueSystem
from kvio.config import Config
from kvio.connect import namenode_address
from kvio.errors import ConfigError, FilesystemUnreachableError
from kvio.fs import FileIO
from tests.helpers import require_module

require_module("hdfs_native", "the hdfs extra (kvio[hdfs]) is not installed")
REPO = Path(__file__).resolve().parents[1]
# A generous bound for a command that must end by itself (not a timing measurement: without
# the fix these commands take about three minutes, or never end).
MUST_END_WITHIN = 60


def kvio_cmd(*argv: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env,
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "kvio", *argv], env=full_env,
                          capture_output=True, text=True, timeout=MUST_END_WITHIN)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


@pytest.fixture
def silent_namenode():
    """A port that accepts TCP connections (the kernel completes them) but never answers."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


@pytest.fixture
def blackhole():
    """A port whose connection attempts get no reply at all, like a firewall that drops
    packets: the listener's backlog is full and never accepted, so the kernel drops SYNs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.skip("this kernel accepted a connection beyond a full backlog; no blackhole")
    except TimeoutError:
        pass
    finally:
        probe.close()
    try:
        yield port
    finally:
        for c in fillers:
            c.close()
        srv.close()


def test_a_closed_namenode_port_fails_at_once_naming_the_uri():
    uri = f"hdfs://127.0.0.1:{closed_port()}/data/store"
    proc = kvio_cmd("info", uri)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("kvio: error: cannot reach the HDFS NameNode 127.0.0.1:")
    assert "Connection refused" in proc.stderr and f"store={uri}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_1_as_in_the_issue():
    proc = kvio_cmd("info", "hdfs://127.0.0.1:1/x")
    assert proc.returncode == 1
    assert proc.stderr.startswith("kvio: error: cannot reach the HDFS NameNode 127.0.0.1:1")
    assert "store=hdfs://127.0.0.1:1/x" in proc.stderr


def test_a_blackholed_namenode_fails_after_the_configured_timeout(blackhole):
    uri = f"hdfs://127.0.0.1:{blackhole}/store"
    proc = kvio_cmd("info", uri, KVIO_FS_CONNECT_TIMEOUT="2s")
    assert proc.returncode == 1
    assert proc.stderr == (f"kvio: error: the HDFS NameNode 127.0.0.1:{blackhole} did not answer "
                           "within 2s (kvio.fs.connect.timeout): check the address and that the "
                           f"NameNode is up | store={uri}\n")


def test_a_namenode_that_accepts_but_never_answers_fails_after_the_timeout(silent_namenode,
                                                                           tmp_path):
    uri = f"hdfs://127.0.0.1:{silent_namenode}/store"
    conf = tmp_path / "kvio.conf"
    conf.write_text("kvio.fs.connect.timeout = 1.5s\n")
    for argv in (("info", uri), ("rm", uri), ("versions", uri)):
        proc = kvio_cmd(*argv, KVIO_CONF=str(conf))
        assert proc.returncode == 1, argv
        assert proc.stderr.startswith(f"kvio: error: the HDFS NameNode 127.0.0.1:{silent_namenode} "
                                      "did not answer within 1.5s"), argv
        assert f"store={uri}" in proc.stderr


def test_building_a_fileio_contacts_nothing_and_its_first_use_checks():
    uri = f"hdfs://127.0.0.1:{closed_port()}/s"
    io = FileIO(uri, connect_timeout=5)  # no NameNode needed to build it
    assert io.root == "/s" and io.atomic_rename
    with pytest.raises(FilesystemUnreachableError, match="Connection refused") as info:
        io.exists()
    assert info.value.store == uri
    with pytest.raises(FilesystemUnreachableError):  # a failed check is tried again next time
        io.listdir()


def test_the_setting_has_a_bounded_default_and_rejects_nonsense(monkeypatch):
    assert Config().connect_timeout == 20
    assert Config({"kvio.fs.connect.timeout": "90s"}).connect_timeout == 90
    for bad in ("0s", "-1", "soon"):
        with pytest.raises(ConfigError, match="kvio.fs.connect.timeout"):
            Config({"kvio.fs.connect.timeout": bad})


@pytest.mark.parametrize("uri, address", [
    ("hdfs://nn.example.com:8020/a", ("nn.example.com", 8020)),
    ("hdfs://127.0.0.1:1/x", ("127.0.0.1", 1)),
    ("hdfs://nameservice1/a", None),   # HA name service: NameNodes from the Hadoop config
    ("hdfs:///a", None),               # fs.defaultFS
    ("viewfs://cluster/a", None),
    ("hdfs://nn:notaport/a", None),
])
def test_namenode_address(uri, address):
    assert namenode_address(uri) == address


def test_conf_argument_reaches_the_timeout(silent_namenode):
    """``conf=`` (and the CLI's ``--conf``) sets kvio.fs.connect.timeout, not only the defaults
    file and the environment."""
    uri = f"hdfs://127.0.0.1:{silent_namenode}/store"
    kvs = KeyValueSystem(conf={"kvio.fs.connect.timeout": "1.25s"})
    with pytest.raises(FilesystemUnreachableError, match=r"within 1\.25s"):
        kvs.open_store(uri)
    proc = kvio_cmd("--conf", "kvio.fs.connect.timeout=1.25s", "info", uri)
    assert proc.returncode == 1 and "within 1.25s" in proc.stderr
