"""Where every file of a store lives (the only module that builds store-relative paths).

    <store>/_kvio_store                       marker: this directory is a kvio store
    <store>/_commits/<seq:010d>.commit        commit log; the highest seq is the current state
    <store>/_versions/<version>/manifest.kvm  the manifest of one immutable version
    <store>/_versions/<version>/<attempt>/part-<task:05d>-<seq:05d>-<tag>.kvp
    <store>/_versions/<version>/carried/<n:05d>-<name>.kvp   (append, merge, rollback)
    <store>/_staging/<job>/...                a running job; renamed to _versions/<job> on commit
    <store>/_pins/<version>.<holder>.pin      a reader's lease on a version (kvio/pins.py)
    <store>/_txns/<txn>.txn                   a transaction's decision (kvio/txn_state.py)

A job's staging directory becomes its version directory in one rename (on object stores with
a create-only write a job writes into ``_versions/<job>`` directly: kvio/publish.py), so names never need to
change at commit and files of failed attempts are simply never listed in the manifest. Every
name a job creates is new (job ids, attempt directories and partition files carry random
tags), so no step of any job can replace a file another job or attempt wrote.
"""
from __future__ import annotations

import re
import time
import uuid

MARKER = "_kvio_store"
COMMITS = "_commits"
VERSIONS = "_versions"
STAGING = "_staging"
PINS = "_pins"
TXNS = "_txns"
TXN_SUFFIX = ".txn"
PIN_SUFFIX = ".pin"
MANIFEST = "manifest.kvm"
COMMIT_SUFFIX = ".commit"
_COMMIT_NAME = re.compile(r"([0-9]{10})\.commit")
_VERSION_NAME = re.compile(r"[A-Za-z0-9._-]+")
_HOLDER = re.compile(r"[A-Za-z0-9_-]+")


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def txn_path(txn_id: str) -> str:
    """A transaction record (or a store's copy of its decision): ``_txns/<id>.txn``."""
    return f"{TXNS}/{txn_id}{TXN_SUFFIX}"


def commit_name(seq: int) -> str:
    return f"{COMMITS}/{seq:010d}{COMMIT_SUFFIX}"


def parse_commit_name(name: str) -> int | None:
    """The sequence number of a commit record's file name, or None for any other name.

    Args:
        name: a file name in ``_commits/``.

    Returns:
        The number for exactly ten ASCII digits and ``.commit`` (what :func:`commit_name`
        writes); None for everything else (temporary files, other names), which readers ignore
        (docs/FORMAT.md §1.3).
    """
    match = _COMMIT_NAME.fullmatch(name)
    return int(match[1]) if match else None


def is_version_name(name: object) -> bool:
    """Whether ``name`` can name a version directory: one path component, no ``.``/``..``.

    Args:
        name: a version id read from a commit record.

    Returns:
        True when it is safe to join under ``_versions/``.
    """
    return isinstance(name, str) and _VERSION_NAME.fullmatch(name) is not None \
        and name not in (".", "..")


def version_dir(version: str) -> str:
    return f"{VERSIONS}/{version}"


def manifest_path(version: str) -> str:
    return f"{VERSIONS}/{version}/{MANIFEST}"


def pin_path(version: str, holder: str) -> str:
    """The lease file of ``holder`` on ``version`` (a holder id has no ``.``, see kvio/pins.py)."""
    return f"{PINS}/{version}.{holder}{PIN_SUFFIX}"


def parse_pin_name(name: str) -> tuple[str, str] | None:
    """(version, holder) of a file name in ``_pins/``, or None for any other name.

    Args:
        name: a file name in ``_pins/``.

    Returns:
        The version and holder for ``<version>.<holder>.pin`` (a version name may contain dots,
        a holder id does not); None for temporary files and other names.
    """
    if not name.endswith(PIN_SUFFIX):
        return None
    version, sep, holder = name[:-len(PIN_SUFFIX)].rpartition(".")
    if not sep or not holder or not is_version_name(version) or not _HOLDER.fullmatch(holder):
        return None
    return version, holder


def staging_dir(job_id: str) -> str:
    return f"{STAGING}/{job_id}"


def attempt_dir(job_id: str, attempt_id: str) -> str:
    return f"{STAGING}/{job_id}/{attempt_id}"


def attempt_dir_name(task_id: int, attempt_id: str) -> str:
    """Unique even when a caller reuses an attempt id (two attempts never share a directory,
    so aborting one can never delete the other's files)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(attempt_id))[:64]
    return f"task-{task_id:05d}-{safe}-{uuid.uuid4().hex[:6]}"


CARRIED = "carried"


def carried_name(n: int, source_path: str) -> str:
    """Path inside a job of the n-th partition carried over from an existing version.

    Args:
        n: the partition's number among the files this job carries (makes the name unique).
        source_path: its path in the source version.

    Returns:
        ``carried/<n:05d>-<file name>``. A file that was itself carried loses its old number
        first, so names do not grow by six characters with every append or update (after
        about 37 they passed the 255-byte file name limit).
    """
    head, _, name = source_path.rpartition("/")
    if head == CARRIED and len(name) > 6 and name[:5].isdigit() and name[5] == "-":
        name = name[6:]
    return f"{CARRIED}/{n:05d}-{name}"


def partition_file_name(task_id: int, seq: int) -> str:
    """Named by task and the partition's sequence within the task, plus a random tag so two
    attempts never produce the same name (never Hadoop's part-NNNNN)."""
    return f"part-{task_id:05d}-{seq:05d}-{uuid.uuid4().hex[:8]}.kvp"
