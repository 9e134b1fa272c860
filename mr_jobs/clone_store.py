"""CloneStore: copy a kvio store through map and reduce, optionally into a different number
of partitions.

    python mr_jobs/clone_store.py -r inline|local|hadoop SRC --output-store DEST \\
        [--output-partitions N] [--output-mode error|overwrite|ignore]

Every pair goes through the mapper, the shuffle and a reducer; the result is a new store with
the same pairs whose partitions are disjoint key ranges. ``scripts/clone-store`` wraps this and
verifies the copy.
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a script from a source checkout
    try:
        import mr_jobs  # noqa: F401
    except ImportError:
        import os
        import sys
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mr_jobs.job import KVStoreJob  # noqa: E402


class CloneStore(KVStoreJob):
    """Identity map and reduce (the defaults of KVStoreJob): every key keeps its value."""


if __name__ == "__main__":
    CloneStore.run()
