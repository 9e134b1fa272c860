"""The I/O seam: the only module that touches filesystems.

Everything else asks a :class:`FileIO` to read, write, list and publish. It wraps an fsspec
filesystem and adds the one operation fsspec lacks, an atomic *no-clobber* publish, implemented
per filesystem (see docs/COMMIT.md):

* local disk: ``os.link`` (fails if the target exists, atomic) for files; directories are
  renamed only to fresh unique names, or after claiming the target with ``mkdir`` because
  ``os.rename`` silently replaces an empty directory;
* HDFS (fsspec ``hdfs``/``viewfs``, pyarrow or hdfs-native): HDFS ``rename`` refuses an
  existing target, which is the commit point;
* fsspec ``memory``: a process-wide lock makes check-then-move atomic within the process that
  owns the memory filesystem (used by tests of filesystem-generic code);
* anything else (object stores): no atomic no-clobber step is available through fsspec, so
  publishing is refused unless ``kvio.commit.allow.non.atomic`` is set.
"""
from __future__ import annotations

import errno
import os
import posixpath
import threading
import uuid
from typing import IO, Iterable

import fsspec
from fsspec.core import url_to_fs

from .errors import UnsafeFilesystemError

_MEMORY_LOCK = threading.Lock()
_ATOMIC_RENAME_PROTOCOLS = {"hdfs", "viewfs", "webhdfs"}


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)


class FileIO:
    """Filesystem operations for one store root. Paths passed in are relative to the root."""

    def __init__(self, uri: str, *, allow_non_atomic: bool = False, storage_options: dict | None = None):
        self.uri = uri
        if "://" not in uri:
            uri = os.path.abspath(uri)
        self.fs, root = url_to_fs(uri, **(storage_options or {}))
        protos = _protocols(self.fs)
        self.is_local = bool(protos & {"file", "local"})
        self.is_memory = "memory" in protos
        self.atomic_rename = bool(protos & _ATOMIC_RENAME_PROTOCOLS)
        self.root = root.rstrip("/") or "/"
        self.allow_non_atomic = allow_non_atomic

    # ---- paths -------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def local_path(self, rel: str) -> str:
        """The OS path of a relative path (local filesystem only)."""
        return self.path(rel)

    @property
    def can_publish_atomically(self) -> bool:
        return self.is_local or self.is_memory or self.atomic_rename

    def require_atomic(self) -> None:
        if not self.can_publish_atomically and not self.allow_non_atomic:
            raise UnsafeFilesystemError(
                f"filesystem {sorted(_protocols(self.fs))} has no atomic no-clobber rename, so a "
                "publish could be seen half-done or overwrite a concurrent writer; set "
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

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def modified(self, rel: str) -> float | None:
        try:
            return self.fs.modified(self.path(rel)).timestamp()
        except (NotImplementedError, AttributeError, FileNotFoundError):
            return None

    # ---- reading -----------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_range(self, rel: str, start: int, length: int) -> bytes:
        """One ranged read (one request on a remote filesystem)."""
        if length <= 0:
            return b""
        return self.fs.cat_file(self.path(rel), start=start, end=start + length)

    def open_input(self, rel: str) -> IO[bytes]:
        return self.fs.open(self.path(rel), "rb")

    # ---- writing -----------------------------------------------------------------------
    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def open_output(self, rel: str) -> IO[bytes]:
        """A new file. On local disk it is created exclusively (never truncates another's)."""
        # Parents are not created here: a zombie task attempt whose directory was already
        # committed (moved) or aborted must fail instead of recreating it.
        if self.is_local:
            return open(self.path(rel), "xb")
        return self.fs.open(self.path(rel), "wb")

    def sync_file(self, handle: IO[bytes]) -> None:
        """Make a written file durable before it is referenced by a commit (local disk)."""
        if self.is_local:
            handle.flush()
            os.fsync(handle.fileno())

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
        parent = posixpath.dirname(rel)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(rel)}")
        self.makedirs(parent)
        with self.open_output(tmp) as handle:
            handle.write(data)
            self.sync_file(handle)
        try:
            self.publish_file(tmp, rel)
        finally:
            if self.exists(tmp):
                self.delete_file(tmp)

    def publish_file(self, src_rel: str, dst_rel: str) -> None:
        """Atomically make src visible as dst, failing with FileExistsError if dst exists."""
        self.require_atomic()
        src, dst = self.path(src_rel), self.path(dst_rel)
        if self.is_local:
            os.link(src, dst)  # atomic and refuses an existing target
            os.unlink(src)
            self._sync_dir(posixpath.dirname(dst_rel))
        elif self.is_memory:
            with _MEMORY_LOCK:
                if self.fs.exists(dst):
                    raise FileExistsError(errno.EEXIST, "target exists", dst)
                self.fs.mv(src, dst)
        elif self.atomic_rename:
            # HDFS rename fails when the target exists; fsspec surfaces that as an OSError.
            if self.fs.exists(dst):
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            self.fs.mv(src, dst)
        else:  # opted in to non-atomic publishing
            if self.fs.exists(dst):
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            self.fs.mv(src, dst)

    def rename_dir(self, src_rel: str, dst_rel: str) -> None:
        """Move a directory to a target that must not exist (FileExistsError otherwise)."""
        self.require_atomic()
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
        else:
            if self.fs.exists(dst):
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            self.fs.mv(src, dst, recursive=True)

    # ---- deleting ----------------------------------------------------------------------
    def delete_file(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel: str = "") -> None:
        target = self.path(rel) if rel else self.root
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
        except FileNotFoundError:
            pass

    def delete_many(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.delete_tree(rel)


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
