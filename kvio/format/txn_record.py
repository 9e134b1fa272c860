"""A transaction record ``<first store>/_txns/<id>.txn``: the one decision of a transaction
across stores (docs/COMMIT.md, "Transactions across stores"; docs/FORMAT.md §1.5).

It is created once with the same no-clobber step as a commit record and never replaced: the
first process to create it decides whether every pending commit record that names it counts
(``committed``) or is void (``aborted``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CorruptStoreError
from . import envelope

KIND = "KVIOTXN"
COMMITTED = "committed"
ABORTED = "aborted"
STATUSES = (COMMITTED, ABORTED)


@dataclass(frozen=True, slots=True)
class TxnRef:
    """What a pending commit record says about its transaction (its ``txn`` field).

    Attributes:
        id: the transaction id (same form as a job id).
        record: the full URI of the transaction record.
    """

    id: str
    record: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "record": self.record}

    @classmethod
    def from_json(cls, doc: Any) -> TxnRef | None:
        """Parse a ``txn`` field; None when it is not a valid one."""
        if not isinstance(doc, dict):
            return None
        tid, record = doc.get("id"), doc.get("record")
        if not isinstance(tid, str) or not tid or not isinstance(record, str) or not record:
            return None
        return cls(tid, record)


@dataclass(frozen=True, slots=True)
class TxnStore:
    """One store of a transaction: the commit record the transaction published there.

    Attributes:
        uri: the store.
        seq: the sequence number of its pending commit record.
        version: the version that record names.
    """

    uri: str
    seq: int
    version: str


@dataclass(frozen=True, slots=True)
class TxnRecord:
    """The decision of one transaction.

    Attributes:
        id: the transaction id.
        status: ``committed`` or ``aborted``.
        stores: the stores and records of the transaction (empty when whoever aborted it did
            not know them: a writer or gc that found an undecided record).
        time: seconds since the epoch when it was decided (informational).
    """

    id: str
    status: str
    stores: tuple[TxnStore, ...]
    time: float

    @property
    def committed(self) -> bool:
        return self.status == COMMITTED

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "time": self.time,
                "stores": [{"uri": s.uri, "seq": s.seq, "version": s.version} for s in self.stores]}

    def encode(self) -> bytes:
        """The file's bytes (a checksummed ``KVIOTXN`` document)."""
        return envelope.encode(KIND, self.to_json())

    @classmethod
    def decode(cls, blob: bytes, *, store: str | None = None, file: str | None = None) -> TxnRecord:
        """Check and parse a transaction record.

        Args:
            blob: the file's bytes.
            store: the store holding it, for error messages.
            file: its path, for error messages.

        Returns:
            The record.

        Raises:
            CorruptStoreError: a damaged document, or a field missing or of the wrong type.
            UnsupportedFormatError: written by a format version this kvio does not read.
        """
        doc = envelope.decode(KIND, blob, store=store, file=file)
        tid, status, stamp = doc.get("id"), doc.get("status"), doc.get("time", 0)
        rows = doc.get("stores", [])
        ok = (isinstance(tid, str) and tid and status in STATUSES
              and isinstance(stamp, (int, float)) and not isinstance(stamp, bool)
              and isinstance(rows, list))
        stores: list[TxnStore] = []
        for row in rows if ok else ():
            if not (isinstance(row, dict) and isinstance(row.get("uri"), str)
                    and isinstance(row.get("seq"), int) and isinstance(row.get("version"), str)):
                ok = False
                break
            stores.append(TxnStore(row["uri"], row["seq"], row["version"]))
        if not ok:
            raise CorruptStoreError(f"transaction record is malformed: {str(doc)[:200]}",
                                    store=store, file=file)
        return cls(str(tid), str(status), tuple(stores), float(stamp))
