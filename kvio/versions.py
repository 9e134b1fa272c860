"""The commit log of a store: which version is current, history, rollback and garbage collection.

Each publish adds ``_commits/<seq>.commit`` with the next sequence number, created with an
atomic no-clobber step. That creation is the compare-and-swap: a job that started from seq N
may only create N+1, so of two racing jobs exactly one succeeds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from . import layout
from .errors import (ConcurrentCommitError, CorruptStoreError, IncompleteStoreError,
                     NotAStoreError, StoreNotFoundError)
from .format import envelope
from .format import manifest as manifest_format
from .fs import FileIO

COMMIT_KIND = "KVIOCOMMIT"
MARKER_KIND = "KVIOSTORE"


@dataclass
class StoreState:
    seq: int                      # 0 when nothing was ever committed
    commit: dict[str, Any] | None  # the newest commit record

    @property
    def live(self) -> bool:
        return self.commit is not None and self.commit.get("version") is not None


def commit_seqs(io: FileIO) -> list[int]:
    seqs = (layout.parse_commit_name(name) for name in io.listdir(layout.COMMITS))
    return sorted(s for s in seqs if s is not None)


def read_commit(io: FileIO, seq: int) -> dict[str, Any]:
    rel = layout.commit_name(seq)
    return envelope.decode(COMMIT_KIND, io.read_bytes(rel), store=io.uri, file=io.path(rel))


def read_state(io: FileIO) -> StoreState:
    seqs = commit_seqs(io)
    if not seqs:
        return StoreState(0, None)
    return StoreState(seqs[-1], read_commit(io, seqs[-1]))


def ensure_marker(io: FileIO) -> None:
    if not io.exists(layout.MARKER):
        try:
            io.write_new_file(layout.MARKER, envelope.encode(MARKER_KIND, {"format": "kvio-store"}))
        except FileExistsError:
            pass  # another job created it first: same content


def current_state_for_read(io: FileIO) -> StoreState:
    """The state a reader needs, or the specific error that explains why there is none."""
    state = read_state(io)
    if state.live:
        return state
    if state.commit is not None:  # newest commit is a delete
        raise StoreNotFoundError("store was deleted", store=io.uri)
    if not io.exists():
        raise StoreNotFoundError("no store at this location", store=io.uri)
    if io.exists(layout.MARKER):
        raise IncompleteStoreError("store has no published version: its writer never finished "
                                   "(or is still running)", store=io.uri)
    if io.isdir():
        raise NotAStoreError("directory is not a kvio store (no _kvio_store marker)", store=io.uri)
    raise NotAStoreError("path is a file, not a kvio store directory", store=io.uri)


def load_manifest(io: FileIO, version: str) -> dict[str, Any]:
    rel = layout.manifest_path(version)
    try:
        blob = io.read_bytes(rel)
    except FileNotFoundError:
        raise CorruptStoreError("manifest of the current version is missing", store=io.uri,
                                file=io.path(rel)) from None
    doc = manifest_format.decode(blob, store=io.uri, file=io.path(rel))
    if doc.get("version") != version:
        raise CorruptStoreError(f"manifest names version {doc.get('version')}, expected {version}",
                                store=io.uri, file=io.path(rel))
    return doc


def publish_commit(io: FileIO, seq: int, version: str | None, op: str, job: str | None = None,
                   note: dict | None = None) -> dict[str, Any]:
    doc = {"seq": seq, "version": version, "op": op, "job": job, "time": time.time(), **(note or {})}
    try:
        io.write_new_file(layout.commit_name(seq), envelope.encode(COMMIT_KIND, doc))
    except FileExistsError:
        found = read_commit(io, seq)
        raise ConcurrentCommitError(
            f"store was updated by another process: expected to publish commit {seq} on top of "
            f"{seq - 1}, but commit {seq} already exists (version {found.get('version')}, op "
            f"{found.get('op')})", store=io.uri, landed=False) from None
    return doc


def history(io: FileIO) -> list[dict[str, Any]]:
    return [read_commit(io, s) for s in commit_seqs(io)]


def collect_garbage(io: FileIO, retain: int, older_than: float | None = None) -> dict[str, list[str]]:
    """Delete versions beyond the newest ``retain`` published ones, unreferenced version
    directories and staging directories older than ``older_than`` seconds, and commit records
    whose version is gone. Returns what was removed."""
    removed: dict[str, list[str]] = {"versions": [], "staging": [], "commits": []}
    commits = history(io)
    kept: list[str] = []
    for doc in reversed(commits):
        v = doc.get("version")
        if v is not None and v not in kept and len(kept) < retain:
            kept.append(v)
    referenced = {d.get("version") for d in commits if d.get("version")}
    now = time.time()

    def old_enough(rel: str) -> bool:
        if older_than is None:
            return True
        stamp = io.modified(rel)
        return stamp is not None and now - stamp > older_than

    for name in io.listdir(layout.VERSIONS):
        rel = layout.version_dir(name)
        # A version no commit names may belong to a job between its rename and its commit:
        # only remove it once it is old. Superseded versions go at once.
        superseded = name in referenced and name not in kept
        if superseded or (name not in referenced and old_enough(rel)):
            io.delete_tree(rel)
            removed["versions"].append(name)
    for name in io.listdir(layout.STAGING):
        rel = layout.staging_dir(name)
        if old_enough(rel):
            io.delete_tree(rel)
            removed["staging"].append(name)
    # Commit records pointing at removed versions can no longer be rolled back to; keep the
    # newest record always so the sequence number (the compare-and-swap token) survives.
    newest = commits[-1]["seq"] if commits else None
    for doc in commits:
        v = doc.get("version")
        if doc["seq"] != newest and (v is None or v not in kept):
            io.delete_file(layout.commit_name(doc["seq"]))
            removed["commits"].append(layout.commit_name(doc["seq"]))
    return removed
