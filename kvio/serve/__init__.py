"""``kvio serve``: an HTTP lookup server over named stores, callable from any language.

The server is a Starlette app (:mod:`.app`) run by uvicorn (:mod:`.server`); both are optional
dependencies, installed with ``pip install 'kvio[serve]'``. Nothing here is imported by the
core: the CLI imports :mod:`.server` only when ``kvio serve`` runs, and :func:`require` turns a
missing package into a message naming the extra.

Modules: :mod:`.options` (what a server serves, passed to worker processes), :mod:`.stores`
(the named stores and one snapshot per request), :mod:`.codec` (bytes in URLs, JSON and Arrow),
:mod:`.errors` (JSON errors), :mod:`.metrics` (Prometheus), :mod:`.app` (the routes),
:mod:`.server` (uvicorn, workers, graceful shutdown). docs/SERVING.md is the API reference.
"""
from __future__ import annotations

import importlib.util

from ..errors import KvioError

#: what the server needs beyond the core, by import name
REQUIRED = ("starlette", "uvicorn", "prometheus_client")


def require() -> None:
    """Check that the server's packages are installed.

    Raises:
        KvioError: one is missing; the message names it and the extra to install.
    """
    missing = [name for name in REQUIRED if not _importable(name)]
    if missing:
        raise KvioError(f"kvio serve needs {', '.join(missing)}, which is not installed; "
                        "install the server extra: pip install 'kvio[serve]'")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken one
        return False
