"""Named pause points for crash tests (``KVIO_SQL_PAUSE_AT``).

A test that proves crash safety sets ``KVIO_SQL_PAUSE_AT=<point>`` on a ``kvio sync`` process;
on reaching that point the process writes ``kvio-sql-pause: <point>`` to stderr and sleeps, and
the test kills it with SIGKILL there. Unset (always, outside such tests) this costs one
environment lookup per point.
"""
from __future__ import annotations

import os
import sys
import time

ENV = "KVIO_SQL_PAUSE_AT"
MARK = "kvio-sql-pause: "


def pause_point(name: str) -> None:
    """Block forever here when ``KVIO_SQL_PAUSE_AT`` names this point (a crash test kills the
    process while it waits).

    Args:
        name: the point's name (e.g. ``sync:before-commit``).
    """
    if name in os.environ.get(ENV, "").split(","):
        sys.stderr.write(MARK + name + "\n")
        sys.stderr.flush()
        while True:
            time.sleep(3600)
