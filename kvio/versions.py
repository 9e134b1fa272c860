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
without racing a publish — once no reader pins it and it was superseded longer than
``kvio.gc.grace`` ago (:mod:`kvio.pins`).

A damaged record is never rewritten or removed either. When the newest one is damaged, which
version is current is unknown: readers, writers and gc stop with an error that says the way out
(``kvio repair`` publishes a new record on top of it, ``kvio rm`` deletes the store). Damaged
records older than an intact one are stepped over (:func:`read_log`).
"""
from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass
from typing import Any

from . import layout, pins, txn_state
from .errors import (
    CommitError,
    ConcurrentCommitError,
    CorruptStoreError,
    IncompleteStoreError,
    KvioError,
    NotAStoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
    VersionNotRetainedError,
)
from .format import marker
from .format.commit_record import CommitRecord
from .format.manifest import Manifest
from .fs import TMP_PREFIX, FileIO
from .txn_state import Standing

log = logging.getLogger(__name__)
MARKER_KIND = "KVIOSTORE"
_WAY_OUT = ("`kvio versions` lists the history, `kvio repair` makes an intact version current "
            "again, `kvio rm` deletes the store")


@dataclass(frozen=True)
class StoreState:
    """The newest commit record of a store.

    Records of a transaction that is aborted or undecided are void and stepped over
    (docs/COMMIT.md, "Transactions across stores").

    Attributes:
        seq: its sequence number; 0 when nothing was ever committed.
        commit: the record; None when nothing was ever committed.
        newest_seq: the highest record of the log, void or not (a writer publishes after it).
        undecided: the void records above ``seq`` whose transaction has no decision yet.
    """

    seq: int
    commit: CommitRecord | None
    newest_seq: int = -1
    undecided: tuple[CommitRecord, ...] = ()

    def __post_init__(self) -> None:
        if self.newest_seq < 0:
            object.__setattr__(self, "newest_seq", self.seq)

    @property
    def live(self) -> bool:
        """True when the newest record names a version (not a delete, not empty)."""
        return self.commit is not None and self.commit.live

    @property
    def version(self) -> str | None:
        """The current version, None for a deleted or never published store."""
        return self.commit.version if self.commit else None


@dataclass(frozen=True)
class DamagedRecord:
    """A commit record that cannot be read: its bytes are damaged or break the format rules.

    Attributes:
        seq: the sequence number of its file name.
        file: the record's path.
        error: what is wrong with it.
    """

    seq: int
    file: str
    error: CorruptStoreError

    @property
    def reason(self) -> str:
        """What is wrong, without the store and file (which the caller names)."""
        return _reason(self.error)


@dataclass(frozen=True)
class CommitLog:
    """Every commit record of a store, the intact and the damaged ones.

    Attributes:
        records: the intact records that count, oldest first (records of an aborted or
            undecided transaction are in ``void``).
        damaged: the damaged records, oldest first.
        newest_seq: the highest sequence number (0 when there is no record).
        void: the intact records of aborted or undecided transactions with their standing,
            oldest first.
    """

    records: tuple[CommitRecord, ...]
    damaged: tuple[DamagedRecord, ...]
    newest_seq: int
    void: tuple[tuple[CommitRecord, Standing], ...] = ()

    @property
    def head_damaged(self) -> bool:
        """True when the newest record that may count is damaged: the current version is
        unknown."""
        newest_counting = self.records[-1].seq if self.records else 0
        return bool(self.damaged) and self.damaged[-1].seq > newest_counting

    @property
    def undecided(self) -> tuple[CommitRecord, ...]:
        """The records whose transaction has no decision yet."""
        return tuple(r for r, how in self.void if how is Standing.UNDECIDED)

    @property
    def trailing_damaged(self) -> tuple[DamagedRecord, ...]:
        """The damaged records newer than every intact one (what a repair steps past)."""
        newest_intact = self.records[-1].seq if self.records else 0
        return tuple(d for d in self.damaged if d.seq > newest_intact)

    @property
    def last_intact(self) -> CommitRecord | None:
        """The newest intact record, None when there is none."""
        return self.records[-1] if self.records else None


def commit_seqs(io: FileIO) -> list[int]:
    seqs = (layout.parse_commit_name(name) for name in io.listdir(layout.COMMITS))
    return sorted(s for s in seqs if s is not None)


def read_commit(io: FileIO, seq: int) -> CommitRecord:
    """Read, check and parse commit record ``seq``.

    Args:
        io: the store.
        seq: the record's sequence number.

    Returns:
        The record.

    Raises:
        FileNotFoundError: there is no such record.
        CorruptStoreError: the record is damaged (see :meth:`CommitRecord.decode`).
    """
    rel = layout.commit_name(seq)
    return CommitRecord.decode(io.read_small(rel), seq, store=io.uri, file=io.path(rel))


def damaged_head_error(io: FileIO, damaged: DamagedRecord) -> CorruptStoreError:
    """The error every reader and writer raises when the newest record is damaged."""
    return CorruptStoreError(
        f"commit record {damaged.seq}, the newest, is damaged ({damaged.reason}): "
        f"which version is current is unknown. {_WAY_OUT}", store=io.uri, file=damaged.file)


def read_state(io: FileIO) -> StoreState:
    """The newest commit record that counts: records of aborted or undecided transactions are
    stepped over (usually only the newest record is read).

    Raises:
        CorruptStoreError: the newest record that may count is damaged (the message says the
            way out), or a transaction record is damaged.
    """
    seqs = commit_seqs(io)
    undecided: list[CommitRecord] = []
    for seq in reversed(seqs):
        try:
            record = read_commit(io, seq)
        except UnsupportedFormatError:
            raise
        except FileNotFoundError:
            # The store was deleted (and maybe re-created) under us: start again.
            return read_state(io) if commit_seqs(io) != seqs else StoreState(0, None)
        except CorruptStoreError as exc:
            rel = layout.commit_name(seq)
            raise damaged_head_error(io, DamagedRecord(seq, io.path(rel), exc)) from None
        how = txn_state.standing(io, record)
        if how is Standing.COUNTS:
            return StoreState(seq, record, seqs[-1], tuple(undecided))
        if how is Standing.UNDECIDED:
            undecided.append(record)
    return StoreState(0, None, seqs[-1] if seqs else 0, tuple(undecided))


def settle(io: FileIO) -> StoreState:
    """What a writer starts from: every undecided transaction record above the current one is
    decided first (aborted, unless its transaction commits first), so that no writer publishes
    on top of a record that could still start to count.

    Returns:
        The state once nothing above it is undecided.

    Raises:
        CorruptStoreError: as :func:`read_state`.
    """
    state = read_state(io)
    while state.undecided:
        for record in state.undecided:
            txn_state.abort_undecided(io, record)
        state = read_state(io)
    return state


def effective_at(io: FileIO, seq: int) -> CommitRecord | None:
    """The record that counts at or below ``seq`` (stepping over void ones); None when none.

    Raises:
        FileNotFoundError: record ``seq`` itself does not exist.
        CorruptStoreError: a record on the way is damaged.
    """
    record = read_commit(io, seq)
    while txn_state.standing(io, record) is not Standing.COUNTS:
        if record.seq <= 1:
            return None
        record = read_commit(io, record.seq - 1)
    return record


def read_log(io: FileIO) -> CommitLog:
    """Every commit record, intact or damaged. Records written by an unknown format version
    are not "damaged": reading them raises (a newer kvio wrote them).

    Raises:
        UnsupportedFormatError: a record of a format version this kvio does not read.
    """
    records: list[CommitRecord] = []
    damaged: list[DamagedRecord] = []
    void: list[tuple[CommitRecord, Standing]] = []
    seqs = commit_seqs(io)
    for seq in seqs:
        try:
            record = read_commit(io, seq)
        except UnsupportedFormatError:
            raise
        except CorruptStoreError as exc:
            damaged.append(DamagedRecord(seq, io.path(layout.commit_name(seq)), exc))
            continue
        how = txn_state.standing(io, record)
        if how is Standing.COUNTS:
            records.append(record)
        else:
            void.append((record, how))
    return CommitLog(tuple(records), tuple(damaged), seqs[-1] if seqs else 0, tuple(void))


def ensure_marker(io: FileIO) -> bool:
    """Create the store marker unless it exists.

    Returns:
        True when this call created it (False: it was there, or another job created it first).
    """
    if io.exists(layout.MARKER):
        return False
    try:
        io.write_new_file(layout.MARKER, marker.encode())
    except FileExistsError:
        return False  # another job created it first: same content
    return True


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
    # The marker may have appeared since it was looked for (a first writer racing this read).
    if names and all(n in (layout.COMMITS, layout.VERSIONS, layout.STAGING, layout.PINS, layout.MARKER)
                     or n.startswith(TMP_PREFIX) for n in names):
        raise IncompleteStoreError("store has no published version: its first writer died while "
                                   "creating it", store=io.uri)
    if names is not None:
        raise NotAStoreError("directory is not a kvio store (no _kvio_store marker)", store=io.uri)
    raise NotAStoreError("path is a file, not a kvio store directory", store=io.uri)


def not_retained_error(io: FileIO, version: str, seq: int) -> VersionNotRetainedError:
    """The error for a version the history names but whose files are gone."""
    return VersionNotRetainedError(
        f"version {version} (commit {seq}) is not retained: retention or gc removed its files "
        "(kvio.versions.retain keeps the newest versions)", store=io.uri,
        file=io.path(layout.version_dir(version)))


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
                   note: dict[str, Any] | None = None, *, expect_base: str | None | bool = False,
                   base_damaged: bool = False) -> CommitRecord:
    """Create commit record ``seq`` — the commit point — or raise ConcurrentCommitError.

    Args:
        io: the store.
        seq: the record to create; the job started from ``seq - 1``.
        version: the version it makes current (None: delete).
        op: the operation.
        job: the publishing job's id.
        note: optional record fields (mode, partitions, source, damaged).
        expect_base: the version the writer started from (None: no live version); checked
            against record seq-1 before the create so that a store deleted and re-created
            meanwhile (which restarts the sequence) is not mistaken for the one the job
            started from. False skips the check.
        base_damaged: the job started from a damaged record seq-1 (a repair): check instead
            that record seq-1 is still there and still damaged.

    Returns:
        The record published.

    Raises:
        ConcurrentCommitError: another process published or replaced the store (nothing
            published).
        CommitError: ``landed`` False: not published; None: the outcome cannot be known.
    """
    record = CommitRecord.create(seq, version, op, job, time.time(), note)
    if base_damaged:
        _check_still_damaged(io, seq - 1)
    elif expect_base is not False and seq > 1:
        try:
            # Records of aborted transactions at seq-1 and below are void: compare against
            # the one that counts.
            base = effective_at(io, seq - 1)
        except FileNotFoundError:
            raise ConcurrentCommitError(
                f"store was replaced by another process: commit {seq - 1}, which this job "
                "started from, is gone (store deleted and re-created?)", store=io.uri,
                landed=False) from None
        found = base.version if base is not None else None
        if found != expect_base:
            raise ConcurrentCommitError(
                f"store was updated by another process: commit {seq - 1} names version "
                f"{found}, this job started from {expect_base}", store=io.uri,
                landed=False)
    try:
        io.write_new_file(layout.commit_name(seq), record.encode())
    except FileExistsError:
        # A client that retried its own put after a lost answer gets "exists" for the record
        # it created itself (a create-only put on an object store): that is a success.
        try:
            mine = read_commit(io, seq)
        except (CorruptStoreError, FileNotFoundError):
            mine = None
        if mine is not None and job is not None and mine.job == job and mine.version == version:
            return mine
        found = _describe(io, seq)
        raise ConcurrentCommitError(
            f"store was updated by another process: expected to publish commit {seq} on top of "
            f"{seq - 1}, but commit {seq} already exists ({found})", store=io.uri,
            landed=False) from None
    except BaseException as exc:
        # The record may or may not have been created (e.g. the filesystem failed after the
        # rename): read it back instead of guessing.
        try:
            existing: CommitRecord | None = read_commit(io, seq)
        except FileNotFoundError:
            if io.is_local:  # os.link either made the name or did not
                raise CommitError(f"publishing commit {seq} failed: {exc}", store=io.uri,
                                  landed=False) from exc
            existing = None
        except Exception:  # noqa: BLE001 - cannot even read: unknown
            existing = None
        if existing is not None and existing.job == job and existing.version == version:
            log.warning("kvio: publishing commit %s of %s raised %r after it landed", seq,
                        io.uri, exc)
            return existing
        if existing is not None:
            raise ConcurrentCommitError(
                f"store was updated by another process: commit {seq} belongs to job "
                f"{existing.job}", store=io.uri, landed=False) from exc
        raise CommitError(f"publish outcome unknown: {exc}", store=io.uri, landed=None) from exc
    return record


def _describe(io: FileIO, seq: int) -> str:
    """A record for an error message (which may itself be damaged)."""
    try:
        found = read_commit(io, seq)
    except (CorruptStoreError, FileNotFoundError) as exc:
        return f"unreadable: {_reason(exc)}"
    return f"version {found.version}, op {found.op}, job {found.job}"


def _check_still_damaged(io: FileIO, seq: int) -> None:
    """A repair started from damaged record ``seq``: it must still be there and damaged (an
    intact record there means the store was deleted and created again meanwhile)."""
    try:
        read_commit(io, seq)
    except CorruptStoreError:
        return
    except FileNotFoundError:
        raise ConcurrentCommitError(f"store was replaced by another process: damaged commit "
                                    f"{seq}, which this repair started from, is gone",
                                    store=io.uri, landed=False) from None
    raise ConcurrentCommitError(f"store was replaced by another process: commit {seq} is intact "
                                "now, not the damaged record this repair started from",
                                store=io.uri, landed=False)


def _reason(exc: BaseException) -> str:
    """An error's own message, without the store/file parts KvioError appends."""
    if isinstance(exc, KvioError):
        return str(exc.args[0]).split(" | ")[0] if exc.args else type(exc).__name__
    return str(exc)


def history(io: FileIO) -> list[CommitRecord]:
    """The intact commit records, oldest first. Damaged records older than the newest intact
    one are left out (:func:`read_log` lists them).

    Raises:
        CorruptStoreError: the newest record is damaged (the message says the way out).
    """
    commits = read_log(io)
    if commits.head_damaged:
        raise damaged_head_error(io, commits.damaged[-1])
    return list(commits.records)


def retained_versions(commits: list[CommitRecord], retain: int) -> list[str]:
    """The newest ``retain`` distinct published versions, newest first."""
    kept: list[str] = []
    for record in reversed(commits):
        v = record.version
        if v is not None and v not in kept and len(kept) < retain:
            kept.append(v)
    return kept


def available_versions(io: FileIO) -> set[str]:
    """Version directories that still hold their manifest (garbage collection deletes the
    manifest first, so a half-deleted version is never offered for reading or rollback)."""
    return {name for name in io.listdir(layout.VERSIONS) if io.exists(layout.manifest_path(name))}


def superseded_times(io: FileIO, records: list[CommitRecord]) -> dict[str, float]:
    """When each published version stopped being current (the current one is left out).

    A version is superseded by the first record after the last one that names it; its time
    is the later of the record's own ``time`` (the writer's clock) and the record file's
    modification time (the filesystem's clock), so a writer's clock that runs behind does not
    shorten ``kvio.gc.grace``.

    Args:
        io: the store.
        records: the intact commit records, oldest first.

    Returns:
        Seconds since the epoch, by version.
    """
    last: dict[str, int] = {}
    for i, record in enumerate(records):
        if record.version is not None:
            last[record.version] = i
    out: dict[str, float] = {}
    for version, i in last.items():
        if i + 1 < len(records):
            nxt = records[i + 1]
            stamp = io.modified(layout.commit_name(nxt.seq))
            out[version] = max(nxt.time, stamp or 0.0)
    return out


def collect_garbage(io: FileIO, retain: int, older_than: float | None = None, *,
                    grace: float = 0.0) -> dict[str, list[str]]:
    """Delete versions beyond the newest ``retain`` published ones, version directories no
    commit names and staging directories once nothing in them changed for ``older_than``
    seconds (None or 0: regardless of age), leftover temporary files, files of failed task
    attempts inside retained versions and expired pins.

    A superseded version is kept while it has a pin that has not expired (a reader, a Spark
    query or an mrjob job uses it: :mod:`kvio.pins`) and for ``grace`` seconds after it was
    superseded (:func:`superseded_times`).

    Safe to kill at any point (a rerun finishes the job) and to run next to readers and
    writers, provided ``older_than`` is longer than any running job (a younger job's staging
    would be deleted under it). While a damaged commit record is in the log, version
    directories no intact record names are kept: the damaged record may name one of them.

    Args:
        io: the store.
        retain: how many of the newest published versions to keep.
        older_than: the age in seconds of staging and unnamed versions to remove.
        grace: keep versions superseded less than this many seconds ago (``kvio.gc.grace``).

    Returns:
        What was removed, by kind (``versions``, ``staging``, ``commits`` — always empty:
        records are never deleted —, ``files``, ``pins``: expired pin files; ``txns``: the
        transactions of undecided records older than ``older_than`` that gc decided aborted,
        whose versions then go like any version no counting record names), and what was kept
        beyond the retention: ``pinned`` (versions with an unexpired pin) and ``grace``
        (versions superseded less than ``grace`` ago).

    Raises:
        CorruptStoreError: the newest commit record is damaged (nothing is removed).
        KvioError: a file could not be removed; names its full path.
    """
    removed: dict[str, list[str]] = {"versions": [], "staging": [], "commits": [], "files": [],
                                     "pins": [], "pinned": [], "grace": [], "txns": []}
    commits = read_log(io)
    if commits.head_damaged:
        raise damaged_head_error(io, commits.damaged[-1])
    now = time.time()
    # A crashed transaction leaves records that never get a decision: once they are as old as
    # a crashed job's staging, decide them aborted (a transaction that commits first wins).
    stale = [r for r in commits.undecided
             if not older_than or now - max(r.time, io.modified(layout.commit_name(r.seq)) or 0.0)
             > older_than]
    for record in stale:
        txn_state.abort_undecided(io, record)
        removed["txns"].append(record.txn.id if record.txn else "")
    if stale:
        commits = read_log(io)
    kept = retained_versions(list(commits.records), retain)
    referenced = {r.version for r in commits.records if r.version}
    # Versions of undecided records may still start to count: never removed while undecided.
    waiting = {r.version for r in commits.undecided if r.version}
    superseded = superseded_times(io, list(commits.records)) if grace else {}
    # Pins are listed after the log and just before deleting: a reader pins the version it
    # read as current, and anything it can have read is inside the grace window.
    found_pins = pins.scan(io)
    pinned = pins.unexpired(found_pins, now)

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
        if name in kept or name in waiting:
            continue
        if name in pinned:
            removed["pinned"].append(name)
            continue
        if name in referenced and grace and now - superseded.get(name, now) < grace:
            removed["grace"].append(name)
            continue
        # A version no commit names may belong to a job between its rename and its commit:
        # only remove it once it is old. Superseded versions go at once; the manifest first,
        # so a half-deleted version is never mistaken for an available one.
        if name in referenced or old_enough(rel):
            if name not in referenced and commits.damaged:
                log.warning("kvio: gc keeps version %s of %s: no intact commit record names it, "
                            "and damaged record(s) %s may", name, io.uri,
                            [d.seq for d in commits.damaged])
                continue
            _remove(io, layout.manifest_path(name), f"version {name}", tree=False)
            _remove(io, rel, f"version {name}")
            removed["versions"].append(name)
    for name in names:
        if name in kept:
            removed["files"] += _tidy_version(io, name)
    for name in io.listdir(layout.STAGING):
        rel = layout.staging_dir(name)
        if old_enough(rel):
            _remove(io, rel, f"the staging of job {name}")
            removed["staging"].append(name)
    for parent in ("", layout.COMMITS, layout.PINS, layout.TXNS):
        for name in io.listdir(parent):
            rel = posixpath.join(parent, name) if parent else name
            if name.startswith(TMP_PREFIX) and old_enough(rel):
                _remove(io, rel, "a temporary file", tree=False)
                removed["files"].append(rel)
    for pin in found_pins:
        if pin.expires <= now:
            _remove(io, pin.rel, f"the expired pin of {pin.holder} on version {pin.version}",
                    tree=False)
            removed["pins"].append(pin.rel)
    # "commits" stays empty: records are never deleted (see the module docstring).
    return removed


def _remove(io: FileIO, rel: str, what: str, tree: bool = True) -> None:
    """Delete a file or tree; a failure names the full path of what could not be removed."""
    try:
        if tree:
            io.delete_tree(rel)
        else:
            io.delete_file(rel)
    except OSError as exc:
        inside = isinstance(exc.filename, str) and exc.filename.startswith(io.root)
        failed = exc.filename if inside else io.path(rel)
        raise KvioError(f"gc could not remove {what}: {exc.strerror or exc}", store=io.uri,
                        file=failed) from exc


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
            _remove(io, rel, f"an unlisted file of version {version}")
            gone.append(rel)
    return gone
