"""The independent model of a store (a plain dict of what was written, with merges and appends
applied the obvious way) and what each read path must return, computed from it."""
from __future__ import annotations

from collections import Counter

Model = dict[bytes, bytes]
Bounds = tuple[bytes | None, bytes | None, bytes | None]  # start, stop, prefix


def apply(model: Model, pairs) -> Model:
    """A merge or append of ``pairs`` over ``model``: the new values win on equal keys."""
    model.update(pairs)
    return model


def expected_range(model: Model, start: bytes | None = None, stop: bytes | None = None,
                   prefix: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """The pairs of ``[start, stop)`` that begin with ``prefix``, in unsigned byte order,
    by filtering every pair (no bound arithmetic to get wrong the same way as kvio)."""
    return [(k, model[k]) for k in sorted(model)
            if (start is None or k >= start) and (stop is None or k < stop)
            and (prefix is None or k.startswith(prefix))]


def value_counts(model: Model) -> list[tuple[bytes, bytes]]:
    """What a count-per-value job must publish: value -> decimal number of keys holding it."""
    return sorted((v, b"%d" % n) for v, n in Counter(model.values()).items())


# ---- probes derived from a model's keys -------------------------------------------------------
RANGE_NAMES = ["all", "middle", "from-absent-key", "head", "tail-past-last", "start-eq-stop",
               "inverted", "prefix-short", "prefix-long", "prefix-ff", "prefix-empty",
               "prefix-and-bounds"]


def _at(keys: list[bytes], fraction: float, default: bytes) -> bytes:
    return keys[int(fraction * (len(keys) - 1))] if keys else default


def range_bounds(name: str, model: Model) -> Bounds:
    """Concrete (start, stop, prefix) of the probe ``name`` for this model's keys: bounds on
    present keys, on absent keys between them, past the ends, and prefixes of real keys."""
    keys = sorted(model)
    a, b = _at(keys, 1 / 3, b"a"), _at(keys, 2 / 3, b"z")
    if name == "all":
        return None, None, None
    if name == "middle":
        return a, b, None
    if name == "from-absent-key":
        return a + b"\x00", None, None
    if name == "head":
        return None, _at(keys, 1 / 4, b"m"), None
    if name == "tail-past-last":
        return _at(keys, 0.9, b"y"), (keys[-1] + b"\x00") if keys else None, None
    if name == "start-eq-stop":
        return a, a, None
    if name == "inverted":
        return b, a, None
    if name == "prefix-short":
        return None, None, _at(keys, 0.5, b"k")[:2]
    if name == "prefix-long":
        return None, None, _at(keys, 0.4, b"k0001")[:5]
    if name == "prefix-ff":
        return None, None, b"\xff"
    if name == "prefix-empty":
        return None, None, b""
    if name == "prefix-and-bounds":
        return a, b, _at(keys, 0.5, b"k")[:1]
    raise ValueError(name)


def absent_keys(model: Model) -> list[bytes]:
    """Keys near present ones that the store must not have (between, before, after keys)."""
    keys = sorted(model)
    near = [b"", b"\x00", b"\xff", b"\xff" * 4, b"zzz", b"k"]
    for k in keys[:: max(1, len(keys) // 40)]:
        near += [k + b"\x00", k[:-1], k + b"\xff"]
    return sorted({k for k in near if k not in model})
