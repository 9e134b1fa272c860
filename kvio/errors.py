"""One exception hierarchy for everything kvio raises on purpose.

Every error carries the store URI and, where one is involved, the partition file and the key,
so a message read in a Spark driver log or a cron mail is enough to find the problem.
"""
from __future__ import annotations


def _show_key(key: bytes | None, limit: int = 64) -> str:
    if key is None:
        return "None"
    text = repr(bytes(key[:limit]))
    return text + ("..." if len(key) > limit else "")


class KvioError(Exception):
    """Base class of every error kvio raises deliberately."""

    def __init__(self, message: str, *, store: str | None = None, file: str | None = None,
                 key: bytes | None = None):
        self.store = store
        self.file = file
        self.key = key
        parts = [message]
        if store:
            parts.append(f"store={store}")
        if file:
            parts.append(f"file={file}")
        if key is not None:
            parts.append(f"key={_show_key(key)}")
        super().__init__(" | ".join(parts))


class StoreExistsError(KvioError):
    """create_store on a URI that already holds a store (mode='error')."""


class StoreNotFoundError(KvioError):
    """Nothing at the URI, or the store was deleted."""


class NotAStoreError(KvioError):
    """The path exists but is not a kvio store (a plain directory or file)."""


class IncompleteStoreError(KvioError):
    """The store was started but no version was ever published (writer never finished)."""


class CorruptStoreError(KvioError):
    """A checksum, magic number, size or structural check failed: the bytes cannot be trusted."""


class UnsupportedFormatError(CorruptStoreError):
    """The file was written by a format version this kvio does not know."""


class KeyOrderError(KvioError):
    """Keys were not strictly increasing in unsigned byte order (includes duplicates)."""


class PairTooLargeError(KvioError):
    """One key/value pair is larger than the partition size limit."""


class ConfigError(KvioError):
    """A setting has an unknown name or an unparsable value."""


class CommitError(KvioError):
    """A job or task commit failed. `landed` says whether the publish happened:
    False = definitely not published (staging may be cleaned), None = unknown (clean nothing)."""

    def __init__(self, message: str, *, landed: bool | None = False, **kw):
        self.landed = landed
        super().__init__(message, **kw)


class ConcurrentCommitError(CommitError):
    """Another job published to the same store after this job started (compare-and-swap lost)."""


class UnsafeFilesystemError(KvioError):
    """The filesystem cannot publish atomically and the user did not opt in to unsafe commits."""


class WriterClosedError(KvioError):
    """put() after the writer was committed or aborted."""


class InvalidArgumentError(KvioError, ValueError):
    """An argument a caller passed is wrong (bad type, empty, out of range, contradictory).

    Also a ``ValueError``, so code that guards calls with ``except ValueError`` keeps working."""


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type (e.g. ``str`` where a key must be ``bytes``). Also a
    ``TypeError``, as Python's own type errors are, so both kinds of handler catch it."""


class ReaderClosedError(KvioError):
    """A reader (or a partition reader) was used after ``close()``."""


class VersionNotRetainedError(StoreNotFoundError):
    """The version asked for is in the store's history but its files were removed by retention
    or ``gc`` (or it was never retained)."""


class FilesystemUnreachableError(KvioError):
    """A remote filesystem (an HDFS NameNode) refused the connection or did not answer within
    ``kvio.fs.connect.timeout``."""


class DatabaseError(KvioError):
    """A SQL database (kvio.sql) refused an operation or could not be reached; the message names
    the database URL (never its password) and the table."""
