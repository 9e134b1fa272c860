"""Where every file of a store lives (the only module that builds store-relative paths).

    <store>/_kvio_store                       marker: this directory is a kvio store
    <store>/_commits/<seq:010d>.commit        commit log; the highest seq is the current state
    <store>/_versions/<version>/manifest.kvm  the manifest of one immutable version
    <store>/_versions/<version>/<attempt>/part-<id:05d>-<uuid>.kvp
    <store>/_staging/<job>/...                a running job; renamed to _versions/<job> on commit

A job's staging directory becomes its version directory in one rename, so names never need to
change at commit and files of failed attempts are simply never listed in the manifest.
"""
from __future__ import annotations

import time
import uuid

MARKER = "_kvio_store"
COMMITS = "_commits"
VERSIONS = "_versions"
STAGING = "_staging"
MANIFEST = "manifest.kvm"
COMMIT_SUFFIX = ".commit"


def new_job_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:12]


def commit_name(seq: int) -> str:
    return f"{COMMITS}/{seq:010d}{COMMIT_SUFFIX}"


def parse_commit_name(name: str) -> int | None:
    if name.endswith(COMMIT_SUFFIX) and name[:-len(COMMIT_SUFFIX)].isdigit():
        return int(name[:-len(COMMIT_SUFFIX)])
    return None


def version_dir(version: str) -> str:
    return f"{VERSIONS}/{version}"


def manifest_path(version: str) -> str:
    return f"{VERSIONS}/{version}/{MANIFEST}"


def staging_dir(job_id: str) -> str:
    return f"{STAGING}/{job_id}"


def attempt_dir(job_id: str, attempt_id: str) -> str:
    return f"{STAGING}/{job_id}/{attempt_id}"


def partition_file_name(task_id: int, seq: int) -> str:
    """Named by task and the partition's sequence within the task, plus a random tag so two
    attempts never produce the same name (never Hadoop's part-NNNNN)."""
    return f"part-{task_id:05d}-{seq:05d}-{uuid.uuid4().hex[:8]}.kvp"
