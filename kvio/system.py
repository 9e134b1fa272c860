"""KeyValueSystem: create, open, delete, rename, merge, version and collect stores."""
from __future__ import annotations

import posixpath
from typing import Any

from . import layout, versions
from . import committer
from .committer import Job
from .config import Config
from .errors import InvalidArgumentError, KvioError, StoreExistsError, StoreNotFoundError
from .fs import FileIO
from .reader import StoreReader
from .writer import StoreWriter


class KeyValueSystem:
    """Entry point. ``conf`` overrides settings (see conf/kvio-defaults.conf);
    ``storage_options`` are passed to fsspec (credentials, endpoints)."""

    def __init__(self, conf: dict[str, Any] | None = None, storage_options: dict[str, Any] | None = None):
        self.conf_overrides = dict(conf or {})
        self.conf = Config(self.conf_overrides)
        self.storage_options = dict(storage_options or {})

    def _io(self, uri: str) -> FileIO:
        if not isinstance(uri, str) or not uri:
            raise InvalidArgumentError(f"a store URI must be a non-empty string, got {uri!r}")
        return FileIO(uri, allow_non_atomic=self.conf.allow_non_atomic,
                      storage_options=self.storage_options)

    # ---- create / open -----------------------------------------------------------------
    def create_store(self, uri: str, mode: str = "error") -> StoreWriter:
        """A writer; keys must be put in strictly increasing unsigned byte order. Use it as a
        context manager: a clean exit publishes, an exception aborts. ``mode``: error (refuse
        an existing store), ignore (existing store: write nothing), overwrite (publish a new
        version), append (new version = current pairs plus these; these win on equal keys)."""
        return StoreWriter(uri, mode=mode, conf=self.conf_overrides, storage_options=self.storage_options)

    def open_store(self, uri: str, version: str | None = None) -> StoreReader:
        """The current version (or a named one still retained) as a read-only Mapping."""
        io = self._io(uri)
        for _ in range(10):  # a concurrent publish + GC can remove what we just listed: retry
            state = versions.current_state_for_read(io)
            commit = state.commit
            if version is not None:
                commit = self._find_version(io, version)
            try:
                manifest = versions.load_manifest(io, commit["version"])
                return StoreReader(io, manifest, commit, self.conf)
            except KvioError:
                if version is None and versions.read_state(io).seq != state.seq:
                    continue
                raise
        raise KvioError("store changed ten times while opening; try again", store=uri)

    def _find_version(self, io: FileIO, version: str) -> dict[str, Any]:
        for doc in reversed(versions.history(io)):
            if doc.get("version") == version:
                return doc
        raise StoreNotFoundError(f"version {version} is not in the store's history", store=io.uri)

    def exists(self, uri: str) -> bool:
        return versions.read_state(self._io(uri)).live

    # ---- whole-store operations ------------------------------------------------------------
    def delete_store(self, uri: str) -> None:
        """Publish a delete (readers see no store from that instant), then remove the files."""
        io = self._io(uri)
        state = versions.read_state(io)
        if not state.live:
            if state.commit is None and not io.exists(layout.MARKER):
                raise StoreNotFoundError("no store to delete", store=uri)
        else:
            versions.publish_commit(io, state.seq + 1, None, "delete")
        io.delete_tree()

    def rename_store(self, src: str, dst: str) -> None:
        """Move a store to a new URI on the same filesystem; dst must not exist."""
        src_io, dst_io = self._io(src), self._io(dst)
        versions.current_state_for_read(src_io)
        if type(src_io.fs) is not type(dst_io.fs):
            raise KvioError("rename_store works within one filesystem; copy across filesystems "
                            "(kvio export/import or clone-store)", store=src)
        if dst_io.exists():
            raise StoreExistsError("rename target already exists", store=dst)
        parent = posixpath.dirname(dst_io.root)
        src_io.fs.makedirs(parent, exist_ok=True)
        # rename_dir claims dst first, so a concurrent creator cannot be overwritten.
        base = FileIO(posixpath.dirname(src_io.root) if src_io.is_local else src,
                      allow_non_atomic=self.conf.allow_non_atomic)
        if src_io.is_local:
            base = FileIO("/", allow_non_atomic=self.conf.allow_non_atomic)
            base.rename_dir(src_io.root.lstrip("/"), dst_io.root.lstrip("/"))
        else:
            dst_io.require_atomic()
            src_io.fs.mv(src_io.root, dst_io.root, recursive=True)

    def merge_store(self, src: str, dst: str) -> dict:
        """Publish a new version of ``dst`` holding its partitions plus ``src``'s. On duplicate
        keys the value from ``src`` wins (src is the newer data). ``src`` is left unchanged.
        Files are hard-linked on local disk and copied elsewhere.

        Args:
            src: the store whose pairs are added (and win on equal keys).
            dst: the store that gets the new version.

        Returns:
            The commit record of the new version of ``dst``.

        Raises:
            InvalidArgumentError: ``src`` and ``dst`` are the same store (under any spelling:
                relative or absolute path, trailing slash, symlink) or byte copies of one
                version; merging would only carry every partition twice.
            KvioError: ``dst`` changed while merging (retry).
        """
        src_reader = self.open_store(src)
        dst_reader = self.open_store(dst)
        # Version ids are unique job ids, so an equal one means the same store reached another
        # way (e.g. a second NameNode address) or a byte copy of it.
        version = dst_reader.version
        if src_reader.io.same_root(dst_reader.io) or src_reader.version == version:
            src_reader.close()
            dst_reader.close()
            raise InvalidArgumentError(f"cannot merge a store into itself: {src} and {dst} are the "
                                       f"same store (current version {version})", store=dst)
        job = Job.setup(dst, mode="overwrite", conf=self.conf_overrides,
                        storage_options=self.storage_options)
        if job.ctx.base_seq != dst_reader.commit["seq"]:
            job.abort()
            raise KvioError("destination changed while merging; retry", store=dst)
        try:
            carried = job.carry(dst_reader.io, dst_reader.version, dst_reader.manifest) + \
                job.carry(src_reader.io, src_reader.version, src_reader.manifest)
            record = job.commit([], num_tasks=0, extra_partitions=carried, op="merge")
        except BaseException:
            if not job.committed:
                job.abort()
            raise
        finally:
            src_reader.close()
            dst_reader.close()
        return record

    # ---- versions ----------------------------------------------------------------------
    def versions(self, uri: str) -> list[dict[str, Any]]:
        """Commit history, oldest first; each with seq, version, op, time and 'current'."""
        io = self._io(uri)
        history = versions.history(io)
        if not history and not io.exists(layout.MARKER):
            versions.current_state_for_read(io)  # raises the specific error
        present = versions.available_versions(io)
        current = history[-1]["version"] if history else None
        return [{**d, "current": d is history[-1], "available": d.get("version") in present,
                 "live": d.get("version") == current and current is not None} for d in history]

    def rollback(self, uri: str, version: str | None = None) -> dict:
        """Publish the contents of an older retained version as a new current version (default:
        the one before current). The record's ``source`` names the version restored."""
        return committer.rollback(uri, version, conf=self.conf_overrides,
                                  storage_options=self.storage_options)

    def gc(self, uri: str, older_than: float | None = None) -> dict[str, list[str]]:
        io = self._io(uri)
        if not io.exists(layout.MARKER):
            versions.current_state_for_read(io)
        age = self.conf.staging_max_age if older_than is None else older_than
        return versions.collect_garbage(io, self.conf.versions_retain, older_than=age)
