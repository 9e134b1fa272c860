"""What every read-only store Mapping (StoreReader, LiveStore, the remote client) shares:
``[]`` and ``in`` answered by one ``get`` with a private sentinel, never by a probe plus a
second lookup."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

#: the ``default`` that tells "absent" apart from any value a store can hold
MISSING: Any = object()


class GetMapping(Mapping):
    """A Mapping whose ``__getitem__`` and ``__contains__`` are one ``get(key, MISSING)``."""

    @abstractmethod
    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` or ``default``. Subclasses must define it: Mapping's own
        ``get`` calls ``[]``, which here calls ``get``."""

    def __getitem__(self, key: Any) -> bytes:
        value = self.get(key, MISSING)
        if value is MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, MISSING) is not MISSING
