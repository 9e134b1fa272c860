"""The output committer: job -> tasks -> task attempts, shared by every kvio writer (the Python
StoreWriter, Spark tasks, MapReduce reducers).

Protocol (docs/COMMIT.md has the guarantees, the fault-injection results and the behaviour per
filesystem):

1. ``Job.setup(uri, mode)`` on the driver: unique job id, staging dir ``_staging/<job>`` inside
   the store (same filesystem; refused across devices on local disk), and the commit seq and
   version it starts from (the compare-and-swap token). ``ctx.to_json()`` ships it to tasks.
2. Each task attempt writes partition files into its own ``_staging/<job>/task-…/`` directory
   and returns a small JSON-able commit message describing them (:meth:`TaskAttempt.commit`).
3. ``Job.commit(messages)`` requires exactly one message per task, validates every listed file
   (exists, size, footer checksum, count and key range; on object stores by default only that
   it is listed at its size: ``kvio.commit.verify``), writes the manifest built from the
   messages only, renames the staging dir to ``_versions/<job>`` and creates commit record
   seq+1 with a no-clobber step: that single step makes the version visible. Files of other
   attempts are never listed, so they are never published, whenever they appear.
4. ``Job.abort()`` / ``TaskAttempt.abort()`` are idempotent and touch only their own staging,
   never a published version.

On object stores with a create-only write (S3, Azure Blob, GCS) nothing is renamed: the job's
directory is ``_versions/<job>`` from the start and the commit record alone publishes it
(:mod:`kvio.publish` holds both strategies).

Modes: ``error`` (default: refuse an existing store), ``ignore`` (existing store: tasks write
nothing and commit publishes nothing), ``overwrite`` (new version, atomic swap), ``append`` (new
version = the current version's partitions, hard-linked or copied, plus the job's partitions at
higher priority: on a duplicate key the appended value wins).
"""
from __future__ import annotations

import contextlib
import functools
import io as _io
import logging
import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from . import layout, versions
from .config import Config
from .errors import (
    CommitError,
    ConcurrentCommitError,
    CorruptStoreError,
    InvalidArgumentError,
    StoreExistsError,
)
from .format.commit_record import CommitRecord
from .format.manifest import Manifest, PartitionEntry
from .format.partition_reader import PartitionReader
from .format.source import RangeSource
from .format.txn_record import TxnRef
from .fs import TMP_PREFIX, FileIO, check_same_device
from .publish import strategy_for

log = logging.getLogger(__name__)
ABORT_RETRY_SECONDS = 30.0
_REMOTE_CHECKS = 32  # partition files validated at once on a remote filesystem
_TAIL_BYTES = 64 << 10  # what one validation read fetches from the end of a remote file
MODES = ("error", "ignore", "overwrite", "append")
_OWN_NAMES = {layout.MARKER, layout.COMMITS, layout.VERSIONS, layout.STAGING}


@dataclass
class JobContext:
    """Everything a task needs, picklable and JSON-able (shipped to Spark executors/reducers)."""
    uri: str
    job_id: str
    mode: str
    base_seq: int
    conf: dict[str, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)
    skip: bool = False  # mode=ignore on an existing store: tasks write nothing
    base_version: str | None = None  # the live version the job started from (None: no store)
    # What setup created (store-relative names; "" is the store directory): an abort removes
    # these again when nothing else uses them, so a failed first write leaves no store behind.
    created: list[str] = field(default_factory=list)
    base_damaged: bool = False  # a repair: the record at base_seq is damaged

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> JobContext:
        return cls(**doc)

    def file_io(self) -> FileIO:
        cfg = Config(self.conf)
        return FileIO.for_conf(self.uri, cfg, self.storage_options)


class _TailReads:
    """Ranged reads of one file that fetch its last ``_TAIL_BYTES`` (the whole of a small
    file) once and serve every read inside them from memory: validating a partition reads its
    header, trailer and footer, three requests on an object store, one with this."""

    def __init__(self, read: Callable[[int, int], bytes], size: int):
        self._read = read
        self._start = max(0, size - _TAIL_BYTES)
        self._size = size
        self._tail: bytes | None = None

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._start or offset + length > self._size:
            return self._read(offset, length)
        if self._tail is None:
            self._tail = self._read(self._start, self._size - self._start)
        return self._tail[offset - self._start:offset - self._start + length]


class _Discard(_io.RawIOBase):
    """Where a skipped task's partition bytes go (mode=ignore on an existing store)."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return len(memoryview(data))

    def flush(self) -> None:
        pass


class TaskAttempt:
    """One attempt of one task. Open partition files with :meth:`new_partition_file`, record
    them with :meth:`add_partition`, then :meth:`commit` returns the task's commit message.
    Several attempts of one task may run (retries, speculation); each has its own directory."""

    def __init__(self, ctx: JobContext, task_id: int, attempt_id: str | int | None = None):
        self.ctx = ctx
        self.task_id = int(task_id)
        self.attempt_id = str(attempt_id) if attempt_id is not None else uuid.uuid4().hex[:8]
        self.name = layout.attempt_dir_name(self.task_id, self.attempt_id)
        self.io = ctx.file_io()
        self.conf = Config(ctx.conf)
        strategy = strategy_for(self.io)
        #: the job's directory (store-relative) that partition paths in messages are relative to
        self.job_dir = strategy.job_dir(ctx.job_id)
        self.dir = posixpath.join(self.job_dir, self.name)
        self.partitions: list[dict[str, Any]] = []
        self._seq = 0
        if ctx.skip:
            return
        gone = CommitError("job staging directory is gone (job already committed or aborted): "
                           "this attempt cannot write", store=ctx.uri,
                           file=self.io.path(self.job_dir))
        if not self.io.is_local and not strategy.job_exists(self.io, ctx.job_id):
            raise gone
        try:
            self.io.mkdir(self.dir)  # local: fails when the job dir is gone
        except FileNotFoundError:
            raise gone from None

    @property
    def skipped(self) -> bool:
        """True when the job publishes nothing (mode=ignore on an existing store): a writer
        may stop consuming its input."""
        return self.ctx.skip

    def new_partition_file(self, direct: bool = False) -> tuple[str, Any]:
        """(path relative to the job dir, an open binary file); ``direct``: past the page cache
        on local disk (see FileIO.open_output)."""
        name = layout.partition_file_name(self.task_id, self._seq)
        self._seq += 1
        rel_in_job = f"{self.name}/{name}"
        if self.ctx.skip:
            return rel_in_job, _Discard()
        return rel_in_job, self.io.open_output(posixpath.join(self.dir, name), direct=direct)

    def add_partition(self, rel_in_job: str, info: dict[str, Any]) -> None:
        if not self.ctx.skip:
            self.partitions.append({"path": rel_in_job, **info})

    def commit(self) -> dict[str, Any]:
        """The task's commit message (small, JSON-able): hand it to the driver."""
        return {"task_id": self.task_id, "attempt": self.attempt_id, "dir": self.name,
                "partitions": [dict(p) for p in self.partitions]}

    def abort(self) -> None:
        """Remove this attempt's files. Idempotent; after the job committed it finds nothing."""
        if not self.ctx.skip:
            self.io.delete_tree(self.dir)


def _repair_base(io: FileIO) -> versions.StoreState:
    """The state a repair starts from: the damaged newest record's seq and no live version."""
    commits = versions.read_log(io)
    if not commits.head_damaged:
        raise CorruptStoreError(f"the newest commit record ({commits.newest_seq}) is not damaged: "
                                "nothing to repair", store=io.uri)
    return versions.StoreState(commits.newest_seq, None)


def _create_staging(io: FileIO, ctx: JobContext) -> None:
    """Create the store's directories, the job's staging directory and the marker, recording
    in ``ctx.created`` what this job created (its abort removes that again if unused)."""
    # ctx.created is kept up to date at every step, so an abort after an interruption (Ctrl-C
    # lands between any two bytecodes) still knows what to remove.
    created: set[str] = set()
    for _ in range(10):
        for rel in ("", layout.STAGING, layout.VERSIONS):
            if io.create_dir(rel):
                created.add(rel)
                ctx.created = sorted(created)
        try:
            strategy_for(io).open_job(io, ctx.job_id)
            break
        except FileNotFoundError:
            # Another job's failed first write removed the empty directories it had created
            # between our steps: create them again.
            continue
    else:
        raise CommitError("could not create the job's staging directory: the store's "
                          "directories kept disappearing", store=ctx.uri)
    # The marker comes last: until a job has a staging directory, another job's abort may
    # remove it (and the commit creates it again if it is gone).
    if versions.ensure_marker(io):
        created.add(layout.MARKER)
    ctx.created = sorted(created)
    if not check_same_device(io, layout.STAGING, layout.VERSIONS) or \
            not check_same_device(io, layout.STAGING, layout.COMMITS):
        Job(ctx).abort()
        raise CommitError("_staging is on a different device than _versions/_commits: the "
                          "commit rename would be a copy, not an atomic step; remove the "
                          "mount or symlink under the store", store=ctx.uri)


class Job:
    """Driver side of one write job."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.io = ctx.file_io()
        self.conf = Config(ctx.conf)
        self.strategy = strategy_for(self.io)
        self.job_dir = self.strategy.job_dir(ctx.job_id)
        self.committed = False
        # The commit record's put failed in a way that does not say whether it landed: then
        # nothing of this job may be deleted (the record may name its files).
        self._outcome_unknown = False
        self.record: CommitRecord | None = None
        self._carried = 0
        self._staged: tuple[Manifest, str] | None = None  # what stage() prepared

    @property
    def uri(self) -> str:
        return self.ctx.uri

    @classmethod
    def setup(cls, uri: str, mode: str = "error", conf: dict[str, Any] | None = None,
              storage_options: dict[str, Any] | None = None, *, repair: bool = False) -> Job:
        """Start a write job: check the mode against the store, create the staging directory.

        Args:
            uri: the store.
            mode: error, ignore, overwrite or append (docs/COMMIT.md).
            conf: setting overrides (``kvio.*``).
            storage_options: passed to fsspec.
            repair: start on top of a damaged newest commit record (only ``kvio repair``
                does this; ``mode`` must be overwrite).

        Returns:
            The job; ``job.ctx`` is what tasks need.

        Raises:
            InvalidArgumentError: an unknown mode (or not overwrite with ``repair``).
            StoreExistsError: mode error and the store exists, or the path holds other data.
            CorruptStoreError: the newest commit record is damaged (or, with ``repair``, it is
                not).
            CommitError: staging would be on another device than the store's versions.
        """
        if mode not in MODES:
            raise InvalidArgumentError(f"unknown write mode {mode!r}; use one of "
                                       f"{', '.join(MODES)}", store=uri)
        if repair and mode != "overwrite":
            raise InvalidArgumentError(f"a repair job publishes a whole version: mode must be "
                                       f"'overwrite', not {mode!r}", store=uri)
        cfg = Config(conf)
        io = FileIO.for_conf(uri, cfg, storage_options)
        io.require_atomic()
        if io.exists() and not io.isdir():
            raise StoreExistsError("path exists and is a file, not a store", store=uri)
        # A record of an undecided transaction is decided (aborted) first: publishing on top
        # of it would lose that transaction's update if it committed afterwards.
        state = _repair_base(io) if repair else versions.settle(io)
        skip = False
        if state.live:
            if mode == "error":
                raise StoreExistsError(f"store already exists (version {state.version}); use "
                                       "mode='overwrite' to replace it or 'append' to add to it",
                                       store=uri)
            skip = mode == "ignore"
        elif state.seq == 0 and not io.exists(layout.MARKER):
            foreign = [n for n in io.listdir() if n not in _OWN_NAMES and not n.startswith(TMP_PREFIX)]
            if foreign:
                raise StoreExistsError("directory exists, is not empty and is not a kvio store "
                                       f"(holds {foreign[:3]}); refusing to write into it", store=uri)
        ctx = JobContext(uri=uri, job_id=layout.new_job_id(), mode=mode, base_seq=state.newest_seq,
                         conf=dict(conf or {}), storage_options=dict(storage_options or {}),
                         skip=skip, base_version=state.version if state.live else None,
                         base_damaged=repair)
        if skip:
            return cls(ctx)
        try:
            _create_staging(io, ctx)
            return cls(ctx)
        except BaseException:
            # Failed or interrupted (Ctrl-C) after creating directories: the caller never gets
            # the job to abort, so undo what this job created here.
            with contextlib.suppress(Exception):
                cls(ctx).abort()
            raise

    def task(self, task_id: int, attempt_id: str | int | None = None) -> TaskAttempt:
        return TaskAttempt(self.ctx, task_id, attempt_id)

    # ---- validation ----------------------------------------------------------------------
    def _check_file(self, rel_in_job: str, entry: PartitionEntry, who: str,
                    sizes: dict[str, int] | None = None) -> None:
        """The file exists and is the one described: size, footer checksum, count, keys.
        ``sizes`` (remote filesystems): the job's files and sizes from one listing, so the
        check needs no request of its own for the size."""
        uri = self.ctx.uri
        rel = posixpath.join(self.job_dir, rel_in_job)
        try:
            if sizes is None:
                size = self.io.size(rel)
            elif rel_in_job in sizes:
                size = sizes[rel_in_job]
            else:
                raise FileNotFoundError(rel)
        except FileNotFoundError:
            raise CommitError(f"partition file listed by {who} is missing", store=uri,
                              file=self.io.path(rel)) from None
        read: Callable[[int, int], bytes] = functools.partial(self.io.read_range, rel)
        if not self.io.is_local:
            read = _TailReads(read, size).read
        source = RangeSource(read, size, self.io.path(rel))
        try:
            reader = PartitionReader(source, store=uri, expected=entry.to_json())
        except (CorruptStoreError, FileNotFoundError) as exc:
            raise CommitError(f"partition file listed by {who} failed validation: {exc}",
                              store=uri, file=self.io.path(rel)) from None
        described = (entry.count, entry.min_key, entry.max_key)
        actual = (reader.count, reader.min_key, reader.max_key)
        if described != actual:
            raise CommitError(f"{who} describes a partition as (count, min, max) {described} but "
                              f"the file holds {actual}", store=uri, file=self.io.path(rel))

    def _validate(self, messages: Sequence[dict[str, Any] | None],
                  num_tasks: int | None) -> list[PartitionEntry]:
        uri = self.ctx.uri
        messages = list(messages)
        missing = [i for i, m in enumerate(messages) if m is None]
        if missing:
            raise CommitError(f"task(s) {missing} sent no commit message (failed tasks); "
                              "refusing to publish a partial store", store=uri)
        seen: dict[int, Any] = {}  # task id -> attempt id
        tasks: list[dict[str, Any]] = []
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("task_id"), int) \
                    or not isinstance(m.get("partitions"), list):
                raise CommitError(f"not a kvio task commit message: {str(m)[:200]}", store=uri)
            tasks.append(m)
            if m["task_id"] in seen:
                raise CommitError(f"task {m['task_id']} has two commit messages (attempts "
                                  f"{seen[m['task_id']]} and {m.get('attempt')}); exactly one is "
                                  "allowed", store=uri)
            seen[m["task_id"]] = m.get("attempt")
        expected = len(messages) if num_tasks is None else num_tasks
        if sorted(seen) != list(range(expected)):
            absent = sorted(set(range(expected)) - set(seen))
            extra = sorted(set(seen) - set(range(expected)))
            raise CommitError(f"expected exactly one message for each of tasks 0..{expected - 1}; "
                              f"missing {absent[:10]}, unexpected {extra[:10]}", store=uri)
        partitions: list[PartitionEntry] = []
        checks: list[tuple[str, PartitionEntry, str]] = []
        paths: set[str] = set()
        for m in sorted(tasks, key=lambda m: m["task_id"]):
            who = f"task {m['task_id']} (attempt {m.get('attempt')})"
            for p in m["partitions"]:
                path = p.get("path") if isinstance(p, dict) else None
                head, _, tail = path.partition("/") if isinstance(path, str) else ("", "", "")
                if not isinstance(path, str) or not head or not tail or "/" in tail or ".." in (head, tail) \
                        or head.startswith(layout.CARRIED) \
                        or (m.get("dir") is not None and head != m["dir"]) or path in paths:
                    raise CommitError(f"{who} lists a partition path {path!r} outside its own "
                                      "attempt directory (or twice)", store=uri)
                paths.add(path)
                try:
                    entry = PartitionEntry.from_json(p)
                except (KeyError, TypeError, ValueError) as exc:
                    raise CommitError(f"{who} describes partition {path!r} wrongly: {exc}",
                                      store=uri) from None
                checks.append((path, entry, who))
                partitions.append(entry)
        self._check_files(checks)
        return partitions

    def _verify_mode(self) -> str:
        """``footers`` or ``sizes``: what ``kvio.commit.verify`` asks for on this filesystem.
        ``auto`` checks sizes on object stores with a create-only write: an object becomes
        visible only once its upload completed, so a listed object of the described size is
        the whole file the task closed (readers still check every footer against the
        manifest, and every block's checksum, on first use). Elsewhere a file is visible while
        it is written, so the footer is read."""
        mode = self.conf.commit_verify
        if mode == "auto":
            return "sizes" if self.io.create_only else "footers"
        return mode

    def _check_files(self, checks: Sequence[tuple[str, PartitionEntry, str]]) -> None:
        """:meth:`_check_file` of each (path, entry, who); on a remote filesystem several at
        a time (each check is a few requests whose latency dominates: 10,000 partitions one
        after the other took minutes on an S3 server). With ``kvio.commit.verify=sizes`` only
        each file's size, from one listing (a request per 1,000 files). The first failure in
        list order is raised."""
        if self._verify_mode() == "sizes":
            self._check_sizes(checks, self.io.file_sizes(self.job_dir))
            return
        if self.io.is_local or len(checks) < 2:
            for path, entry, who in checks:
                self._check_file(path, entry, who)
            return
        sizes = self.io.file_sizes(self.job_dir)
        with ThreadPoolExecutor(min(_REMOTE_CHECKS, len(checks))) as pool:
            futures = [pool.submit(self._check_file, *check, sizes) for check in checks]
        for future in futures:
            future.result()

    def _check_sizes(self, checks: Sequence[tuple[str, PartitionEntry, str]],
                     sizes: dict[str, int]) -> None:
        """Each file is listed, at the size its description gives."""
        for path, entry, who in checks:
            rel = posixpath.join(self.job_dir, path)
            if path not in sizes:
                raise CommitError(f"partition file listed by {who} is missing",
                                  store=self.ctx.uri, file=self.io.path(rel))
            if sizes[path] != entry.size:
                raise CommitError(f"partition file listed by {who} failed validation: it holds "
                                  f"{sizes[path]} bytes, its description says {entry.size}",
                                  store=self.ctx.uri, file=self.io.path(rel))

    # ---- carrying existing data (append, merge, rollback) ---------------------------------
    def carry(self, src_io: FileIO, version: str,
              manifest: Manifest | None = None) -> list[PartitionEntry]:
        """Bring every partition of a published ``version`` (of this or another store on the
        same filesystem type) into the job: hard links on one local disk, copies elsewhere.
        Returns manifest entries to pass as ``extra_partitions``, in the source's priority
        order. The files are validated at commit like the tasks' files."""
        if manifest is None:
            manifest = versions.load_manifest(src_io, version)
        entries = []
        for entry in manifest.partitions:
            rel_in_job = layout.carried_name(self._carried, entry.path)
            self._carried += 1
            src_rel = posixpath.join(layout.version_dir(version), entry.path)
            try:
                self.io.copy_from(src_io, src_rel, posixpath.join(self.job_dir, rel_in_job))
            except FileNotFoundError:
                raise ConcurrentCommitError(
                    f"version {version} was garbage collected while this job copied it (newer "
                    "versions were published meanwhile)", store=src_io.uri, file=src_io.path(src_rel),
                    landed=False) from None
            entries.append(entry.with_path(rel_in_job))
        return entries

    def _carry_base(self, base: str) -> list[PartitionEntry]:
        try:
            manifest = versions.load_manifest(self.io, base)
        except CorruptStoreError:
            if versions.read_state(self.io).newest_seq != self.ctx.base_seq:
                raise ConcurrentCommitError(f"store was updated by another process and version "
                                            f"{base}, which this append started from, is gone",
                                            store=self.ctx.uri, landed=False) from None
            raise
        return self.carry(self.io, base, manifest)

    # ---- commit ------------------------------------------------------------------------
    def _own_commit(self) -> CommitRecord | None:
        for record in reversed(versions.history(self.io)):
            if record.job == self.ctx.job_id and record.version == self.ctx.job_id:
                return record
        return None

    def commit(self, messages: Sequence[dict[str, Any] | None], num_tasks: int | None = None,
               extra_partitions: Iterable[PartitionEntry] = (), count: int | None = None,
               op: str | None = None, note: dict[str, Any] | None = None,
               txn: TxnRef | None = None) -> CommitRecord | None:
        """Publish the job's version; returns its commit record, or None when nothing was
        published on purpose (mode=ignore and the store exists).

        ``messages``: one task commit message per task; task ids must be exactly
        0..num_tasks-1 (default: len(messages)), and a None (failed task) fails the job.
        ``extra_partitions``: entries from :meth:`carry`, lower priority than the tasks' files.
        ``txn``: publish a pending record of that transaction (kvio/transaction.py): it counts
        only once the transaction record says committed, and no garbage collection runs here.
        Raises ConcurrentCommitError (nothing published, staging removed) when another job
        published since setup; CommitError.landed tells whether anything was published.
        The same as :meth:`stage` then :meth:`publish`."""
        if self.ctx.skip:
            return None
        self.stage(messages, num_tasks, extra_partitions, count, op)
        return self.publish(note, txn)

    def stage(self, messages: Sequence[dict[str, Any] | None], num_tasks: int | None = None,
              extra_partitions: Iterable[PartitionEntry] = (), count: int | None = None,
              op: str | None = None) -> None:
        """Everything of :meth:`commit` before the commit point: validate the messages' files,
        carry the base (append), write the manifest and turn the job's directory into its
        (still invisible) version directory. A transaction stages every store before it
        creates any pending record.

        Raises:
            CommitError, ConcurrentCommitError: as :meth:`commit` (nothing published).
        """
        ctx, uri = self.ctx, self.ctx.uri
        if self.record is not None:
            raise CommitError(f"job was already committed (commit {self.record.seq})", store=uri,
                              landed=True)
        if self._staged is not None:
            raise CommitError("job was already staged", store=uri, landed=False)
        job_dir = self.job_dir
        if not self.strategy.job_exists(self.io, ctx.job_id):
            own = self._own_commit()
            if own is not None:
                raise CommitError(f"job was already committed (commit {own.seq})", store=uri,
                                  landed=True)
            raise CommitError("job staging directory is gone (aborted, or removed by gc)",
                              store=uri, landed=False)
        try:
            partitions = self._validate(messages, num_tasks)
            carried = list(extra_partitions)
            if ctx.mode == "append" and ctx.base_version is not None:
                carried = self._carry_base(ctx.base_version) + carried
            self._check_files([(p.path, p, f"carried partition {i}") for i, p in enumerate(carried)])
        except ConcurrentCommitError:
            self.abort()
            raise
        if op is None:
            op = "create" if ctx.base_version is None else \
                ("append" if ctx.mode == "append" else "overwrite")
        options = {"compression": self.conf.compression,
                   "block_size": self.conf.block_size_for(self.io.is_local)}
        manifest = Manifest.build(ctx.job_id, carried + partitions, options, count=count)
        try:
            # Another job's failed first write may have removed the marker after this job's
            # setup (only while nothing was published): a published store always has one.
            versions.ensure_marker(self.io)
            self.io.write_new_file(posixpath.join(job_dir, layout.MANIFEST),
                                   manifest.encode())
            # Step 1: the job dir becomes a version dir (still invisible: no commit names it);
            # on object stores it already is one (kvio/publish.py).
            self.strategy.stage(self.io, ctx.job_id)
        except OSError as exc:
            raise CommitError(f"could not stage the version: {exc}", store=uri, landed=False) from exc
        self._staged = (manifest, op)

    def publish(self, note: dict[str, Any] | None = None,
                txn: TxnRef | None = None) -> CommitRecord | None:
        """The commit point of a staged job (:meth:`stage`): create its commit record.

        Args:
            note: extra record fields.
            txn: make it a pending record of that transaction (see :meth:`commit`).

        Returns:
            The record (None: mode ignore and another job created the store meanwhile).

        Raises:
            CommitError: not staged, or as :meth:`commit`.
        """
        ctx, uri = self.ctx, self.ctx.uri
        if self._staged is None:
            raise CommitError("job was not staged: nothing to publish", store=uri, landed=False)
        manifest, op = self._staged
        # Step 2: the commit point. Creating commit base_seq+1 fails if anyone else published.
        try:
            record = versions.publish_commit(
                self.io, ctx.base_seq + 1, ctx.job_id, op, ctx.job_id,
                {"mode": ctx.mode, "partitions": len(manifest.partitions), **(note or {}),
                 **({"txn": txn} if txn is not None else {})},
                expect_base=ctx.base_version, base_damaged=ctx.base_damaged)
        except CommitError as exc:
            if exc.landed is False:  # definitely not published: nothing references our files
                self.io.delete_tree(layout.version_dir(ctx.job_id))
            else:
                self._outcome_unknown = True
            if isinstance(exc, ConcurrentCommitError) and ctx.mode == "ignore" \
                    and ctx.base_version is None and versions.read_state(self.io).live:
                log.info("kvio: %s was created by another job meanwhile; mode=ignore publishes "
                         "nothing", uri)
                return None
            raise
        self.committed = True
        self.record = record
        if txn is None:
            self._after_publish()
        return record

    def _after_publish(self) -> None:
        """Best-effort tidying; a failure here never un-publishes anything."""
        try:
            versions.collect_garbage(self.io, self.conf.versions_retain,
                                     older_than=self.conf.staging_max_age,
                                     grace=self.conf.gc_grace)
        except Exception as exc:  # noqa: BLE001 - tidying must not fail a published job
            log.warning("kvio: cleanup after publishing %s failed: %s", self.ctx.uri, exc)

    def abort(self, messages: Sequence[dict[str, Any] | None] | None = None) -> None:
        """Remove this job's staging (``messages`` is accepted for Spark's abort(messages) and
        not needed: every attempt wrote inside the staging dir). Idempotent; never touches a
        published version, so it is safe after a commit that raised or even succeeded."""
        if self.ctx.skip:
            return
        try:
            self._abort()
        except KeyboardInterrupt:
            # Ctrl-C while cleaning up after an earlier failure (it often arrives then): the
            # cleanup is short and idempotent, so finish it, then let the interrupt through.
            self._abort()
            raise

    def _abort(self) -> None:
        # A straggling attempt of a failed task (Spark, Hadoop) may create a file while the
        # tree is being removed, making the removal fail with "directory not empty". Retry
        # until the job dir is gone: after that no attempt can write (dirs are never recreated).
        staging = self.job_dir
        if staging == layout.version_dir(self.ctx.job_id) and self._maybe_published():
            return  # written in place and (maybe) named by a commit record: never delete it
        deadline = time.monotonic() + ABORT_RETRY_SECONDS
        while True:
            try:
                self.io.delete_tree(staging)
            except OSError:
                if time.monotonic() > deadline:
                    raise
            if not self.io.exists(staging) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if self._staged is not None and staging != layout.version_dir(self.ctx.job_id) \
                and not self._maybe_published():
            # Staged (renamed to its version directory) but never published: a transaction
            # that failed on another store aborts it here.
            self.io.delete_tree(layout.version_dir(self.ctx.job_id))
        if self.ctx.created:
            self._remove_created()

    def _maybe_published(self) -> bool:
        """Whether a commit record may name this job's version (its files are then a published
        version's, or may be: keep them)."""
        if self.record is not None or self._outcome_unknown:
            return True
        try:
            return self._own_commit() is not None
        except Exception:  # noqa: BLE001 - the log cannot be read: cannot rule it out
            return True

    def _remove_created(self) -> None:
        """After the abort of a job that created (part of) the store: remove what it created,
        in reverse order and only while nothing shows another job at work (a commit record,
        anything in ``_staging`` or ``_versions``), so a failed first write leaves no store
        behind and never removes what another job created. Directories go only when empty (on
        local disk ``os.rmdir`` checks that atomically)."""
        io, created = self.io, set(self.ctx.created)
        try:
            if versions.commit_seqs(io):
                return  # published by someone (or by this job, before an abort after commit)
            for rel in (layout.STAGING, layout.VERSIONS):
                if rel in created:
                    io.remove_empty_dir(rel)
                if io.listdir(rel):
                    return
            if layout.MARKER in created:
                io.delete_file(layout.MARKER)
            if "" in created:
                io.remove_empty_dir("")
        except OSError as exc:  # tidying must not hide the job's own error
            log.warning("kvio: could not remove the unused store directory %s: %s",
                        self.ctx.uri, exc)
