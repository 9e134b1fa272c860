"""A commit record ``_commits/<seq>.commit``: which version is current after one publish.

Parsed and validated once, by :meth:`CommitRecord.decode`, into the frozen
:class:`CommitRecord` every other module uses; nothing reads the JSON by literal keys
(docs/FORMAT.md §1.3 has the fields).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptStoreError
from ..layout import is_version_name
from . import envelope
from .spec import DOCUMENT_VERSIONS
from .txn_record import TxnRef

KIND = "KVIOCOMMIT"
_CORE = ("seq", "version", "op", "job", "time")
_NOTES = ("mode", "partitions", "source", "damaged", "txn")
#: A record that belongs to a transaction is written as document version 2: kvio before
#: transactions would read its ``version`` as current even while the transaction is undecided
#: or aborted, so it must refuse such a record instead (docs/FORMAT.md §1.3).
TXN_DOCUMENT_VERSION = 2
_ACCEPT = DOCUMENT_VERSIONS | {TXN_DOCUMENT_VERSION}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """One commit record.

    Attributes:
        seq: the sequence number; equals the number in the file name.
        version: the version current after this commit; None for a delete.
        op: what published it: create, overwrite, append, merge, rollback, repair or delete.
        job: the id of the job that published it (None for a delete).
        time: seconds since the epoch when it was written (informational).
        mode: the write mode of the job (informational; None for a delete).
        partitions: the number of manifest entries (informational; None for a delete).
        source: rollback and repair: the version whose files were restored; compact: the
            version compacted (same pairs).
        damaged: repair: the sequence numbers of the damaged records it stepped past.
        txn: the transaction this record belongs to (None: an ordinary record). Such a record
            counts only once its transaction record says ``committed`` (:mod:`kvio.txn`).
        extra: fields this kvio does not know (kept so that nothing is lost on a round trip).
    """

    seq: int
    version: str | None
    op: str
    job: str | None
    time: float
    mode: str | None = None
    partitions: int | None = None
    source: str | None = None
    damaged: tuple[int, ...] = ()
    txn: TxnRef | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """True when the record names a version (False: the store was deleted)."""
        return self.version is not None

    @classmethod
    def create(cls, seq: int, version: str | None, op: str, job: str | None, time: float,
               note: Mapping[str, Any] | None = None) -> CommitRecord:
        """A new record; ``note`` holds the optional fields (mode, partitions, source, damaged).

        Args:
            seq: the sequence number to publish.
            version: the version it makes current (None: delete).
            op: the operation.
            job: the publishing job's id.
            time: seconds since the epoch.
            note: optional fields; names this module does not know go to ``extra``.

        Returns:
            The record.
        """
        note = dict(note or {})
        return cls(seq, version, op, job, time, mode=note.pop("mode", None),
                   partitions=note.pop("partitions", None), source=note.pop("source", None),
                   damaged=tuple(note.pop("damaged", ())), txn=note.pop("txn", None), extra=note)

    def to_json(self) -> dict[str, Any]:
        """The JSON body: the five core fields, plus each optional field that is set."""
        doc: dict[str, Any] = {**self.extra, "seq": self.seq, "version": self.version,
                               "op": self.op, "job": self.job, "time": self.time}
        for name in ("mode", "partitions", "source"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        if self.damaged:
            doc["damaged"] = list(self.damaged)
        if self.txn is not None:
            doc["txn"] = self.txn.to_json()
        return doc

    def encode(self) -> bytes:
        """The record file's bytes (a checksummed ``KVIOCOMMIT`` document)."""
        if self.txn is not None:
            return envelope.encode(KIND, self.to_json(), TXN_DOCUMENT_VERSION)
        return envelope.encode(KIND, self.to_json())

    @classmethod
    def decode(cls, blob: bytes, seq: int, *, store: str | None = None,
               file: str | None = None) -> CommitRecord:
        """Check and parse a record file.

        Args:
            blob: the file's bytes.
            seq: the sequence number of its file name; the body must say the same.
            store: the store URI, for error messages.
            file: the record's path, for error messages.

        Returns:
            The record.

        Raises:
            CorruptStoreError: a damaged document, a ``seq`` other than the name's, an invalid
                version name or a field of the wrong type.
            UnsupportedFormatError: written by a format version this kvio does not read.
        """
        doc = envelope.decode(KIND, blob, store=store, file=file, accept=_ACCEPT)
        # Readers order records by name but trust the body: a record copied or renamed to
        # another number must not pass (docs/FORMAT.md §1.3).
        if not _is_int(doc.get("seq")) or doc["seq"] != seq:
            raise CorruptStoreError(f"commit record says seq {doc.get('seq')!r}, its file name "
                                    f"says {seq}", store=store, file=file)
        version = doc.get("version")
        if version is not None and not is_version_name(version):
            raise CorruptStoreError(f"commit record names an invalid version {version!r}",
                                    store=store, file=file)
        problem = _field_problem(doc)
        if problem:
            raise CorruptStoreError(f"commit record is malformed: {problem}", store=store,
                                    file=file)
        txn = TxnRef.from_json(doc["txn"]) if "txn" in doc else None
        if ("txn" in doc) != (blob.split(b" ", 2)[1] == str(TXN_DOCUMENT_VERSION).encode()) \
                or ("txn" in doc and txn is None):
            raise CorruptStoreError("commit record is malformed: a txn field must be an object "
                                    "{id, record} and comes exactly with document version "
                                    f"{TXN_DOCUMENT_VERSION}", store=store, file=file)
        extra = {k: v for k, v in doc.items() if k not in _CORE and k not in _NOTES}
        return cls(seq, version, doc.get("op") or "", doc.get("job"), float(doc.get("time") or 0),
                   mode=doc.get("mode"), partitions=doc.get("partitions"),
                   source=doc.get("source"), damaged=tuple(doc.get("damaged") or ()), txn=txn,
                   extra=extra)


def _field_problem(doc: Mapping[str, Any]) -> str | None:
    """What is wrong with the optional and informational fields, or None."""
    checks = (("op", lambda v: isinstance(v, str)),
              ("job", lambda v: isinstance(v, str)),
              ("time", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
              ("mode", lambda v: isinstance(v, str)),
              ("partitions", lambda v: _is_int(v) and v >= 0),
              ("source", is_version_name),
              ("damaged", lambda v: isinstance(v, list) and all(_is_int(s) and s > 0 for s in v)))
    for name, ok in checks:
        value = doc.get(name)
        if value is not None and not ok(value):
            return f"field {name} has an invalid value {value!r:.80}"
    return None
