"""Fixtures of the committer tests, and the fault-injection totals printed at the end of a run
(the numbers docs/COMMIT.md quotes)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from . import faultlib


@pytest.fixture
def ram_tmp(tmp_path):
    """A scratch directory on tmpfs when there is one: the same files and processes, without
    the ~7 ms per fsync of the disk (SIGKILL does not lose the page cache, so durability
    against power loss is not what these tests exercise)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="kvio-faults-", dir="/dev/shm"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def pytest_terminal_summary(terminalreporter):
    if not faultlib.REPORT:
        return
    kills = sum(r["kills"] for r in faultlib.REPORT)
    failed = sum(r["failed"] for r in faultlib.REPORT)
    terminalreporter.section("kvio fault injection")
    for r in faultlib.REPORT:
        terminalreporter.write_line(
            f"{r['scenario']:>10}: {r['kills']} SIGKILLs ({r['published_before_kill']} after the "
            f"commit point), {r['failed']} failed; phases {r['phases']}")
    terminalreporter.write_line(f"total: {kills} SIGKILLs, {kills - failed} survived with nothing "
                                f"lost, {failed} failed")
    target = os.environ.get("KVIO_FAULT_REPORT")
    if target:
        with open(target, "w") as f:
            json.dump(faultlib.REPORT, f, indent=1)
