"""What one ``kvio serve`` serves, as a small value that travels to worker processes.

With ``--workers N`` uvicorn starts fresh interpreters that import the app by name, so the
options go to them as JSON in an environment variable (:data:`ENV`), read by the app factory
when the worker starts (never at import time).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError, KvioError

#: environment variable carrying :class:`ServeOptions` to worker processes
ENV = "_KVIO_SERVE_OPTIONS"
#: store names: they appear in URL paths and metric labels, so keep them plain
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def parse_store_spec(text: str) -> tuple[str, str]:
    """Split a ``NAME=URI`` argument.

    Args:
        text: the argument as typed.

    Returns:
        ``(name, uri)``.

    Raises:
        InvalidArgumentError: no ``=``, an empty URI, or a name other than letters, digits,
            ``.``, ``_`` and ``-`` (starting with a letter or digit, at most 128 characters).
    """
    name, sep, uri = text.partition("=")
    if not sep or not uri:
        raise InvalidArgumentError(f"expected NAME=URI, got {text!r}")
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgumentError(f"store name {name!r} must be letters, digits, '.', '_' or '-' "
                                   "(starting with a letter or digit, at most 128 characters)")
    return name, uri


@dataclass(frozen=True)
class ServeOptions:
    """What a server serves and how.

    Attributes:
        stores: ``(name, uri)`` pairs in the order given.
        conf: setting overrides (``--conf``), as for a KeyValueSystem.
        token_file: the file holding the bearer token; None for no authentication.
        multiprocess_dir: Prometheus' multiprocess directory when several workers share the
            metrics; None for per-process metrics.
        read_through: ``(name, "module:function")`` pairs: the loader asked for keys a store
            does not hold (``--read-through``).
    """

    stores: tuple[tuple[str, str], ...]
    conf: dict[str, str] = field(default_factory=dict)
    token_file: str | None = None
    multiprocess_dir: str | None = None
    read_through: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        names = [name for name, _ in self.stores]
        if not names:
            raise InvalidArgumentError("serve at least one store (NAME=URI)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InvalidArgumentError(f"store name(s) given twice: {', '.join(repeated)}")
        loaded = [name for name, _ in self.read_through]
        unknown = sorted({n for n in loaded if n not in names})
        if unknown:
            raise InvalidArgumentError(f"--read-through for store(s) not served: "
                                       f"{', '.join(unknown)} (served: {', '.join(names)})")
        repeated = sorted({n for n in loaded if loaded.count(n) > 1})
        if repeated:
            raise InvalidArgumentError(f"two read-through loaders for {', '.join(repeated)}")

    def to_env(self) -> str:
        """The options as the JSON text of :data:`ENV`."""
        return json.dumps({"stores": [list(s) for s in self.stores], "conf": self.conf,
                           "token_file": self.token_file,
                           "multiprocess_dir": self.multiprocess_dir,
                           "read_through": [list(r) for r in self.read_through]})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeOptions:
        """The options a parent ``kvio serve`` left in the environment.

        Args:
            environ: the environment (default ``os.environ``).

        Returns:
            The options.

        Raises:
            KvioError: :data:`ENV` is missing or not what ``kvio serve`` writes.
        """
        text = (os.environ if environ is None else environ).get(ENV)
        if not text:
            raise KvioError(f"{ENV} is not set: start the server with `kvio serve NAME=URI ...`")
        try:
            data: dict[str, Any] = json.loads(text)
            return cls(stores=tuple((str(n), str(u)) for n, u in data["stores"]),
                       conf={str(k): str(v) for k, v in data["conf"].items()},
                       token_file=data["token_file"], multiprocess_dir=data["multiprocess_dir"],
                       read_through=tuple((str(n), str(s))
                                          for n, s in data.get("read_through", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise KvioError(f"{ENV} is not valid: {exc}") from None


def read_token(path: str) -> bytes:
    """The bearer token in ``path`` (surrounding whitespace, such as a final newline, removed).

    Args:
        path: the token file.

    Returns:
        The token's bytes.

    Raises:
        KvioError: the file cannot be read, is empty, or the token holds characters a bearer
            token cannot carry (whitespace, control characters, non-ASCII).
    """
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as exc:
        raise KvioError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise KvioError(f"the token file {path} is empty")
    if not re.fullmatch(rb"[\x21-\x7e]+", token):
        raise KvioError(f"the token in {path} must be printable ASCII without spaces "
                        "(it is sent in an Authorization header)")
    return token
