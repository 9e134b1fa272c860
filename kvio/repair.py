"""The way out of a damaged newest commit record (``kvio repair``).

When the newest record of ``_commits/`` is damaged, which version is current is unknown, and
readers, writers and gc stop (docs/COMMIT.md, "Damaged commit records"). A repair never
rewrites or deletes a record: like a rollback, it publishes a NEW record, seq+1 on top of the
damaged one, naming a new version whose files are links to (copies of) an intact version's.
The publish is the same no-clobber create as every other, and it first checks that the record
it steps past is still there and still damaged, so a concurrent writer or repair cannot be
fooled: of two repairs exactly one lands, and nothing lands on a store created anew.

A repair does not guess. When a complete version exists that no intact record names (most
likely what the damaged record published), it lists them and asks which version to restore.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import versions
from .committer import Job
from .config import Config
from .errors import KvioError, StoreNotFoundError
from .format.commit_record import CommitRecord
from .fs import FileIO
from .versions import DamagedRecord


@dataclass(frozen=True)
class Findings:
    """What a repair finds in a store's commit log.

    Attributes:
        damaged: every damaged record, oldest first.
        head_damaged: whether the newest record is one of them (then a repair is needed).
        last_intact: the newest intact record, None when there is none.
        unnamed: complete versions (their manifest is intact) that no intact record names,
            sorted by name (the time they were written).
    """

    damaged: tuple[DamagedRecord, ...]
    head_damaged: bool
    last_intact: CommitRecord | None
    unnamed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON object for reports (``kvio repair --json``)."""
        last = self.last_intact
        return {"damaged": [{"seq": d.seq, "file": d.file, "error": d.reason}
                            for d in self.damaged],
                "head_damaged": self.head_damaged,
                "last_intact": None if last is None else {"seq": last.seq, "version": last.version,
                                                          "op": last.op},
                "unnamed_versions": list(self.unnamed)}


def inspect(io: FileIO) -> Findings:
    """Read the commit log and the version directories.

    Args:
        io: the store.

    Returns:
        The findings.

    Raises:
        UnsupportedFormatError: a record of a format version this kvio does not read.
    """
    commits = versions.read_log(io)
    named = {r.version for r in commits.records if r.version}
    unnamed = []
    for name in sorted(versions.available_versions(io) - named):
        try:
            versions.load_manifest(io, name)
        except KvioError:
            continue  # a damaged or half-written version is nothing to restore
        unnamed.append(name)
    return Findings(commits.damaged, commits.head_damaged, commits.last_intact, tuple(unnamed))


def repair(uri: str, version: str | None = None, conf: dict[str, Any] | None = None,
           storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Step past a damaged newest commit record by publishing an intact version anew.

    Args:
        uri: the store.
        version: the version to make current; None for the one the newest intact record
            names (refused while complete versions exist that no intact record names: the
            damaged record may have published one of them, so the caller must choose).
        conf: setting overrides (``kvio.*``).
        storage_options: passed to fsspec.

    Returns:
        A report: ``damaged``, ``head_damaged``, ``last_intact``, ``unnamed_versions`` (see
        :class:`Findings`), ``restored`` (the version restored, None when nothing needed
        repair) and ``record`` (the new commit record as a JSON object, ``op="repair"``,
        ``source`` = the version restored, ``damaged`` = the records stepped past; None when
        nothing was published).

    Raises:
        KvioError: the caller must choose a version (the message lists them), or there is no
            intact version to restore (then ``kvio rm`` is the way out).
        StoreNotFoundError: ``version`` is not a complete version of the store (a subclass,
            VersionNotRetainedError, when the history names it but its files are gone).
        ConcurrentCommitError: another process repaired, deleted or re-created the store
            meanwhile (nothing published).
        CommitError: a file of the version to restore failed validation (nothing published).
    """
    cfg = Config(conf)
    io = FileIO.for_conf(uri, cfg, storage_options)
    if not io.exists():
        raise StoreNotFoundError("no store at this location", store=uri)
    found = inspect(io)
    report: dict[str, Any] = {"uri": uri, **found.to_json(), "restored": None, "record": None}
    if not found.head_damaged:
        return report
    present = versions.available_versions(io)
    target = version if version is not None else _default_target(io, found, present)
    if target not in present:
        named = [r for r in versions.read_log(io).records if r.version == target]
        if named:
            raise versions.not_retained_error(io, target, named[-1].seq)
        raise StoreNotFoundError(f"version {target} is not a version of this store", store=uri)
    manifest = versions.load_manifest(io, target)  # CorruptStoreError: nothing to restore there
    stepped_over = [d.seq for d in found.damaged
                    if found.last_intact is None or d.seq > found.last_intact.seq]
    job = Job.setup(uri, mode="overwrite", conf=conf, storage_options=storage_options, repair=True)
    try:
        carried = job.carry(io, target, manifest)
        record = job.commit([], num_tasks=0, extra_partitions=carried, count=manifest.count,
                            op="repair", note={"source": target, "damaged": stepped_over})
    except BaseException:
        if not job.committed:
            job.abort()
        raise
    assert record is not None
    return {**report, "restored": target, "record": record.to_json()}


def _default_target(io: FileIO, found: Findings, present: set[str]) -> str:
    """The version the newest intact record names, when choosing it loses nothing."""
    head = found.damaged[-1]
    last = found.last_intact
    if found.unnamed:
        options = [f"`kvio repair {io.uri} {name}`" for name in found.unnamed]
        if last is not None and last.version in present:
            options.append(f"`kvio repair {io.uri} {last.version}` (commit {last.seq}, the last "
                           "intact record)")
        raise KvioError(f"commit record {head.seq}, the newest, is damaged, and complete "
                        f"version(s) {', '.join(found.unnamed)} exist that no intact record "
                        "names (the damaged record may have published one); choose the version "
                        f"to make current: {'; '.join(options)}", store=io.uri, file=head.file)
    if last is None or last.version is None:
        what = "no intact commit record" if last is None else \
            f"the last intact record (commit {last.seq}) is a delete"
        raise KvioError(f"commit record {head.seq}, the newest, is damaged and {what} names a "
                        f"version to restore; `kvio rm {io.uri}` deletes the store",
                        store=io.uri, file=head.file)
    return last.version
