"""A pin ``_pins/<version>.<holder>.pin``: a reader's lease on one version (docs/COMMIT.md).

A checksummed ``KVIOPIN`` document (docs/FORMAT.md §2.1) whose body names the version, the
holder and when the lease expires. Garbage collection keeps a version while it has a pin that
has not expired; the holder rewrites the file to extend it and removes it when done.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CorruptStoreError
from ..layout import is_version_name
from . import envelope

KIND = "KVIOPIN"


@dataclass(frozen=True, slots=True)
class PinRecord:
    """The content of one pin file.

    Attributes:
        version: the version pinned; equals the version in the file name.
        holder: the holder id; equals the holder in the file name.
        expires: seconds since the epoch (the holder's clock) after which the pin protects
            nothing.
        ttl: the lease length in seconds the holder renews it by (informational).
        purpose: who holds it: ``reader`` (a StoreReader), ``spark`` (a Spark query plan),
            ``mrjob`` (an mrjob job), or another tool's name (informational).
        host: the holder's host name (informational).
        pid: the holder's process id (informational).
    """

    version: str
    holder: str
    expires: float
    ttl: float
    purpose: str
    host: str
    pid: int

    def to_json(self) -> dict[str, object]:
        """The JSON body."""
        return {"version": self.version, "holder": self.holder, "expires": self.expires,
                "ttl": self.ttl, "purpose": self.purpose, "host": self.host, "pid": self.pid}

    def encode(self) -> bytes:
        """The pin file's bytes."""
        return envelope.encode(KIND, self.to_json())

    @classmethod
    def decode(cls, blob: bytes, version: str, holder: str, *, store: str | None = None,
               file: str | None = None) -> PinRecord:
        """Check and parse a pin file.

        Args:
            blob: the file's bytes.
            version: the version its file name names; the body must say the same.
            holder: the holder its file name names; the body must say the same.
            store: the store URI, for error messages.
            file: the pin's path, for error messages.

        Returns:
            The pin.

        Raises:
            CorruptStoreError: a damaged document, or fields that disagree with the file name
                or have the wrong type.
            UnsupportedFormatError: written by a format version this kvio does not read.
        """
        doc = envelope.decode(KIND, blob, store=store, file=file)
        expires, ttl, pid = doc.get("expires"), doc.get("ttl", 0), doc.get("pid", 0)
        numbers_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                         for v in (expires, ttl, pid))
        if doc.get("version") != version or doc.get("holder") != holder \
                or not is_version_name(version) or not numbers_ok:
            raise CorruptStoreError(f"pin is malformed or names another version or holder than "
                                    f"its file name ({version}, {holder})", store=store, file=file)
        assert isinstance(expires, (int, float)) and isinstance(ttl, (int, float))
        return cls(version, holder, float(expires), float(ttl), str(doc.get("purpose") or ""),
                   str(doc.get("host") or ""), int(pid) if isinstance(pid, (int, float)) else 0)
