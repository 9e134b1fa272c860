"""The commit log of a store: which version is current, history and garbage collection.

Each publish adds ``_commits/<seq>.commit`` with the next sequence number, created with an
atomic no-clobber step (:meth:`FileIO.write_new_file`). That creation is the compare-and-swap:
a job that started from seq N may only create N+1, so of two racing jobs exactly one succeeds.
Commit records are never deleted (only whole-store deletion removes them): a deleted record
could be created again by a job that started long ago, which would turn a lost race into a
silent success. They are a few hundred bytes each.

Every commit names a version directory that no earlier commit named (rollback publishes a new
version made of links to the old files), so once a version falls out of the newest
``kvio.versions.retain`` it is never referenced again and garbage collection can delete it
without racing a publish.
"""
from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass
from typing import Any

from . import layout
from .errors import (CommitError, ConcurrentCommitError, CorruptStoreError, IncompleteStoreError,
                     NotAStoreError, StoreNotFoundError)
from .format import envelope, marker
from .format.manifest import Manifest
from .fs import TMP_PREFIX, FileIO

log = logging.getLogger(__name__)
COMMIT_KIND = "KVIOCOMMIT"
MARKER_KIND = "KVIOSTORE"


@dataclass
class StoreState:
    seq: int                      # 0 when nothing was ever committed
    commit: dict[str, Any] | None  # the newest commit record

    @property
    def live(self) -> bool:
        return self.commit is not None and self.commit.get("version") is not None

    @property
    def version(self) -> str | None:
        return self.commit.get("version") if self.commit else None


def commit_seqs(io: FileIO) -> list[int]:
    seqs = (layout.parse_commit_name(name) for name in io.listdir(layout.COMMITS))
    return sorted(s for s in seqs if s is not None)


def read_commit(io: FileIO, seq: int) -> dict[str, Any]:
    rel = layout.commit_name(seq)
    doc = envelope.decode(COMMIT_KIND, io.read_bytes(rel), store=io.uri, file=io.path(rel))
    # Readers order records by name but trust the body: a record copied or renamed to another
    # number must not pass (docs/FORMAT.md §1.3).
    if type(doc.get("seq")) is not int or doc["seq"] != seq:
        raise CorruptStoreError(f"commit record says seq {doc.get('seq')!r}, its file name says "
                                f"{seq}", store=io.uri, file=io.path(rel))
    if doc.get("version") is not None and not layout.is_version_name(doc["version"]):
        raise CorruptStoreError(f"commit record names an invalid version {doc['version']!r}",
                                store=io.uri, file=io.path(rel))
    return doc


def read_state(io: FileIO) -> StoreState:
    seqs = commit_seqs(io)
    if not seqs:
        return StoreState(0, None)
    return StoreState(seqs[-1], read_commit(io, seqs[-1]))


def ensure_marker(io: FileIO) -> None:
    if not io.exists(layout.MARKER):
        try:
            io.write_new_file(layout.MARKER, marker.encode())
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
    names = io.listdir() if io.isdir() else None
    if names and all(n in (layout.COMMITS, layout.VERSIONS, layout.STAGING)
                     or n.startswith(TMP_PREFIX) for n in names):
        raise IncompleteStoreError("store has no published version: its first writer died while "
                                   "creating it", store=io.uri)
    if names is not None:
        raise NotAStoreError("directory is not a kvio store (no _kvio_store marker)", store=io.uri)
    raise NotAStoreError("path is a file, not a kvio store directory", store=io.uri)


def load_manifest(io: FileIO, version: str) -> Manifest:
    """The parsed manifest of ``version``.

    Raises:
        CorruptStoreError: the manifest is missing, damaged or names another version.
    """
    rel = layout.manifest_path(version)
    try:
        blob = io.read_bytes(rel)
    except FileNotFoundError:
        raise CorruptStoreError(f"manifest of version {version} is missing", store=io.uri,
                                file=io.path(rel)) from None
    manifest = Manifest.decode(blob, store=io.uri, file=io.path(rel))
    if manifest.version != version:
        raise CorruptStoreError(f"manifest names version {manifest.version}, expected {version}",
                                store=io.uri, file=io.path(rel))
    return manifest


def publish_commit(io: FileIO, seq: int, version: str | None, op: str, job: str | None = None,
                   note: dict | None = None, *, expect_base: str | None | bool = False) -> dict[str, Any]:
    """Create commit record ``seq`` — the commit point — or raise ConcurrentCommitError.

    ``expect_base``: the version the writer started from (None: no live version); checked
    against record seq-1 before the create so that a store deleted and re-created meanwhile
    (which restarts the sequence) is not mistaken for the one the job started from. False
    skips the check. Raises CommitError(landed=None) when the outcome cannot be known."""
    doc = {"seq": seq, "version": version, "op": op, "job": job, "time": time.time(), **(note or {})}
    if expect_base is not False and seq > 1:
        try:
            base = read_commit(io, seq - 1)
        except FileNotFoundError:
            raise ConcurrentCommitError(
                f"store was replaced by another process: commit {seq - 1}, which this job "
                "started from, is gone (store deleted and re-created?)", store=io.uri,
                landed=False) from None
        if base.get("version") != expect_base:
            raise ConcurrentCommitError(
                f"store was updated by another process: commit {seq - 1} names version "
                f"{base.get('version')}, this job started from {expect_base}", store=io.uri,
                landed=False)
    try:
        io.write_new_file(layout.commit_name(seq), envelope.encode(COMMIT_KIND, doc))
    except FileExistsError:
        found = read_commit(io, seq)
        raise ConcurrentCommitError(
            f"store was updated by another process: expected to publish commit {seq} on top of "
            f"{seq - 1}, but commit {seq} already exists (version {found.get('version')}, op "
            f"{found.get('op')}, job {found.get('job')})", store=io.uri, landed=False) from None
    except BaseException as exc:
        # The record may or may not have been created (e.g. the filesystem failed after the
        # rename): read it back instead of guessing.
        try:
            found = read_commit(io, seq)
        except FileNotFoundError:
            if io.is_local:  # os.link either made the name or did not
                raise CommitError(f"publishing commit {seq} failed: {exc}", store=io.uri,
                                  landed=False) from exc
            found = None
        except Exception:  # noqa: BLE001 - cannot even read: unknown
            found = None
        if found is not None and found.get("job") == job and found.get("version") == version:
            log.warning("kvio: publishing commit %s of %s raised %r after it landed", seq, io.uri, exc)
            return found
        if found is not None:
            raise ConcurrentCommitError(
                f"store was updated by another process: commit {seq} belongs to job "
                f"{found.get('job')}", store=io.uri, landed=False) from exc
        raise CommitError(f"publish outcome unknown: {exc}", store=io.uri, landed=None) from exc
    return doc


def history(io: FileIO) -> list[dict[str, Any]]:
    return [read_commit(io, s) for s in commit_seqs(io)]


def retained_versions(commits: list[dict[str, Any]], retain: int) -> list[str]:
    """The newest ``retain`` distinct published versions, newest first."""
    kept: list[str] = []
    for doc in reversed(commits):
        v = doc.get("version")
        if v is not None and v not in kept and len(kept) < retain:
            kept.append(v)
    return kept


def available_versions(io: FileIO) -> set[str]:
    """Version directories that still hold their manifest (garbage collection deletes the
    manifest first, so a half-deleted version is never offered for reading or rollback)."""
    return {name for name in io.listdir(layout.VERSIONS) if io.exists(layout.manifest_path(name))}


def collect_garbage(io: FileIO, retain: int, older_than: float | None = None) -> dict[str, list[str]]:
    """Delete versions beyond the newest ``retain`` published ones, version directories no
    commit names and staging directories once nothing in them changed for ``older_than``
    seconds (None or 0: regardless of age), leftover temporary files, and files of failed task
    attempts inside retained versions. Returns what was removed. Safe to kill at any point (a
    rerun finishes the job) and to run next to readers and writers, provided ``older_than`` is
    longer than any running job (a younger job's staging would be deleted under it)."""
    removed: dict[str, list[str]] = {"versions": [], "staging": [], "commits": [], "files": []}
    commits = history(io)
    kept = retained_versions(commits, retain)
    referenced = {d.get("version") for d in commits if d.get("version")}
    now = time.time()

    def old_enough(rel: str) -> bool:
        if not older_than:
            return True
        stamp = io.newest_mtime(rel)
        return stamp is not None and now - stamp > older_than

    names = io.listdir(layout.VERSIONS)
    # Retained versions are tidied after the others are removed, in that fixed order: version
    # names sort by time only to the second, so a listing order would vary between runs.
    for name in names:
        rel = layout.version_dir(name)
        if name in kept:
            continue
        # A version no commit names may belong to a job between its rename and its commit:
        # only remove it once it is old. Superseded versions go at once; the manifest first,
        # so a half-deleted version is never mistaken for an available one.
        if (name in referenced) or old_enough(rel):
            io.delete_file(layout.manifest_path(name))
            io.delete_tree(rel)
            removed["versions"].append(name)
    for name in names:
        if name in kept:
            removed["files"] += _tidy_version(io, name)
    for name in io.listdir(layout.STAGING):
        rel = layout.staging_dir(name)
        if old_enough(rel):
            io.delete_tree(rel)
            removed["staging"].append(name)
    for parent in ("", layout.COMMITS):
        for name in io.listdir(parent):
            rel = posixpath.join(parent, name) if parent else name
            if name.startswith(TMP_PREFIX) and old_enough(rel):
                io.delete_file(rel)
                removed["files"].append(rel)
    # "commits" stays empty: records are never deleted (see the module docstring).
    return removed


def _tidy_version(io: FileIO, version: str) -> list[str]:
    """Remove what a published version's manifest does not list: directories of failed,
    duplicate or zombie task attempts and temporary files (left when a driver died between
    publishing and tidying)."""
    try:
        manifest = load_manifest(io, version)
    except CorruptStoreError:
        return []
    listed = {p.path.split("/", 1)[0] for p in manifest.partitions} | {layout.MANIFEST}
    vdir = layout.version_dir(version)
    gone = []
    for name in io.listdir(vdir):
        rel = posixpath.join(vdir, name)
        if name not in listed:
            io.delete_tree(rel)
            gone.append(rel)
    return gone
