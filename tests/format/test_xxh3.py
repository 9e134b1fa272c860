"""kvio.format.xxh3: the vectorised XXH3-64 gives xxhash's very values, or None."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio.format import xxh3


def columns(keys: list[bytes], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, uint8 data) of the keys, the data starting ``pad`` bytes in."""
    array = pa.array([b"x" * pad] + keys, pa.large_binary()).slice(1)
    offsets = np.frombuffer(array.buffers()[1], "<i8")[1:len(keys) + 2]
    return offsets, np.frombuffer(array.buffers()[2], np.uint8)


def expected(keys: list[bytes]) -> np.ndarray:
    return np.array([xxhash.xxh3_64_intdigest(k) for k in keys], np.uint64)


def test_every_length_it_takes_matches_xxhash():
    for length in range(xxh3.MIN_LEN, xxh3.MAX_LEN + 1):
        keys = [os.urandom(length) for _ in range(200)]
        got = xxh3.hash_keys(*columns(keys))
        assert got is not None and np.array_equal(got, expected(keys)), length


def test_passes_of_many_rows_and_offsets_not_starting_at_zero():
    keys = [os.urandom(22) for _ in range(2 * xxh3._CHUNK + 17)]
    assert np.array_equal(xxh3.hash_keys(*columns(keys, pad=5)), expected(keys))


def test_lengths_of_every_class_in_one_column():
    keys = [os.urandom(n) for n in (9, 12, 16, 17, 22, 32, 33, 40, 64, 65, 90, 96, 97, 128)
            for _ in range(50)]
    keys.sort()
    assert np.array_equal(xxh3.hash_keys(*columns(keys)), expected(keys))
    keys = [os.urandom(n) for n in range(16, 33) for _ in range(5000)]  # several passes
    keys.sort()
    assert np.array_equal(xxh3.hash_keys(*columns(keys, pad=3)), expected(keys))


def test_lengths_it_does_not_take_give_none():
    for lengths in ([8] * 100, [129] * 100, [0] * 100, [22] * 100 + [5], [9, 200]):
        keys = [os.urandom(n) for n in lengths]
        assert xxh3.hash_keys(*columns(keys)) is None, lengths
    assert len(xxh3.hash_keys(*columns([]))) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=140), max_size=300))
def test_any_keys_hash_as_xxhash_or_are_left_to_the_caller(keys):
    got = xxh3.hash_keys(*columns(keys))
    if any(not xxh3.MIN_LEN <= len(k) <= xxh3.MAX_LEN for k in keys):
        assert got is None
    else:
        assert got is not None and np.array_equal(got, expected(keys))


@settings(max_examples=100, deadline=None)
@given(st.integers(xxh3.MIN_LEN, xxh3.MAX_LEN), st.integers(1, 150), st.randoms())
def test_one_length_any_count(length, count, rng):
    keys = [rng.randbytes(length) for _ in range(count)]
    assert np.array_equal(xxh3.hash_keys(*columns(keys)), expected(keys))
