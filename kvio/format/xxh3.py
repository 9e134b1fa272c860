"""XXH3-64 (seed 0) of many keys at once, with numpy: the hash of the partition index.

The writer hashes every key it writes (docs/FORMAT.md §3.5). One ``xxhash.xxh3_64_intdigest``
call per key costs ~65 ns of interpreter time, plus ~35 ns to make the ``bytes`` object it
takes: about 0.1 s per million keys, a fifth of an import's own CPU. Here keys are hashed
together as columns of 64-bit words, following the XXH3 specification (xxhash 0.8,
"XXH3_len_9to16" and "XXH3_len_17to128"): a few dozen numpy operations per pass instead of
two Python calls per key. The words are read at any byte through one strided view of the data
(a 64-bit word starting at every byte, no copy), so keys of different lengths share a pass
when XXH3 treats them alike (9-16, 17-32, 33-64, 65-96, 97-128 bytes). Lengths outside 9-128
bytes return None, and the caller hashes those keys one by one; the results are the very
values ``xxhash`` gives (tests compare them for every length).

numpy has no 64x64->128-bit multiply, so :func:`_mul128_fold64` builds it from four 32x32->64
products, as xxhash's portable C code does.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hash_keys", "MIN_LEN", "MAX_LEN"]

#: key lengths hashed here (others: None, hashed by the caller one by one)
MIN_LEN, MAX_LEN = 9, 128
#: rows hashed per pass: the temporaries of ~40 operations stay in the CPU's cache (measured
#: on 1M keys of 22 bytes: 34 ms in passes of 16-64k rows, 78 ms in one pass of all, against
#: ~95 ms for xxhash called per key, its bytes objects included)
_CHUNK = 32768

# XXH3's default secret, first 128 bytes (all that lengths up to 128 read), and its primes.
_SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364")
_PRIME64_1 = np.uint64(0x9E3779B185EBCA87)
_PRIME_MX1 = np.uint64(0x165667919E3779F9)
_M32 = np.uint64(0xFFFFFFFF)
_S32, _S37 = np.uint64(32), np.uint64(37)


def _secret64(offset: int) -> np.uint64:
    return np.uint64(int.from_bytes(_SECRET[offset:offset + 8], "little"))


def _mul128_fold64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a * b as 128 bits): low 64 bits XOR high 64 bits."""
    a_lo, a_hi = a & _M32, a >> _S32
    b_lo, b_hi = b & _M32, b >> _S32
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    cross = (lo_lo >> _S32) + (hi_lo & _M32) + a_lo * b_hi  # (cannot pass 2**64)
    upper = (hi_lo >> _S32) + (cross >> _S32) + a_hi * b_hi
    lower = (cross << _S32) | (lo_lo & _M32)
    return lower ^ upper


def _avalanche(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S37
    h *= _PRIME_MX1
    h ^= h >> _S32
    return h


def _fold_pair(words: np.ndarray, at: np.ndarray, secret: int) -> np.ndarray:
    """XXH3's mix of 16 input bytes: the words at byte positions ``at`` and ``at + 8``."""
    return _mul128_fold64(words[at] ^ _secret64(secret), words[at + 8] ^ _secret64(secret + 8))


def _hash_class(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """XXH3-64 of keys whose lengths fall in one of XXH3's classes (9-16, 17-32, 33-64,
    65-96 or 97-128 bytes), at byte ``starts`` of ``words`` (a view with a 64-bit word at
    every byte)."""
    n_len = lengths.astype(np.uint64)
    longest = int(lengths.max())
    if longest <= 16:
        lo = words[starts] ^ (_secret64(24) ^ _secret64(32))
        hi = words[starts + lengths - 8] ^ (_secret64(40) ^ _secret64(48))
        return _avalanche(n_len + lo.byteswap() + hi + _mul128_fold64(lo, hi))
    acc = n_len * _PRIME64_1
    ends = starts + lengths
    # pairs of 16-byte reads from the front and the back, as many as the class needs
    for i in range((longest - 1) // 32 + 1):
        acc += _fold_pair(words, starts + 16 * i, 32 * i)
        acc += _fold_pair(words, ends - 16 * (i + 1), 32 * i + 16)
    return _avalanche(acc)


#: XXH3's length classes from 9 to 128 bytes: (shortest, longest)
_CLASSES = ((9, 16), (17, 32), (33, 64), (65, 96), (97, 128))


def hash_keys(offsets: np.ndarray, data: np.ndarray) -> np.ndarray | None:
    """XXH3-64 of each key of a binary column, or None when some key is shorter than 9 or
    longer than 128 bytes.

    Args:
        offsets: int64 offsets of the n keys (n + 1 values, increasing, from any start).
        data: the column's data as a uint8 array (offsets index into it).

    Returns:
        The n hashes as uint64, equal to ``xxhash.xxh3_64_intdigest`` of each key, or None.
    """
    n = len(offsets) - 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    lengths = np.diff(offsets)
    low, high = int(lengths.min()), int(lengths.max())
    if low < MIN_LEN or high > MAX_LEN:
        return None
    data = np.ascontiguousarray(data, dtype=np.uint8)
    # The little-endian 64-bit word at every byte of the data (unaligned reads, no copy):
    # every word a key of 9 bytes or more needs lies inside it.
    words = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    out = np.empty(n, np.uint64)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        starts, part = offsets[lo:hi], lengths[lo:hi]
        first, last = int(part.min()), int(part.max())
        for shortest, longest in _CLASSES:
            if last < shortest or first > longest:
                continue
            if shortest <= first and last <= longest:  # (the usual case: one class)
                out[lo:hi] = _hash_class(words, starts, part)
                continue
            picked = np.flatnonzero((part >= shortest) & (part <= longest))
            if len(picked):
                out[lo + picked] = _hash_class(words, starts[picked], part[picked])
    return out
