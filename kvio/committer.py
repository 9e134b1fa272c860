"""The output committer: job -> tasks -> task attempts, shared by every kvio writer.

Protocol (docs/COMMIT.md has the guarantees and per-filesystem behaviour):

1. ``Job.setup(uri, mode)`` on the driver: unique job id, staging dir ``_staging/<job>``
   inside the store (same filesystem), and the commit seq it starts from (the CAS token).
2. Each task attempt writes partition files into ``_staging/<job>/<attempt>/`` and returns a
   small JSON-able commit message describing them.
3. ``Job.commit(messages)`` checks there is exactly one message per task, validates every file
   (exists, size, footer checksum), writes the manifest built from the messages only, renames
   the staging dir to ``_versions/<job>``, and publishes commit record seq+1 with a no-clobber
   create: that single step makes the version visible. Files of other attempts are never listed.
4. ``Job.abort()`` / ``TaskAttempt.abort()`` are idempotent and touch only their own staging.
"""
from __future__ import annotations

import logging
import posixpath
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from . import layout, versions
from .config import Config
from .errors import (CommitError, ConcurrentCommitError, CorruptStoreError, KvioError,
                     StoreExistsError)
from .format import manifest as manifest_format
from .format.partition_reader import PartitionReader
from .format.source import RangeSource
from .fs import FileIO, check_same_device

log = logging.getLogger(__name__)
MODES = ("error", "ignore", "overwrite", "append")


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "JobContext":
        return cls(**doc)

    def file_io(self) -> FileIO:
        cfg = Config(self.conf)
        return FileIO(self.uri, allow_non_atomic=cfg.allow_non_atomic,
                      storage_options=self.storage_options)


class TaskAttempt:
    """One attempt of one task. Open partition files with :meth:`new_partition_file`, record
    them with :meth:`add_partition`, then :meth:`commit` returns the task's commit message."""

    def __init__(self, ctx: JobContext, task_id: int, attempt_id: str | None = None):
        self.ctx = ctx
        self.task_id = int(task_id)
        self.attempt_id = attempt_id or uuid.uuid4().hex[:8]
        self.name = f"task-{self.task_id:05d}-{self.attempt_id}"
        self.io = ctx.file_io()
        self.conf = Config(ctx.conf)
        self.dir = layout.attempt_dir(ctx.job_id, self.name)
        self.partitions: list[dict[str, Any]] = []
        self._seq = 0
        if not ctx.skip:
            if not self.io.exists(layout.staging_dir(ctx.job_id)):
                raise CommitError("job staging directory is gone (job already committed or "
                                  "aborted): this attempt cannot write", store=ctx.uri,
                                  file=self.io.path(layout.staging_dir(ctx.job_id)))
            self.io.makedirs(self.dir)

    def new_partition_file(self) -> tuple[str, Any]:
        """(relative path inside the job dir, an open binary file)."""
        name = layout.partition_file_name(self.task_id, self._seq)
        self._seq += 1
        rel = posixpath.join(self.dir, name)
        return f"{self.name}/{name}", self.io.open_output(rel)

    def add_partition(self, rel_in_job: str, info: dict[str, Any]) -> None:
        self.partitions.append({"path": rel_in_job, **info})

    def commit(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "attempt": self.attempt_id, "partitions": list(self.partitions)}

    def abort(self) -> None:
        self.io.delete_tree(self.dir)


class Job:
    """Driver side of one write job."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.io = ctx.file_io()
        self.conf = Config(ctx.conf)
        self.committed = False

    @classmethod
    def setup(cls, uri: str, mode: str = "error", conf: dict[str, Any] | None = None,
              storage_options: dict[str, Any] | None = None) -> "Job":
        if mode not in MODES:
            raise KvioError(f"unknown write mode {mode!r}; use one of {', '.join(MODES)}", store=uri)
        cfg = Config(conf)
        io = FileIO(uri, allow_non_atomic=cfg.allow_non_atomic, storage_options=storage_options)
        io.require_atomic()
        if io.exists() and not io.isdir():
            raise StoreExistsError("path exists and is a file, not a store", store=uri)
        if io.is_local and not check_same_device(io, layout.STAGING, layout.VERSIONS):
            raise CommitError("staging and versions are on different devices; the commit rename "
                              "would copy instead of being atomic", store=uri)
        state = versions.read_state(io)
        skip = False
        if state.live:
            if mode == "error":
                raise StoreExistsError(f"store already exists (version {state.commit['version']}); "
                                       "use mode='overwrite' to replace it", store=uri)
            if mode == "ignore":
                skip = True
        elif not state.live and io.exists() and io.listdir() and not io.exists(layout.MARKER) \
                and state.commit is None:
            raise StoreExistsError("directory exists, is not empty and is not a kvio store; "
                                   "refusing to write into it", store=uri)
        ctx = JobContext(uri=uri, job_id=layout.new_job_id(), mode=mode, base_seq=state.seq,
                         conf=dict(conf or {}), storage_options=dict(storage_options or {}),
                         skip=skip)
        if not skip:
            io.makedirs("")
            versions.ensure_marker(io)
            io.makedirs(layout.staging_dir(ctx.job_id))
        return cls(ctx)

    def task(self, task_id: int, attempt_id: str | None = None) -> TaskAttempt:
        return TaskAttempt(self.ctx, task_id, attempt_id)

    # ---- commit ------------------------------------------------------------------------
    def _validate(self, messages: Sequence[dict[str, Any] | None], num_tasks: int | None) -> list[dict]:
        uri = self.ctx.uri
        if any(m is None for m in messages):
            missing = [i for i, m in enumerate(messages) if m is None]
            raise CommitError(f"task(s) {missing} sent no commit message (failed tasks); "
                              "refusing to publish a partial store", store=uri)
        seen: dict[int, str] = {}
        for m in messages:
            if m["task_id"] in seen:
                raise CommitError(f"task {m['task_id']} has two commit messages (attempts "
                                  f"{seen[m['task_id']]} and {m['attempt']}); exactly one is allowed",
                                  store=uri)
            seen[m["task_id"]] = m["attempt"]
        if num_tasks is not None and sorted(seen) != list(range(num_tasks)):
            raise CommitError(f"expected one message for each of {num_tasks} tasks, got tasks "
                              f"{sorted(seen)}", store=uri)
        partitions: list[dict] = []
        job_dir = layout.staging_dir(self.ctx.job_id)
        for m in sorted(messages, key=lambda m: m["task_id"]):
            for p in m["partitions"]:
                rel = posixpath.join(job_dir, p["path"])
                try:
                    size = self.io.size(rel)
                except FileNotFoundError:
                    raise CommitError(f"partition file listed by task {m['task_id']} is missing",
                                      store=uri, file=self.io.path(rel)) from None
                source = RangeSource(lambda o, n, rel=rel: self.io.read_range(rel, o, n), size,
                                     self.io.path(rel))
                try:
                    PartitionReader(source, store=uri, expected=p)
                except CorruptStoreError as exc:
                    raise CommitError(f"partition file failed validation: {exc}", store=uri,
                                      file=self.io.path(rel)) from None
                partitions.append(p)
        return partitions

    def commit(self, messages: Sequence[dict[str, Any] | None], num_tasks: int | None = None,
               extra_partitions: Iterable[dict[str, Any]] = (), count: int | None = None,
               op: str | None = None) -> dict | None:
        """Publish the job's version. Returns the commit record, or None for a skipped job.
        ``extra_partitions`` (already inside the job dir, lower priority than the tasks' files)
        is how append and merge carry over existing data."""
        if self.ctx.skip:
            return None
        if self.committed:
            raise CommitError("job was already committed", store=self.ctx.uri, landed=True)
        uri, job_id = self.ctx.uri, self.ctx.job_id
        job_dir = layout.staging_dir(job_id)
        if not self.io.exists(job_dir):
            raise CommitError("job staging directory is gone (aborted, or committed by another "
                              "driver)", store=uri, landed=False)
        partitions = list(extra_partitions) + self._validate(messages, num_tasks)
        options = {"compression": self.conf.compression, "block_size": self.conf.block_size}
        doc = manifest_format.build(job_id, partitions, options, count=count)
        self.io.write_new_file(posixpath.join(job_dir, layout.MANIFEST), manifest_format.encode(doc))
        # Step 1: the job dir becomes a version dir (still invisible: no commit names it).
        self.io.makedirs(layout.VERSIONS)
        self.io.rename_dir(job_dir, layout.version_dir(job_id))
        # Step 2: the commit point. Creating commit base_seq+1 fails if anyone else published.
        try:
            record = versions.publish_commit(self.io, self.ctx.base_seq + 1, job_id,
                                             op or ("overwrite" if self.ctx.base_seq else "create"), job_id)
        except ConcurrentCommitError:
            self.io.delete_tree(layout.version_dir(job_id))  # definitely not committed
            raise
        except BaseException as exc:
            # Outcome unknown (e.g. the filesystem failed mid-call): clean nothing.
            raise CommitError(f"publish outcome unknown: {exc}", store=uri, landed=None) from exc
        self.committed = True
        self._after_publish(doc)
        return record

    def _after_publish(self, doc: dict) -> None:
        """Best-effort tidying; a failure here never un-publishes anything."""
        vdir = layout.version_dir(self.ctx.job_id)
        listed = {p["path"].split("/", 1)[0] for p in doc["partitions"]}
        try:
            for name in self.io.listdir(vdir):
                if name.startswith("task-") and name not in listed:
                    self.io.delete_tree(posixpath.join(vdir, name))
            versions.collect_garbage(self.io, self.conf.versions_retain,
                                     older_than=self.conf.staging_max_age)
        except Exception as exc:  # noqa: BLE001 - tidying must not fail a published job
            log.warning("kvio: cleanup after publishing %s failed: %s", self.ctx.uri, exc)

    def abort(self) -> None:
        """Remove this job's staging. Idempotent; never touches a published version."""
        if self.ctx.skip:
            return
        self.io.delete_tree(layout.staging_dir(self.ctx.job_id))
