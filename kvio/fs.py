"""The I/O seam for stores: fsspec and each filesystem's atomic publish live here.

Everything else asks a :class:`FileIO` to read, write, list and publish. It wraps an fsspec
filesystem and adds the one operation fsspec lacks, an atomic *no-clobber* publish. How that
step is done depends on what the filesystem can do, detected from its fsspec class (see
:func:`detect_capability` and docs/COMMIT.md):

* ``local`` (fsspec's LocalFileSystem): a file is published with ``os.link``, which is atomic
  and fails if the target exists; a directory is renamed only after claiming the target name
  with ``mkdir``, because ``os.rename`` silently replaces an *empty* directory.
* ``hdfs-rename-noreplace`` (hdfs-native's fsspec filesystem, which registers itself for
  ``hdfs://`` and ``viewfs://``): HDFS ``rename2`` without the OVERWRITE option is atomic in
  the NameNode and fails with FileAlreadyExistsException (FileExistsError) if the target exists.
* ``memory`` (fsspec's ``memory://``): a process-wide lock makes check-then-move atomic; the
  memory filesystem is private to one process anyway.
* ``create-only`` (s3fs, adlfs and gcsfs from 2024.12 on, whose ``pipe_file(mode="create")`` is a
  conditional put: S3 ``If-None-Match: *``, Azure ``overwrite=False``, GCS
  ``ifGenerationMatch=0``): a file is published with one create-only whole-object write, which
  the server refuses when the object exists. There is no rename: a job writes its files
  straight to their final names and the commit record alone makes them visible
  (kvio/publish.py).
* ``none``: everything else — older object-store libraries, plain HTTP, FTP, WebHDFS (fsspec
  ignores RENAME's false result) and pyarrow's HadoopFileSystem (Arrow's ``Move`` deletes an
  existing target file, then renames).
  Publishing is refused unless ``kvio.commit.allow.non.atomic`` is set; then a commit record is
  one whole-object write with fsspec's ``mode="create"`` (a conditional put where the backend
  implements it, check-then-write otherwise) and directories move with a plain ``mv``.
"""
from __future__ import annotations

import errno
import importlib.metadata
import os
import posixpath
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from typing import IO, Any

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from .config import Config
from .connect import check_reachable
from .direct_io import DirectFile, open_new
from .errors import InvalidArgumentError, UnsafeFilesystemError

_MEMORY_LOCK = threading.Lock()
_HDFS_NATIVE_PROTOCOLS = {"hdfs", "viewfs"}

LOCAL = "local"
MEMORY = "memory"
HDFS_NOREPLACE = "hdfs-rename-noreplace"
CREATE_ONLY = "create-only"
NONE = "none"
ATOMIC_CAPABILITIES = frozenset({LOCAL, MEMORY, HDFS_NOREPLACE, CREATE_ONLY})
#: Filesystem classes whose ``pipe_file(mode="create")`` is a real conditional put, by
#: (package, class name) -> the first release that sends it. fsspec's base class implements
#: mode="create" as exists-then-write (not atomic), so nothing else is trusted.
_CREATE_ONLY_CLASSES = {
    ("s3fs", "S3FileSystem"): (2024, 12),
    ("adlfs", "AzureBlobFileSystem"): (2024, 12),
    ("gcsfs", "GCSFileSystem"): (2024, 12),
}
#: S3 answers 409 (ConditionalRequestConflict) when two conditional puts of one key overlap;
#: s3fs raises it as OSError(EBUSY). The put did not happen: try again.
_CREATE_CONFLICT_RETRIES = 8


_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")


def is_url(uri: str) -> bool:
    """Whether a URI names its protocol explicitly (everything else is a plain local path).

    Args:
        uri: a store URI or file name as the user typed it.

    Returns:
        True for ``proto://...`` and for an fsspec chain whose first element is a protocol
        fsspec knows (``simplecache::s3://bucket/key``). False otherwise: ``a::b`` is the local
        path ``a::b``, not a chain, and ``a:b`` is the local path ``a:b``.
    """
    if _URL_SCHEME.match(uri):
        return True
    head, sep, _ = uri.partition("::")
    return bool(sep) and head in fsspec.available_protocols()


def filesystem_for(uri: str, storage_options: dict[str, Any] | None = None
                   ) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path a URI means. Only a URI with an explicit protocol (see
    :func:`is_url`) goes through fsspec's URL parsing; fsspec would read a local path such as
    ``data::v2`` as a chained URL and use ``./data:`` instead (so two stores would share one
    directory, and deleting one would delete something else).

    Args:
        uri: a URL or a local path (relative paths are made absolute).
        storage_options: passed to the filesystem (credentials, endpoints, client settings).

    Returns:
        (filesystem, path on that filesystem).
    """
    options = dict(storage_options or {})
    if not is_url(uri):
        return LocalFileSystem(**options), os.path.abspath(uri)
    return url_to_fs(uri, **options)


def _protocols(fs: Any) -> set[str]:
    proto = getattr(fs, "protocol", ())
    if isinstance(proto, str):
        return {proto}
    return set(proto) if isinstance(proto, (tuple, list, set, frozenset)) else set()


def _is_hdfs_native(cls: type) -> bool:
    return any(k.__module__.split(".")[0] == "hdfs_native" for k in cls.__mro__)


def detect_capability(fs: fsspec.AbstractFileSystem | type) -> tuple[str, str]:
    """(capability, reason) of an fsspec filesystem instance or class."""
    cls = fs if isinstance(fs, type) else type(fs)
    protos = _protocols(fs)
    if issubclass(cls, LocalFileSystem):
        return LOCAL, "local disk: os.link publishes a file without replacing one"
    if issubclass(cls, MemoryFileSystem) and "memory" in protos:
        return MEMORY, "in-process memory filesystem: moves are serialised by a lock"
    if _is_hdfs_native(cls):
        return HDFS_NOREPLACE, "hdfs-native: HDFS rename without OVERWRITE refuses an existing target"
    create_only = _create_only_support(cls)
    if create_only is not None:
        return CREATE_ONLY, create_only
    module = cls.__module__
    if module.startswith("fsspec.implementations.arrow"):
        return NONE, ("pyarrow's filesystems cannot rename without replacing: Arrow's HDFS Move "
                      "deletes an existing target file and retries, and moves a directory *into* "
                      "an existing one; for HDFS install hdfs-native (pip install 'kvio[hdfs]'), "
                      "which fsspec then uses for hdfs://")
    if protos & {"webhdfs", "swebhdfs"}:
        return NONE, "WebHDFS through fsspec does not report a refused RENAME"
    return NONE, (f"{cls.__name__} ({'/'.join(sorted(protos))}) has no atomic no-clobber rename "
                  "or conditional create that kvio can rely on (object stores need s3fs, adlfs "
                  "or gcsfs 2024.12 or newer)")


def _release(package: str) -> tuple[int, ...] | None:
    """The leading numbers of an installed package's version (None when unknown)."""
    try:
        text = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    numbers = re.findall(r"\d+", text.split("+")[0])
    return tuple(int(n) for n in numbers[:3]) if numbers else None


def _create_only_protocol(uri: str) -> bool:
    """Whether the URI's protocol is served by a filesystem class with a create-only write
    (decided before the filesystem is built, to build it with the right options)."""
    try:
        cls = fsspec.get_filesystem_class(uri.split("://", 1)[0])
    except (ValueError, ImportError):
        return False
    return _create_only_support(cls) is not None


def _owner_package(cls: type, method: str) -> str | None:
    """The top-level package of the class in ``cls``'s MRO that defines ``method``."""
    owner = next((k for k in cls.__mro__ if method in vars(k)), None)
    return owner.__module__.split(".")[0] if owner is not None else None


def _create_only_support(cls: type) -> str | None:
    """Why ``cls`` has a real create-only write, or None when it has none.

    A class counts when it is (or derives from) one of :data:`_CREATE_ONLY_CLASSES`, its package
    is at least the listed release, and the ``pipe_file``/``_pipe_file`` it uses are that
    package's own (a subclass that replaces them, or fsspec's base fallback, is not trusted).
    """
    for klass in cls.__mro__:
        package = klass.__module__.split(".")[0]
        minimum = _CREATE_ONLY_CLASSES.get((package, klass.__name__))
        if minimum is None:
            continue
        release = _release(package)
        if release is None or release[:len(minimum)] < minimum:
            return None
        # The async coroutine must be the package's own; the sync pipe_file may be fsspec's
        # (AsyncFileSystem mirrors it onto the coroutine at construction), never a third one's.
        if _owner_package(cls, "_pipe_file") != package or \
                _owner_package(cls, "pipe_file") not in (package, "fsspec") or \
                not issubclass(cls, AsyncFileSystem):
            return None
        return (f"{package} {'.'.join(map(str, release))}: pipe_file(mode='create') is a "
                "conditional put that the server refuses when the object exists")
    return None


class FileIO:
    """Filesystem operations for one store root. Paths passed in are relative to the root.

    The URI is resolved by :func:`filesystem_for`: a plain local path means exactly that path.
    Raises InvalidArgumentError for a root that fsspec's generic move and delete would expand
    as a glob pattern (object stores, memory)."""

    @classmethod
    def for_conf(cls, uri: str, conf: Config, storage_options: dict | None = None) -> FileIO:
        """The I/O of ``uri`` with the settings that concern it resolved from ``conf``
        (``kvio.commit.allow.non.atomic``, ``kvio.fs.connect.timeout``).

        Args:
            uri: a local path or fsspec URL.
            conf: resolved settings.
            storage_options: fsspec options (credentials, endpoints).

        Returns:
            The file I/O.

        Raises:
            InvalidArgumentError, KvioError: see the constructor.
        """
        return cls(uri, allow_non_atomic=conf.allow_non_atomic, storage_options=storage_options,
                   connect_timeout=conf.connect_timeout)

    def __init__(self, uri: str, *, allow_non_atomic: bool = False,
                 storage_options: dict | None = None, connect_timeout: float | None = None):
        self.uri = uri
        options = dict(storage_options or {})
        if is_url(uri) and uri.split("://", 1)[0] in _HDFS_NATIVE_PROTOCOLS:
            # Keep hdfs-native clients out of fsspec's instance cache: at every fork fsspec
            # clears that cache in the child, and dropping a cached hdfs-native client there
            # hangs (seen with mrjob's local runner forking its task pool).
            options.setdefault("skip_instance_cache", True)
        if is_url(uri) and _create_only_protocol(uri):
            # Listings cached by the client would hide other processes' commit records and
            # files (s3fs keeps them forever by default): every listing asks the server.
            options.setdefault("use_listings_cache", False)
        self._fs, root = filesystem_for(uri, options)
        self.capability, self.capability_reason = detect_capability(self._fs)
        self.is_local = self.capability == LOCAL
        self.is_memory = self.capability == MEMORY
        self.atomic_rename = self.capability == HDFS_NOREPLACE
        self.create_only = self.capability == CREATE_ONLY
        self.root = root.rstrip("/") or "/"
        self.allow_non_atomic = allow_non_atomic
        if not self.is_local and not self.atomic_rename and _GLOB_CHARS.search(self.root):
            # fsspec's generic mv/rm/copy (memory, object stores) expand such a path as a
            # pattern: deleting store "s*" would delete every store whose name starts with s.
            raise InvalidArgumentError(
                "the path contains a glob character (*, ? or [), which this filesystem's move "
                "and delete would treat as a pattern matching other paths; use another name",
                store=self.uri)
        # None: kvio.fs.connect.timeout from the defaults, $KVIO_CONF and the environment.
        self.connect_timeout = connect_timeout
        self._first_contact_pending = self.atomic_rename  # hdfs-native (see kvio/connect.py)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem. On HDFS its first use checks that the NameNode answers within
        ``kvio.fs.connect.timeout`` (building the client contacts nothing), raising
        FilesystemUnreachableError with the store's URI instead of hanging for minutes."""
        if self._first_contact_pending:
            timeout = self.connect_timeout
            if timeout is None:
                timeout = Config().connect_timeout
            check_reachable(self._fs, self.root, self.uri, timeout)
            self._first_contact_pending = False
        return self._fs

    # ---- paths -------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def local_path(self, rel: str) -> str:
        """The OS path of a relative path (local filesystem only)."""
        return self.path(rel)

    def same_root(self, other: FileIO) -> bool:
        """Whether two FileIOs address the same directory, however their URIs were spelled.

        Args:
            other: another FileIO.

        Returns:
            On local disk: the roots are the same file (relative paths, trailing slashes,
            symlinks and bind mounts resolved). Elsewhere: the same filesystem class and the
            same full URL of the root.
        """
        if self.is_local and other.is_local:
            try:
                return os.path.samefile(self.root, other.root)
            except OSError:  # one of them does not exist
                return os.path.realpath(self.root) == os.path.realpath(other.root)
        if type(self._fs) is not type(other._fs):
            return False
        return bool(self._fs.unstrip_protocol(self.root) == other._fs.unstrip_protocol(other.root))

    @property
    def can_publish_atomically(self) -> bool:
        return self.capability in ATOMIC_CAPABILITIES

    def require_atomic(self) -> None:
        if not self.can_publish_atomically and not self.allow_non_atomic:
            raise UnsafeFilesystemError(
                f"cannot publish atomically here: {self.capability_reason}. A publish could be "
                "seen half-done or silently replace a concurrent writer's; set "
                "kvio.commit.allow.non.atomic=true to accept that risk", store=self.uri)

    # ---- queries -----------------------------------------------------------------------
    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self.path(rel) if rel else self.root)

    def isdir(self, rel: str = "") -> bool:
        return self.fs.isdir(self.path(rel) if rel else self.root)

    def isfile(self, rel: str) -> bool:
        return self.fs.isfile(self.path(rel))

    def listdir(self, rel: str = "") -> list[str]:
        """Names (not paths) in a directory; empty list when it does not exist."""
        target = self.path(rel) if rel else self.root
        try:
            entries = self.fs.ls(target, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = target.rstrip("/")
        names = []
        for entry in entries:
            entry = entry.rstrip("/")
            if entry == base:
                continue
            names.append(posixpath.basename(entry))
        return sorted(names)

    def file_sizes(self, rel: str) -> dict[str, int]:
        """Every file under a directory with its size, from one recursive listing (a request
        per 1,000 objects on an object store instead of one per file).

        Args:
            rel: the directory, relative to the root.

        Returns:
            Sizes by path relative to ``rel``; empty when the directory does not exist.
        """
        base = self.path(rel).rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {path[len(base) + 1:]: int(info["size"]) for path, info in found.items()
                if info.get("type", "file") != "directory" and path.startswith(base + "/")}

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def modified(self, rel: str) -> float | None:
        """Modification time in seconds since the epoch, None if unknown or missing."""
        if self.is_local:
            try:
                return os.stat(self.path(rel)).st_mtime
            except OSError:
                return None
        try:
            stamp = self.fs.modified(self.path(rel))
        except (NotImplementedError, AttributeError, FileNotFoundError, OSError, KeyError):
            return None
        return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)

    def newest_mtime(self, rel: str) -> float | None:
        """The newest modification time of a directory and everything under it (a job's
        staging is as young as its latest write), None when nothing there has a time."""
        stamps: list[float] = []
        if self.is_local:
            for top, dirs, files in os.walk(self.path(rel)):
                for name in [""] + dirs + files:
                    try:
                        stamps.append(os.lstat(os.path.join(top, name)).st_mtime)
                    except OSError:
                        pass
            return max(stamps, default=None)
        own = self.modified(rel)
        if own is not None:
            stamps.append(own)
        try:
            found = self.fs.find(self.path(rel), withdirs=True, detail=True)
        except (FileNotFoundError, NotImplementedError):
            found = {}
        for info in found.values():
            for key in ("mtime", "LastModified", "last_modified", "modification_time", "created"):
                stamp = info.get(key)
                if stamp is None:
                    continue
                if hasattr(stamp, "timestamp"):
                    stamp = stamp.timestamp()
                elif key == "modification_time" and stamp > 1e11:  # milliseconds (HDFS)
                    stamp = stamp / 1000
                stamps.append(float(stamp))
                break
        return max(stamps, default=None)

    # ---- reading -----------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_small(self, rel: str, limit: int = 64 << 10) -> bytes:
        """The whole of a small, non-empty file (a commit record) in one request.

        s3fs reads a whole file by asking its size first (a HEAD, and after a 404 a listing of
        the name as a directory); a ranged read of up to ``limit`` bytes is one GET, found or
        not. A file of ``limit`` bytes or more is read on to its end.

        Args:
            rel: the file, relative to the root.
            limit: the bytes the first read asks for.

        Returns:
            The file's bytes.

        Raises:
            FileNotFoundError: there is no such file.
        """
        if self.is_local:
            return self.read_bytes(rel)
        try:
            data = self.fs.cat_file(self.path(rel), start=0, end=limit)
        except FileNotFoundError:
            raise
        except Exception:  # noqa: BLE001 - an empty object: a ranged read of it is refused
            # (S3: 416, an OSError; Azure: InvalidRange, the SDK's own error); a plain read
            # raises whatever else went wrong
            return self.read_bytes(rel)
        if len(data) >= limit:
            data += self.fs.cat_file(self.path(rel), start=len(data))
        return data

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        """One ranged read (one request on a remote filesystem)."""
        if length <= 0:
            return b""
        return self.fs.cat_file(self.path(rel), start=start, end=start + length)

    def open_input(self, rel: str) -> IO[bytes]:
        return self.fs.open(self.path(rel), "rb")

    # ---- writing -----------------------------------------------------------------------
    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel) if rel else self.root, exist_ok=True)

    def create_dir(self, rel: str = "") -> bool:
        """Create a directory (and missing parents) unless it exists.

        Args:
            rel: the directory, relative to the root ("" for the root itself).

        Returns:
            True when this call created it: on local disk ``os.mkdir``'s own answer, so of two
            racing callers exactly one gets True; elsewhere checked first.
        """
        target = self.path(rel) if rel else self.root
        if self.is_local:
            os.makedirs(os.path.dirname(target.rstrip("/")) or "/", exist_ok=True)
            try:
                os.mkdir(target)
            except FileExistsError:
                return False
            return True
        if self.fs.exists(target):
            return False
        self.fs.makedirs(target, exist_ok=True)
        return True

    def remove_empty_dir(self, rel: str = "") -> bool:
        """Remove a directory only if it is empty.

        Args:
            rel: the directory, relative to the root ("" for the root itself).

        Returns:
            True when it was removed; False when it holds something or is already gone. On
            local disk ``os.rmdir`` decides atomically, so a file another process creates in it
            meanwhile is never removed.
        """
        target = self.path(rel) if rel else self.root
        try:
            if self.is_local:
                os.rmdir(target)
                return True
            if self.fs.ls(target, detail=False):
                return False
            self.fs.rmdir(target)
        except (OSError, NotImplementedError):
            return False
        return True

    def symlink_target(self, rel: str = "") -> str | None:
        """Where a symbolic link points (local disk only).

        Args:
            rel: the path, relative to the root ("" for the root itself).

        Returns:
            The link's target, or None when the path is not a symbolic link.
        """
        target = self.path(rel) if rel else self.root
        if self.is_local and os.path.islink(target):
            return os.readlink(target)
        return None

    def mkdir(self, rel: str) -> None:
        """Create one directory whose parent must exist (local disk: FileNotFoundError when
        the parent is gone, so a zombie task attempt cannot recreate a committed job dir)."""
        if self.is_local:
            os.mkdir(self.path(rel))
        else:
            self.fs.makedirs(self.path(rel), exist_ok=True)

    def open_output(self, rel: str, direct: bool = False) -> IO[bytes]:
        """A new file. Never truncates an existing one where the filesystem can refuse.

        Args:
            rel: the file, relative to the root.
            direct: on local disk, write past the page cache where the filesystem allows it
                (kvio/direct_io.py); ignored elsewhere.

        Returns:
            A binary file open for writing.
        """
        # Parents are not created here on local disk: a zombie task attempt whose directory
        # was already committed (moved) or aborted fails instead of recreating it.
        if self.is_local:
            return open_new(self.path(rel), direct)
        if self.atomic_rename:  # hdfs-native: HDFS create without OVERWRITE
            return self.fs.open(self.path(rel), "wb", overwrite=False)
        return self.fs.open(self.path(rel), "wb")

    def sync_file(self, handle: IO[bytes]) -> None:
        """Make a written file durable before it is referenced by a commit (local disk)."""
        if self.is_local:
            if isinstance(handle, DirectFile):  # (it keeps its descriptor to itself)
                handle.fsync()
                return
            handle.flush()
            try:
                fileno = handle.fileno()
            except (OSError, ValueError):  # not a real file (a skipped task's sink)
                return
            os.fsync(fileno)

    def _sync_dir(self, rel: str) -> None:
        if not self.is_local:
            return
        fd = os.open(self.path(rel) if rel else self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_new_file(self, rel: str, data: bytes) -> None:
        """Write a whole file that must not exist yet, atomically: readers see all or nothing,
        and an existing file is never replaced (FileExistsError instead)."""
        self.require_atomic()
        if self.create_only:
            self._create_object(rel, data)
            return
        parent = posixpath.dirname(rel)
        self.makedirs(parent)
        if not self.can_publish_atomically:
            # Opted in: one whole-object write, conditional where the backend supports it.
            try:
                self.fs.pipe_file(self.path(rel), data, mode="create")
            except TypeError:  # fsspec older than mode="create"
                if self.fs.exists(self.path(rel)):
                    raise FileExistsError(errno.EEXIST, "target exists", self.path(rel)) from None
                self.fs.pipe_file(self.path(rel), data)
            return
        tmp = posixpath.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(rel)}")
        with self.open_output(tmp) as handle:
            handle.write(data)
            self.sync_file(handle)
        try:
            self.publish_file(tmp, rel)
        finally:
            self.delete_file(tmp)

    def _create_object(self, rel: str, data: bytes) -> None:
        """One create-only whole-object put: the server refuses it when the object exists."""
        path = self.path(rel)
        for attempt in range(_CREATE_CONFLICT_RETRIES):
            try:
                self.fs.pipe_file(path, data, mode="create")
                return
            except FileExistsError:
                raise
            except OSError as exc:
                # 409: another conditional put of this key was in flight; ours did not happen.
                if exc.errno != errno.EBUSY or attempt == _CREATE_CONFLICT_RETRIES - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))

    def replace_file(self, rel: str, data: bytes) -> None:
        """Write a small whole file, creating its directory and replacing an existing file.
        Readers see the old or the new content, never a mix: on local disk a temporary file
        renamed over it (``os.replace``), elsewhere one whole-object write.

        Args:
            rel: the file, relative to the root.
            data: its new content.

        Raises:
            OSError: the file could not be written.
        """
        parent = posixpath.dirname(rel)
        if not self.is_local:
            self.makedirs(parent)
            self.fs.pipe_file(self.path(rel), data)
            return
        for attempt in range(3):
            os.makedirs(self.path(parent), exist_ok=True)
            tmp = self.path(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(rel)}")
            try:
                with open(tmp, "xb") as handle:
                    handle.write(data)
                os.replace(tmp, self.path(rel))
                return
            except FileNotFoundError:
                # The directory was removed between makedirs and the write (an empty _pins/
                # is removed when its last pin goes): create it again.
                if attempt == 2:
                    raise
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    def publish_file(self, src_rel: str, dst_rel: str) -> None:
        """Atomically make src visible as dst, failing with FileExistsError if dst exists.
        src may be left behind (the caller removes it)."""
        self.require_atomic()
        self._no_rename_here()
        src, dst = self.path(src_rel), self.path(dst_rel)
        if self.is_local:
            os.link(src, dst)  # atomic, and refuses an existing target
            self._sync_dir(posixpath.dirname(dst_rel))
        elif self.is_memory:
            with _MEMORY_LOCK:
                if self.fs.exists(dst):
                    raise FileExistsError(errno.EEXIST, "target exists", dst)
                self.fs.mv(src, dst)
        elif self.atomic_rename:
            self.fs.mv(src, dst)  # hdfs-native: rename(overwrite=False) raises FileExistsError
        else:  # opted in to non-atomic publishing
            if self.fs.exists(dst):
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            self.fs.mv(src, dst)

    def rename_dir(self, src_rel: str, dst_rel: str) -> None:
        """Move a directory to a target that must not exist (FileExistsError otherwise)."""
        self.require_atomic()
        self._no_rename_here()
        src, dst = self.path(src_rel), self.path(dst_rel)
        if self.is_local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            # Claim the name first: mkdir fails if anything is there, and only then may the
            # rename replace our own empty directory (os.rename would replace any empty one).
            os.mkdir(dst)
            try:
                os.rename(src, dst)
            except BaseException:
                try:
                    os.rmdir(dst)
                except OSError:
                    pass
                raise
            self._sync_dir(posixpath.dirname(dst_rel))
        elif self.is_memory:
            with _MEMORY_LOCK:
                if self.fs.exists(dst):
                    raise FileExistsError(errno.EEXIST, "target exists", dst)
                self.fs.mv(src, dst, recursive=True)
        elif self.atomic_rename:
            self.fs.mv(src, dst)  # one NameNode rename of the whole tree, no overwrite
        else:
            if self.fs.exists(dst):
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            self.fs.mv(src, dst, recursive=True)

    def _no_rename_here(self) -> None:
        if self.create_only:
            # A rename on an object store is a copy plus a delete per object, neither atomic
            # nor no-clobber: the committer writes in place there (kvio/publish.py).
            raise UnsafeFilesystemError(f"{self.capability_reason}; kvio does not rename on this "
                                        "filesystem", store=self.uri)

    def copy_from(self, src_io: FileIO, src_rel: str, dst_rel: str) -> None:
        """Put an immutable file of another (or this) store at dst_rel, a new name: a hard link
        on one local disk, a server-side copy within one object store, otherwise a streamed
        copy."""
        if self.create_only and src_io._fs is self._fs:
            self.fs.copy(src_io.path(src_rel), self.path(dst_rel))
            return
        self.makedirs(posixpath.dirname(dst_rel))
        if src_io.is_local and self.is_local:
            try:
                os.link(src_io.path(src_rel), self.path(dst_rel))
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        with src_io.open_input(src_rel) as fin, self.open_output(dst_rel) as fout:
            while chunk := fin.read(8 << 20):
                fout.write(chunk)
            self.sync_file(fout)

    # ---- deleting ----------------------------------------------------------------------
    def delete_file(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str = "") -> None:
        """Delete a file or a directory tree; a missing one is fine.

        Raises:
            OSError: something could not be removed; on local disk its ``filename`` is the
                full path of what failed (shutil's own error names only the last component).
        """
        target = self.path(rel) if rel else self.root
        if self.is_local:
            if os.path.isdir(target) and not os.path.islink(target):
                _rmtree_naming_paths(target)
                return
            try:
                os.remove(target)
            except FileNotFoundError:
                pass
            return
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
        except FileNotFoundError:
            pass

    def delete_many(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.delete_tree(rel)


TMP_PREFIX = ".tmp-"


class _RemovalFailed(Exception):
    """Carries an OSError out of shutil.rmtree: not an OSError itself, because Python 3.13's
    rmtree catches OSErrors raised by its error handler and reports them again for the
    directory, losing the name of the file that failed."""

    def __init__(self, error: OSError):
        super().__init__(error)
        self.error = error


def _rmtree_naming_paths(path: str) -> None:
    """shutil.rmtree, raising errors that carry the full path of the entry that failed."""
    def failed(_func: Any, where: str, exc: BaseException) -> None:
        if isinstance(exc, FileNotFoundError):
            return  # removed by someone else meanwhile: the goal is reached
        if isinstance(exc, OSError):
            error = OSError(exc.errno, exc.strerror or str(exc), where)
            error.__cause__ = exc
            raise _RemovalFailed(error)
        raise exc

    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=failed)
        else:
            shutil.rmtree(path, onerror=lambda func, where, info: failed(func, where, info[1]))
    except _RemovalFailed as removal:
        raise removal.error from removal.error.__cause__


def check_same_device(io: FileIO, a_rel: str, b_rel: str) -> bool:
    """True when two local paths live on one device, so a rename between them is atomic."""
    if not io.is_local:
        return True

    def dev(rel: str) -> int:
        path = io.path(rel)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return os.stat(path).st_dev
    return dev(a_rel) == dev(b_rel)
