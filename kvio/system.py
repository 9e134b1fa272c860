"""KeyValueSystem: create, open, delete, rename, merge, version and collect stores."""
from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from typing import Any, Literal, overload

from . import layout, pins, repair, rollback, txn_state, versions
from .committer import Job
from .compact import compact_store
from .config import Config
from .errors import (
    IncompleteStoreError,
    InvalidArgumentError,
    KvioError,
    StoreExistsError,
    StoreNotFoundError,
    UnsafeFilesystemError,
)
from .format.commit_record import CommitRecord
from .fs import FileIO
from .live import LiveStore
from .near_cache import CachedReader, cached
from .reader import StoreReader
from .transaction import Transaction
from .update import StoreUpdate
from .writer import StoreWriter


class KeyValueSystem:
    """Entry point. ``conf`` overrides settings (see conf/kvio-defaults.conf);
    ``storage_options`` are passed to fsspec (credentials, endpoints)."""

    def __init__(self, conf: dict[str, Any] | None = None,
                 storage_options: dict[str, Any] | None = None):
        self.conf_overrides = dict(conf or {})
        self.conf = Config(self.conf_overrides)
        self.storage_options = dict(storage_options or {})

    def _io(self, uri: str) -> FileIO:
        if not isinstance(uri, str) or not uri:
            raise InvalidArgumentError(f"a store URI must be a non-empty string, got {uri!r}")
        return FileIO.for_conf(uri, self.conf, self.storage_options)

    # ---- create / open -----------------------------------------------------------------
    def create_store(self, uri: str, mode: str = "error") -> StoreWriter:
        """A writer; keys must be put in strictly increasing unsigned byte order. Use it as a
        context manager: a clean exit publishes, an exception aborts. ``mode``: error (refuse
        an existing store), ignore (existing store: write nothing), overwrite (publish a new
        version), append (new version = current pairs plus these; these win on equal keys)."""
        return StoreWriter(uri, mode=mode, conf=self.conf_overrides,
                           storage_options=self.storage_options)

    @overload
    def open_store(self, uri: str, version: str | None = None, *,
                   follow: Literal[False] = False, cache_bytes: None = None) -> StoreReader: ...

    @overload
    def open_store(self, uri: str, version: None = None, *, follow: Literal[True],
                   cache_bytes: None = None) -> LiveStore: ...

    @overload
    def open_store(self, uri: str, version: str | None = None, *, follow: bool = False,
                   cache_bytes: int) -> CachedReader: ...

    def open_store(self, uri: str, version: str | None = None, *, follow: bool = False,
                   cache_bytes: int | None = None) -> StoreReader | LiveStore | CachedReader:
        """The current version (or a named one still retained) as a read-only Mapping.

        The reader pins its version (docs/COMMIT.md, "Pins"): retention and ``kvio gc`` keep
        it until the reader is closed.

        Args:
            uri: the store.
            version: a version id from :meth:`versions`; None for the current version.
            follow: return a :class:`~kvio.live.LiveStore` that serves the current version and
                swaps in each new publish (checked every ``kvio.follow.interval``).
            cache_bytes: put a near cache of this many bytes in front of the reader's point
                lookups (:func:`kvio.near_cache.cached`; for stores on remote filesystems):
                entries are keyed by version, so a followed publish never serves a stale value.

        Returns:
            A reader of that version (follow: a live store).

        Raises:
            StoreNotFoundError: no store, a deleted store, or ``version`` is not in the history.
            VersionNotRetainedError: ``version`` is in the history but retention or gc removed
                its files.
            IncompleteStoreError, NotAStoreError: nothing was published at ``uri``.
            CorruptStoreError: the newest commit record or the manifest is damaged.
            InvalidArgumentError: ``follow`` with a ``version``.
        """
        if follow and version is not None:
            raise InvalidArgumentError("follow=True serves the current version and its "
                                       "successors; it cannot be combined with version=",
                                       store=uri)
        if cache_bytes is not None:
            if cache_bytes < 0:
                raise InvalidArgumentError(f"cache_bytes must not be negative, got {cache_bytes}",
                                           store=uri)
            inner: StoreReader | LiveStore = (self.open_store(uri, follow=True) if follow
                                              else self.open_store(uri, version))
            return cached(inner, cache_bytes)
        if follow:
            return LiveStore(uri, lambda: self.open_store(uri), self.conf)
        io = self._io(uri)
        grace = self.conf.gc_grace
        for _ in range(10):  # a concurrent publish + GC can remove what we just listed: retry
            started = time.monotonic()
            state = versions.current_state_for_read(io)
            commit = state.commit
            assert commit is not None and state.version is not None
            wanted = state.version
            if version is not None and version != state.version:
                commit, wanted = self._find_version(io, version), version
            pin = pins.acquire(io, wanted, self.conf)
            try:
                # GC removes the manifest first: without it the version is gone (or going).
                if version is not None and wanted != state.version \
                        and not io.exists(layout.manifest_path(wanted)):
                    raise versions.not_retained_error(io, wanted, commit.seq)
                if pin is not None and grace and time.monotonic() - started > grace:
                    # The pin landed later than gc's grace after the version was current: a gc
                    # that did not see it may be deleting the version. Start again.
                    pin.release()
                    continue
                manifest = versions.load_manifest(io, wanted)
                return StoreReader(io, manifest, commit, self.conf, pin=pin)
            except KvioError:
                if pin is not None:
                    pin.release()
                if version is None and versions.read_state(io).seq != state.seq:
                    continue
                if version is not None and not io.exists(layout.manifest_path(wanted)):
                    raise versions.not_retained_error(io, wanted, commit.seq) from None
                raise
        raise KvioError("store changed ten times while opening; try again", store=uri)

    def _find_version(self, io: FileIO, version: str) -> CommitRecord:
        for record in reversed(versions.history(io)):
            if record.version == version:
                return record
        raise StoreNotFoundError(f"version {version} is not in the store's history", store=io.uri)

    def open_stores(self, uris: list[str], attempts: int = 50) -> list[StoreReader]:
        """Readers of one consistent snapshot of several stores: when a transaction published
        new versions of some of them, either all of those new versions or none.

        A double collect: read every store's current record (resolving transactions), then
        read them all again; equal twice means that one instant between the two rounds saw
        exactly these versions (a store's current record only moves forward), so they are
        opened by version. Otherwise it starts again.

        Args:
            uris: the stores.
            attempts: how many double collects to try before giving up.

        Returns:
            One reader per store, in the order of ``uris`` (close them).

        Raises:
            KvioError: the stores kept changing during every attempt.
            StoreNotFoundError, IncompleteStoreError, NotAStoreError, CorruptStoreError: as
                :meth:`open_store` for one of the stores.
        """
        ios = [self._io(uri) for uri in uris]

        def collect() -> list[tuple[int, str | None]]:
            return [(s.seq, s.version) for s in map(versions.current_state_for_read, ios)]

        for _ in range(attempts):
            first = collect()
            if collect() != first:
                continue
            readers: list[StoreReader] = []
            try:
                for uri, (_seq, version) in zip(uris, first, strict=True):
                    readers.append(self.open_store(uri, version))
            except KvioError:
                for reader in readers:
                    reader.close()
                continue  # e.g. a version collected right after a newer publish: again
            return readers
        raise KvioError(f"the stores kept changing while opening a consistent snapshot "
                        f"({attempts} attempts)", store=", ".join(uris))

    def transaction(self) -> Transaction:
        """``with kvs.transaction() as tx:`` then ``tx.create_store(uri, mode=...)`` and
        ``tx.update_store(uri)``: leaving the block publishes every store's new version or
        none (docs/COMMIT.md, "Transactions across stores"); an exception publishes nothing.

        Returns:
            The transaction.
        """
        return Transaction(conf=self.conf_overrides, storage_options=self.storage_options)

    def exists(self, uri: str) -> bool:
        return versions.read_state(self._io(uri)).live

    # ---- whole-store operations ------------------------------------------------------------
    def delete_store(self, uri: str) -> dict[str, Any]:
        """Publish a delete (readers see no store from that instant), then remove the files.

        A store whose newest commit record is damaged is deleted too (the delete record goes on
        top of the damaged one): that is one of the two ways out of it, with :meth:`repair`.

        Args:
            uri: the store.

        Returns:
            What was found: ``{"uri", "damaged": [{"seq", "file", "error"}]}`` (damaged
            commit records of the deleted store, usually none).

        Raises:
            StoreNotFoundError: no store at ``uri``.
            InvalidArgumentError: ``uri`` is a symbolic link (deleting through it would remove
                the target's files but not the link; delete the target or remove the link).
        """
        io = self._io(uri)
        target = io.symlink_target()
        if target is not None:
            raise InvalidArgumentError(f"{uri} is a symbolic link to {target}; kvio rm does not "
                                       "delete through links: run it on the target to delete the "
                                       "store, or remove the link itself (rm)", store=uri)
        commits = versions.read_log(io)
        if commits.undecided:
            # Decide them first (aborted unless committed meanwhile), as any writer does.
            for record in commits.undecided:
                txn_state.abort_undecided(io, record)
            commits = versions.read_log(io)
        # Decisions kept here are the other stores' of those transactions too: leave them a
        # copy before they go with this store.
        txn_state.hand_over(io)
        newest = commits.last_intact if not commits.head_damaged else None
        if commits.newest_seq == 0 and not io.exists(layout.MARKER):
            if not io.exists():
                raise StoreNotFoundError("no store to delete", store=uri)
            try:
                versions.current_state_for_read(io)  # raises why this is no store
            except IncompleteStoreError:
                pass  # only kvio's own directories: a first writer died before the marker
        elif commits.head_damaged or (newest is not None and newest.live):
            versions.publish_commit(io, commits.newest_seq + 1, None, "delete")
        _remove_store_files(io)
        return {"uri": uri, "damaged": [{"seq": d.seq, "file": d.file, "error": d.reason}
                                        for d in commits.damaged]}

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
            if dst_io.create_only and not self.conf.allow_non_atomic:
                # An object store moves object by object: readers of dst could see a record
                # before the files it names.
                raise UnsafeFilesystemError("an object store cannot rename a store atomically "
                                            "(it copies every object); copy it with kvio export/"
                                            "import or clone-store, or set "
                                            "kvio.commit.allow.non.atomic=true", store=src)
            src_io.fs.mv(src_io.root, dst_io.root, recursive=True)

    def update_store(self, uri: str, retries: int = 5) -> StoreUpdate:
        """SET and DEL on a store: ``with kvs.update_store(uri) as u: u.set(k, v);
        u.delete(k)``, keys in any order, the last operation on a key wins. Leaving the block
        publishes one new version (the current partitions plus a delta with the new values
        and tombstones); an exception publishes nothing (docs/COMMIT.md, "Updates").

        Args:
            uri: the store (created when absent).
            retries: how often an update that lost a race re-applies itself on the newer
                version before it raises ConcurrentCommitError.

        Returns:
            The update, a context manager.
        """
        return StoreUpdate(uri, conf=self.conf_overrides, storage_options=self.storage_options,
                           retries=retries)

    def compact(self, uri: str, progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
        """Rewrite the current version's layers (deltas, tombstones) into disjoint partitions
        without tombstones and publish them as a new version.

        Args:
            uri: the store.
            progress: called with the number of pairs written after each batch.

        Returns:
            The commit record of the new version.

        Raises:
            StoreNotFoundError: no store at ``uri``.
            ConcurrentCommitError: another publish landed meanwhile; nothing was published.
        """
        return compact_store(uri, lambda version: self.open_store(uri, version), self.conf_overrides,
                             self.storage_options, progress)

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
        if job.ctx.base_seq != dst_reader.commit.seq:
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
        assert record is not None
        return record.to_json()

    # ---- versions ----------------------------------------------------------------------
    def versions(self, uri: str) -> list[dict[str, Any]]:
        """The commit history, oldest first, damaged records included.

        Args:
            uri: the store.

        Returns:
            One JSON object per record: its fields (``seq``, ``version``, ``op``, ``job``,
            ``time`` and the optional ones) plus ``current`` (the newest record),
            ``available`` (its version's files are retained), ``live`` (its version is the
            current one) and ``pins`` (the unexpired pins on its version: ``holder``,
            ``expires``, ``purpose``, ``host``, ``pid``; the same list on every record of the
            version). A damaged record has only ``seq``, ``corrupt`` (what is wrong),
            ``file`` and those three flags; when it is the newest, no version is current. A
            record of an aborted or undecided transaction has ``void`` ("aborted transaction",
            "undecided transaction") and is never current.

        Raises:
            StoreNotFoundError, IncompleteStoreError, NotAStoreError: there is no history.
        """
        io = self._io(uri)
        commits = versions.read_log(io)
        if not commits.newest_seq and not io.exists(layout.MARKER):
            versions.current_state_for_read(io)  # raises the specific error
        present = versions.available_versions(io)
        last = commits.last_intact
        current = None if commits.head_damaged or last is None else last.version
        pinned = pins.unexpired(pins.scan(io), time.time())
        rows: list[dict[str, Any]] = [
            {**r.to_json(), "available": r.version in present,
             "live": current is not None and r.version == current,
             "pins": [p.to_json() for p in pinned.get(r.version or "", [])]}
            for r in commits.records]
        rows += [{"seq": d.seq, "version": None, "op": None, "corrupt": d.reason, "file": d.file,
                  "available": False, "live": False, "pins": []} for d in commits.damaged]
        # Records of aborted or undecided transactions never count (docs/COMMIT.md).
        rows += [{**r.to_json(), "void": f"{how.value} transaction",
                  "available": r.version in present, "live": False, "pins": []}
                 for r, how in commits.void]
        rows.sort(key=lambda row: row["seq"])
        head = commits.damaged[-1].seq if commits.head_damaged else (last.seq if last else 0)
        for row in rows:
            row["current"] = row["seq"] == head
        return rows

    def rollback(self, uri: str, version: str | None = None) -> dict[str, Any]:
        """Publish the contents of an older retained version as a new current version (default:
        the one before current); see :func:`kvio.rollback.rollback`.

        Returns:
            The new commit record as a JSON object; ``source`` names the version restored.
        """
        return rollback.rollback(uri, version, conf=self.conf_overrides,
                                  storage_options=self.storage_options)

    def repair(self, uri: str, version: str | None = None) -> dict[str, Any]:
        """Step past a damaged newest commit record: publish an intact version anew (a new
        record on top of the damaged one; nothing is rewritten or deleted). See
        :func:`kvio.repair.repair` for the report returned and the errors.

        Args:
            uri: the store.
            version: the version to make current; None for the one the newest intact record
                names (refused, listing the choices, while a complete version exists that no
                intact record names).

        Returns:
            The report; its ``record`` is None when the newest record was not damaged.
        """
        return repair.repair(uri, version, conf=self.conf_overrides,
                             storage_options=self.storage_options)

    def gc(self, uri: str, older_than: float | None = None) -> dict[str, list[str]]:
        """Remove superseded versions, stale staging, stray files and expired pins
        (docs/COMMIT.md). A version with an unexpired pin, or superseded less than
        ``kvio.gc.grace`` ago, is kept.

        Args:
            uri: the store.
            older_than: the age in seconds of staging and unnamed versions to remove (default
                ``kvio.staging.max.age``).

        Returns:
            What was removed, by kind, and what was kept beyond the retention (``pinned``,
            ``grace``): see :func:`kvio.versions.collect_garbage`.

        Raises:
            CorruptStoreError: the newest commit record is damaged (nothing is removed).
            KvioError: a file could not be removed (its full path is named).
        """
        io = self._io(uri)
        if not io.exists(layout.MARKER):
            versions.current_state_for_read(io)
        age = self.conf.staging_max_age if older_than is None else older_than
        return versions.collect_garbage(io, self.conf.versions_retain, older_than=age,
                                        grace=self.conf.gc_grace)


def _remove_store_files(io: FileIO) -> None:
    """Remove a store whose delete record is published, in an order that an interruption
    cannot turn into a resurrection: the data first, then the commit records oldest first, so
    the newest record (the delete) is the last to go and an older version never becomes the
    newest record again. A rerun of ``delete_store`` finishes the job."""
    for name in io.listdir(""):
        if name != layout.COMMITS:
            if io.isdir(name):
                io.delete_tree(name)
            else:
                io.delete_file(name)
    for seq in versions.commit_seqs(io):  # ascending
        io.delete_file(layout.commit_name(seq))
    io.delete_tree()
