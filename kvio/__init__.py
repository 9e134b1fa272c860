"""kvio: partitioned, write-once key-value stores for Spark and MapReduce pipelines.

The core imports no Spark and no mrjob; see ``spark_jobs`` and ``mr_jobs`` for those.
"""
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ArgumentTypeError,
    CommitError,
    ConcurrentCommitError,
    ConfigError,
    CorruptStoreError,
    IncompleteStoreError,
    InvalidArgumentError,
    KeyOrderError,
    KvioError,
    NotAStoreError,
    PairTooLargeError,
    ReaderClosedError,
    StoreExistsError,
    StoreNotFoundError,
    UnsafeFilesystemError,
    UnsupportedFormatError,
    VersionNotRetainedError,
    WriterClosedError,
)
from .reader import StoreReader  # noqa: E402
from .system import KeyValueSystem  # noqa: E402
from .writer import StoreWriter  # noqa: E402

# kvio.connect is the client's function, not the submodule kvio/connect.py (HDFS first
# contact), which is imported first so that loading it later cannot rebind the name.
from . import connect as _hdfs_connect  # noqa: E402, F401  # isort: skip
from .client import RemoteStore, connect  # noqa: E402  # isort: skip
from .near_cache import CacheStats, NearCache  # noqa: E402  # isort: skip

__all__ = [
    "KeyValueSystem", "StoreReader", "ArgumentTypeError", "StoreWriter", "KvioError", "StoreExistsError",
    "StoreNotFoundError", "NotAStoreError", "IncompleteStoreError", "CorruptStoreError",
    "UnsupportedFormatError", "KeyOrderError", "PairTooLargeError", "ConfigError", "CommitError",
    "ConcurrentCommitError", "UnsafeFilesystemError", "WriterClosedError", "InvalidArgumentError",
    "ReaderClosedError", "VersionNotRetainedError", "connect", "RemoteStore", "NearCache",
    "CacheStats",
]
