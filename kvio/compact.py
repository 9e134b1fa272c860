"""Compaction: rewrite the current version's layers into disjoint partitions.

Updates (:mod:`kvio.update`) stack delta partitions and tombstone files on a store; every
lookup of a key in an overlapping range then asks several partitions. Compaction reads the
current version through the one read planner (merged by priority, tombstones dropped, memory
bounded by ``kvio.merge.bytes``), writes the pairs as sorted, disjoint partitions without
tombstones and publishes them as a new version. It publishes like any other job: if another
publish lands first it fails with ConcurrentCommitError and changes nothing, so no update is
lost (docs/COMMIT.md, "Updates and compaction").
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .committer import Job
from .errors import ConcurrentCommitError, StoreNotFoundError
from .reader import StoreReader
from .writer import SortedPairWriter

__all__ = ["compact_store"]


def compact_store(uri: str, open_version: Callable[[str], StoreReader],
                  conf: dict[str, Any] | None = None,
                  storage_options: dict[str, Any] | None = None,
                  progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Publish the current version of ``uri`` again as disjoint partitions without tombstones.

    Args:
        uri: the store.
        open_version: opens a reader of a named version of the store (pinned while it reads).
        conf: setting overrides (``kvio.*``).
        storage_options: passed to fsspec.
        progress: called with the number of pairs written after each batch.

    Returns:
        The commit record of the new version as a JSON object.

    Raises:
        StoreNotFoundError: there is no store at ``uri``.
        ConcurrentCommitError: another publish landed while compacting; nothing was published
            (compact again).
        CorruptStoreError: a file of the current version is damaged.
    """
    # Setup first, then read exactly the version the job will replace: a publish between the
    # two would otherwise be overwritten by an older state.
    job = Job.setup(uri, mode="overwrite", conf=conf, storage_options=storage_options)
    base = job.ctx.base_version
    writer: SortedPairWriter | None = None
    try:
        if base is None:
            raise StoreNotFoundError("nothing to compact: the store does not exist", store=uri)
        with open_version(base) as reader:
            if reader.commit.seq != job.ctx.base_seq:
                raise ConcurrentCommitError("store was updated by another process while "
                                            "compaction started", store=uri, landed=False)
            writer = SortedPairWriter(job.task(0))
            for batch in reader.batches():
                writer.put_many(batch)
                if progress is not None:
                    progress(batch.num_rows)
            message = writer.close()
        # The record names the version it compacted: rollback then goes past it (same pairs).
        record = job.commit([message], num_tasks=1, op="compact", note={"source": base})
    except BaseException:
        if writer is not None and not writer.closed:
            writer.discard()
        if not job.committed:
            job.abort()
        raise
    assert record is not None  # overwrite mode never skips
    return record.to_json()
