"""Driver side of a Spark write: from the tasks' commit messages to one published version.

Each task writes its rows sorted, so a task's partitions never overlap each other, but two
tasks' partitions overlap unless the DataFrame was range-partitioned by key (what
``spark_jobs.write_store`` does). Overlapping partitions are a valid store (lookups consult
them by priority), but they may hide duplicate keys across tasks, so before publishing:

* ``duplicates=error`` reads the keys of overlapping partitions, a key range at a time, and
  refuses to publish if any key appears twice;
* ``duplicates=first``/``last`` are settled by priority: the committer gives later tasks higher
  priority, which is "last" in the DataFrame's order; for "first" the task order is reversed.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kvio import keyranges, layout
from kvio.committer import Job
from kvio.errors import KeyOrderError
from kvio.format.commit_record import CommitRecord
from kvio.format.manifest import Manifest, PartitionEntry
from kvio.format.partition_reader import PartitionReader
from kvio.partitions import open_partition
from kvio.plan import Piece, ReadPlanner

_CHECK_BYTES = 64 << 20  # keys are checked for duplicates in key ranges of about this much data


def finish_job(job: Job, tasks: Sequence[dict[str, Any] | None],
               duplicates: str) -> CommitRecord | None:
    """Validate and publish; returns the commit record (None for a skipped job)."""
    if job.ctx.skip:
        return None
    complete = [t for t in tasks if t is not None]
    count = None
    if len(complete) == len(tasks):  # otherwise Job.commit refuses, naming the failed tasks
        new = [p for t in complete for p in t["partitions"] if p["count"]]
        overlapping = not Manifest.build(job.ctx.job_id, [PartitionEntry.from_json(p) for p in new],
                                         {}).disjoint
        if not overlapping or duplicates == "error":
            if overlapping:
                _check_no_shared_keys(job, new)
            count = sum(p["count"] for p in new)
        if overlapping and duplicates == "first":
            last = len(tasks) - 1
            tasks = [{**t, "task_id": last - t["task_id"]} for t in complete]
    if job.ctx.mode == "append" and job.ctx.base_version is not None:
        count = None  # the committer carries the base version's partitions in
    if any(p.get("tombstones") for t in tasks if t is not None for p in t["partitions"]):
        count = None  # tombstone rows are not keys (deleteColumn)
    return job.commit(list(tasks), num_tasks=len(tasks), count=count)


def _check_no_shared_keys(job: Job, new: list[dict[str, Any]]) -> None:
    """Refuse to publish when two tasks wrote the same key: the core planner groups the
    overlapping partitions and cuts them into key ranges of about ``_CHECK_BYTES``."""
    job_dir = layout.staging_dir(job.ctx.job_id)
    entries = [PartitionEntry.from_json(p) for p in new]
    planner = ReadPlanner(Manifest.build(job.ctx.job_id, entries, {}))
    readers: dict[str, PartitionReader] = {}

    def open_entry(entry: PartitionEntry) -> PartitionReader:
        if entry.path not in readers:
            readers[entry.path] = open_partition(job.io, posixpath.join(job_dir, entry.path),
                                                 entry, job.conf)
        return readers[entry.path]
    try:
        for split in planner.splits(keyranges.ALL, _CHECK_BYTES, open_entry):
            for piece in split.pieces:
                if piece.merged:
                    _check_piece(job, piece, open_entry)
    finally:
        for reader in readers.values():
            reader.close()


def _check_piece(job: Job, piece: Piece, open_entry: Callable[[PartitionEntry], PartitionReader]) -> None:
    keys = [b.column(0) for e in piece.entries
            for b in open_entry(e).iter_batches(piece.start, piece.stop)]
    if len(keys) < 2:
        return
    merged = pa.chunked_array(keys).combine_chunks()
    merged = merged.take(pc.sort_indices(merged))
    same = pc.equal(merged.slice(1), merged.slice(0, len(merged) - 1))
    if pc.any(same).as_py():
        key = merged[pc.index(same, True).as_py()].as_py()
        raise KeyOrderError("duplicate key written by two Spark tasks (the default "
                            "duplicates=error; set duplicates=first or last, or "
                            "write with spark_jobs.write_store, which puts equal "
                            "keys in one task)", store=job.ctx.uri, key=key)
