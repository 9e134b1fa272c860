"""Deterministic benchmark data: sorted unique keys of 16-32 bytes and fixed-size values.

Key ``i`` is 16 hex digits of ``2 * i`` followed by 0-16 pseudo-random bytes, so keys are
strictly increasing by construction and ``2 * i + 1`` gives keys that are absent but fall
inside the key range (a miss has to be decided by the index, not by range pruning).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_POOL = np.random.default_rng(20240611).integers(0x21, 0x7F, size=1 << 16, dtype=np.uint8).tobytes()
_VALUE_POOL_BYTES = 64 << 20


def _key(n: int, i: int) -> bytes:
    j = (i * 2654435761) & 0xFFFF
    return b"%016x" % n + _POOL[j:j + (i * 7919) % 17]


def make_keys(count: int) -> list[bytes]:
    return [_key(2 * i, i) for i in range(count)]


def absent_keys(count: int, universe: int, seed: int) -> list[bytes]:
    """``count`` keys that are not among ``make_keys(universe)`` (odd prefixes), random order."""
    rnd = random.Random(seed)
    return [_key(2 * i + 1, i) for i in (rnd.randrange(universe) for _ in range(count))]


def make_values(count: int, size: int, seed: int = 1) -> list[bytes]:
    """Random (incompressible) values, sliced from a shared random pool."""
    pool = np.random.default_rng(seed).bytes(min(_VALUE_POOL_BYTES, count * size + size))
    span = len(pool) - size
    step = size + 13
    return [pool[(i * step) % span:(i * step) % span + size] for i in range(count)]


def arrow_table(keys: list[bytes], values: list[bytes]) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.binary()), "value": pa.array(values, pa.binary())})


@dataclass
class Dataset:
    name: str
    keys: list[bytes]
    values: list[bytes]
    value_size: int

    _pairs: list[tuple[bytes, bytes]] | None = None

    @property
    def pairs(self) -> list[tuple[bytes, bytes]]:
        """The (key, value) tuples, made once (builds get the same prepared input)."""
        if self._pairs is None:
            self._pairs = list(zip(self.keys, self.values, strict=True))
        return self._pairs

    @property
    def count(self) -> int:
        return len(self.keys)

    @property
    def raw_bytes(self) -> int:
        return sum(map(len, self.keys)) + self.count * self.value_size

    def table(self) -> pa.Table:
        return arrow_table(self.keys, self.values)

    def sample_hits(self, count: int, seed: int) -> list[bytes]:
        rnd = random.Random(seed)
        return [self.keys[rnd.randrange(self.count)] for _ in range(count)]

    def sample_misses(self, count: int, seed: int) -> list[bytes]:
        return absent_keys(count, self.count, seed)


def dataset(count: int, value_size: int) -> Dataset:
    label = f"{count // 1_000_000}M" if count % 1_000_000 == 0 else f"{count // 1000}k"
    return Dataset(f"{label} keys x {value_size} B", make_keys(count), make_values(count, value_size),
                   value_size)
