"""Prints the fault-injection totals at the end of a run (the numbers docs/COMMIT.md quotes)."""
from __future__ import annotations

import json
import os

from . import faultlib


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
