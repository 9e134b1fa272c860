"""Rollback: publish an older retained version again, as a new version.

A store operation built on the committer like :meth:`KeyValueSystem.merge_store` and
:mod:`kvio.repair`: a job carries the old version's files (hard links on local disk, copies
elsewhere) into a new version whose commit record says ``op="rollback"`` and names the
``source``. The old version directory is never referenced again, so garbage collection never
races a rollback.
"""
from __future__ import annotations

from typing import Any

from . import versions
from .committer import Job
from .config import Config
from .errors import ConcurrentCommitError, InvalidArgumentError, KvioError, StoreNotFoundError
from .fs import FileIO


def rollback(uri: str, version: str | None = None, conf: dict[str, Any] | None = None,
             storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Publish a new version with the contents of an older retained one (default: the newest
    one before the current). The files are hard-linked (copied off local disk), so the old
    version directory is never referenced again and garbage collection never races a rollback.

    Args:
        uri: the store.
        version: the retained version to restore; None for the newest one before the current.
        conf: setting overrides (``kvio.*``).
        storage_options: passed to fsspec.

    Returns:
        The new commit record as a JSON object (``CommitRecord.to_json()``): ``op="rollback"``
        and ``source`` = the version restored.

    Raises:
        InvalidArgumentError: ``version`` is the current version, or the current version is
            already a rollback to it (restoring it would only push older versions out of
            retention).
        VersionNotRetainedError: ``version`` is in the history but its files were removed.
        StoreNotFoundError: ``version`` is not in the history; KvioError: no earlier version
            is retained.
        CorruptStoreError: the newest commit record is damaged (``kvio repair`` first).
        ConcurrentCommitError: another process published meanwhile (nothing published).
    """
    cfg = Config(conf)
    io = FileIO.for_conf(uri, cfg, storage_options)
    state = versions.current_state_for_read(io)
    present = versions.available_versions(io)
    # Restoring what is already current would publish a copy of it, and retention would then
    # collect the only older version the user could still go back to.
    if version is not None and version == state.version:
        raise InvalidArgumentError(f"version {version} is already the current version (commit "
                                   f"{state.seq}); nothing to roll back", store=uri)
    assert state.commit is not None
    if version is not None and state.commit.source == version:
        raise InvalidArgumentError(f"the current version {state.version} (commit {state.seq}) is "
                                   f"already a {state.commit.op} to version {version}; nothing "
                                   "to roll back", store=uri)
    commits = versions.history(io)
    if version is None:
        # A compaction holds the same pairs as the version it compacted (its source): going
        # back means going past both.
        same = {state.version, state.commit.source if state.commit.op == "compact" else None}
        earlier = [r.version for r in commits[:-1]
                   if r.version and r.version not in same and r.version in present]
        if not earlier:
            raise KvioError("no earlier version is retained to roll back to", store=uri)
        version = earlier[-1]
    if version not in present:
        named = [r for r in commits if r.version == version]
        if named:
            raise versions.not_retained_error(io, version, named[-1].seq)
        raise StoreNotFoundError(f"version {version} is not in the store's history", store=uri)
    manifest = versions.load_manifest(io, version)
    job = Job.setup(uri, mode="overwrite", conf=conf, storage_options=storage_options)
    try:
        if job.ctx.base_seq != state.seq:
            raise ConcurrentCommitError("store was updated by another process during rollback",
                                        store=uri, landed=False)
        carried = job.carry(io, version, manifest)
        record = job.commit([], num_tasks=0, extra_partitions=carried, count=manifest.count,
                            op="rollback", note={"source": version})
    except BaseException:
        if not job.committed:
            job.abort()
        raise
    assert record is not None
    return record.to_json()
