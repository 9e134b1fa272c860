"""Where a job's files go before its commit, and how they become a version directory.

Two strategies, chosen from the filesystem's capability (:mod:`kvio.fs`):

* :class:`StageThenRename` (local disk, HDFS, memory, and object stores opted in to
  non-atomic publishing): a job writes into ``_staging/<job>/`` and the commit renames that
  directory to ``_versions/<job>`` before it creates the commit record.
* :class:`WriteInPlace` (object stores with a create-only write: S3, Azure Blob, GCS): there is
  no rename (on S3 it is a copy plus a delete per object), so a job writes straight into
  ``_versions/<job>/``, under the final names. Nothing names that directory until the commit
  record does, so readers never see it before; files of failed or duplicate attempts are never
  listed in the manifest and ``kvio gc`` removes them (and whole directories of jobs that never
  committed, once they are older than ``--older-than``).

Object stores have no empty directories, so :class:`WriteInPlace` marks a job's directory with
one small object (``_job``), created by setup and removed with the directory: a task attempt
that starts after its job was aborted finds it missing and refuses to write.
"""
from __future__ import annotations

import posixpath

from . import layout
from .fs import CREATE_ONLY, FileIO

JOB_MARKER = "_job"


class PublishStrategy:
    """How one filesystem stages a job's files (see the module docstring)."""

    #: a short name for logs and messages
    name = ""

    def job_dir(self, job_id: str) -> str:
        """The store-relative directory the job's task attempts write into.

        Args:
            job_id: the job.

        Returns:
            The directory.
        """
        raise NotImplementedError

    def open_job(self, io: FileIO, job_id: str) -> None:
        """Create the job's directory (its parents exist).

        Args:
            io: the store.
            job_id: the job.

        Raises:
            FileNotFoundError: a parent directory is gone (local disk; the caller retries).
        """
        raise NotImplementedError

    def job_exists(self, io: FileIO, job_id: str) -> bool:
        """Whether the job's directory is still there (not committed away, not aborted).

        Args:
            io: the store.
            job_id: the job.

        Returns:
            True while attempts may write into it.
        """
        raise NotImplementedError

    def stage(self, io: FileIO, job_id: str) -> None:
        """Make the job's directory ``_versions/<job>`` (still invisible: no record names it).

        Args:
            io: the store.
            job_id: the job.

        Raises:
            OSError: the filesystem failed.
        """
        raise NotImplementedError

    def discard(self, io: FileIO, job_id: str) -> None:
        """Delete the job's unpublished files (the caller made sure no record names them).

        Args:
            io: the store.
            job_id: the job.

        Raises:
            OSError: something could not be removed.
        """
        io.delete_tree(self.job_dir(job_id))


class StageThenRename(PublishStrategy):
    """Write into ``_staging/<job>``; the commit renames it to ``_versions/<job>``."""

    name = "stage-then-rename"

    def job_dir(self, job_id: str) -> str:
        return layout.staging_dir(job_id)

    def open_job(self, io: FileIO, job_id: str) -> None:
        io.mkdir(self.job_dir(job_id))

    def job_exists(self, io: FileIO, job_id: str) -> bool:
        return io.exists(self.job_dir(job_id))

    def stage(self, io: FileIO, job_id: str) -> None:
        io.rename_dir(self.job_dir(job_id), layout.version_dir(job_id))


class WriteInPlace(PublishStrategy):
    """Write into ``_versions/<job>`` under the final names; only the record publishes."""

    name = "write-in-place"

    def job_dir(self, job_id: str) -> str:
        return layout.version_dir(job_id)

    def open_job(self, io: FileIO, job_id: str) -> None:
        io.write_new_file(posixpath.join(self.job_dir(job_id), JOB_MARKER), job_id.encode())

    def job_exists(self, io: FileIO, job_id: str) -> bool:
        return io.exists(posixpath.join(self.job_dir(job_id), JOB_MARKER))

    def stage(self, io: FileIO, job_id: str) -> None:
        pass  # the files already are where the version's manifest says


def strategy_for(io: FileIO) -> PublishStrategy:
    """The strategy of a store's filesystem.

    Args:
        io: the store.

    Returns:
        :class:`WriteInPlace` on filesystems with a create-only write, else
        :class:`StageThenRename`.
    """
    return WRITE_IN_PLACE if io.capability == CREATE_ONLY else STAGE_THEN_RENAME


STAGE_THEN_RENAME = StageThenRename()
WRITE_IN_PLACE = WriteInPlace()
