"""Database URLs: ``sqlite:///path.db`` and ``postgresql://user@host:port/db``, parsed once into
a typed :class:`DatabaseURL` (what kvio shows in messages never includes a password)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import InvalidArgumentError

__all__ = ["DatabaseURL", "is_database_url", "parse_database_url", "SQLITE", "POSTGRESQL"]

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_SCHEMES = {"sqlite": SQLITE, "postgresql": POSTGRESQL, "postgres": POSTGRESQL}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL.

    Attributes:
        kind: :data:`SQLITE` or :data:`POSTGRESQL`.
        target: what the ADBC driver is given: the database file of SQLite, the libpq URI of
            PostgreSQL.
        shown: the URL for messages, with any password replaced by ``***``.
    """
    kind: str
    target: str
    shown: str

    def __str__(self) -> str:
        return self.shown


def is_database_url(text: object) -> bool:
    """Whether ``text`` names a database (``sqlite://`` or ``postgresql://``) rather than a
    file or a store.

    Args:
        text: a command-line argument.

    Returns:
        True for a URL with a database scheme.
    """
    if not isinstance(text, str):
        return False
    match = _SCHEME.match(text)
    return match is not None and match[1].lower() in _SCHEMES


def _hide_password(parts) -> str:
    if parts.password is None:
        return urlunsplit(parts)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def parse_database_url(text: str) -> DatabaseURL:
    """Parse a database URL.

    Args:
        text: ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (or ``sqlite:///:memory:``),
            ``postgresql://user[:password]@host[:port]/db[?libpq options]``.

    Returns:
        The parsed URL.

    Raises:
        InvalidArgumentError: another scheme, a SQLite URL with a host, or a PostgreSQL URL
            without a database name.
    """
    match = _SCHEME.match(text) if isinstance(text, str) else None
    kind = _SCHEMES.get(match[1].lower()) if match else None
    if kind is None:
        raise InvalidArgumentError(f"not a database URL: {text!r} (expected sqlite:///path.db or "
                                   "postgresql://user@host:port/db)")
    parts = urlsplit(text)
    if kind == SQLITE:
        if parts.netloc:
            raise InvalidArgumentError(f"a SQLite URL names a file, not a host: {text!r} (write "
                                       "sqlite:///relative.db or sqlite:////absolute/path.db)")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidArgumentError(f"no database file in {text!r}")
        return DatabaseURL(SQLITE, path, text)
    if not parts.hostname and not parts.query:
        raise InvalidArgumentError(f"no host in the PostgreSQL URL {text!r}")
    if not parts.path.strip("/"):
        raise InvalidArgumentError(f"no database name in the PostgreSQL URL "
                                   f"{_hide_password(parts)!r}")
    target = urlunsplit(parts._replace(scheme="postgresql"))
    return DatabaseURL(POSTGRESQL, target, _hide_password(parts))
