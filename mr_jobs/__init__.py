"""MapReduce (mrjob) jobs that read and write kvio stores.

``KVStoreJob`` is the base class users subclass; ``CloneStore`` (``mr_jobs.clone_store``)
copies a store through map and reduce. The protocols in ``mr_jobs.protocols`` carry arbitrary
bytes through Hadoop Streaming's line-oriented records. Needs the ``mr`` extra
(``pip install kvio[mr]``); docs/MAPREDUCE.md explains running on Hadoop.
"""
from __future__ import annotations

try:
    import mrjob  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("mr_jobs needs mrjob: install kvio with the 'mr' extra "
                      "(pip install 'kvio[mr]')") from exc

from .job import KVStoreJob  # noqa: E402
from .plan import Router, choose_split_points  # noqa: E402
from .protocols import (  # noqa: E402
    CommitMessageProtocol,
    HexProtocol,
    HexValueProtocol,
    RoutedPairProtocol,
    SortableBytesProtocol,
)

__all__ = ["KVStoreJob", "Router", "choose_split_points", "HexProtocol", "HexValueProtocol",
           "SortableBytesProtocol", "RoutedPairProtocol", "CommitMessageProtocol"]
