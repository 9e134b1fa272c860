"""XXH3-64 (seed 0) of many keys at once, with numpy: the hash of the partition index.

The writer hashes every key it writes (docs/FORMAT.md §3.5). One ``xxhash.xxh3_64_intdigest``
call per key costs ~65 ns of interpreter time, plus ~35 ns to make the ``bytes`` object it
takes: about 0.1 s per million keys, a fifth of an import's own CPU. Here the keys of one
length are hashed together as columns of 64-bit words, following the XXH3 specification
(xxhash 0.8, "XXH3_len_9to16" and "XXH3_len_17to128"): a few dozen numpy operations per
length instead of two Python calls per key. Lengths outside 9-128 bytes return None, and the
caller hashes those keys one by one; the results are the very values ``xxhash`` gives (tests
compare them for every length).

numpy has no 64x64->128-bit multiply, so :func:`_mul128_fold64` builds it from four 32x32->64
products, as xxhash's portable C code does.
"""
from __future__ import annotations

import numpy as np

__all__ = ["hash_keys", "MIN_LEN", "MAX_LEN"]

#: key lengths hashed here (others: None, hashed by the caller one by one)
MIN_LEN, MAX_LEN = 9, 128
#: groups of one length smaller than this are left to the caller (numpy's per-call overhead)
_MIN_GROUP = 64
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


def _bswap64(x: np.ndarray) -> np.ndarray:
    return x.byteswap()


def _words(rows: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian 64-bit word at byte ``offset`` of each row of a (n, length) uint8
    matrix."""
    return np.ascontiguousarray(rows[:, offset:offset + 8]).view("<u8").reshape(-1)


def _mix16(rows: np.ndarray, offset: int, secret: int) -> np.ndarray:
    return _mul128_fold64(_words(rows, offset) ^ _secret64(secret),
                          _words(rows, offset + 8) ^ _secret64(secret + 8))


def _hash_rows(rows: np.ndarray) -> np.ndarray:
    """XXH3-64 of each row of a (n, length) uint8 matrix, 9 <= length <= 128."""
    if len(rows) > _CHUNK:
        out = np.empty(len(rows), np.uint64)
        for start in range(0, len(rows), _CHUNK):
            out[start:start + _CHUNK] = _hash_rows(rows[start:start + _CHUNK])
        return out
    length = rows.shape[1]
    if length <= 16:
        lo = _words(rows, 0) ^ (_secret64(24) ^ _secret64(32))
        hi = _words(rows, length - 8) ^ (_secret64(40) ^ _secret64(48))
        acc = np.uint64(length) + _bswap64(lo) + hi + _mul128_fold64(lo, hi)
        return _avalanche(acc)
    acc = np.full(len(rows), np.uint64(length * int(_PRIME64_1) % (1 << 64)), dtype=np.uint64)
    # (pairs of 16-byte reads from the front and the back, as many as the length needs)
    pairs = [(0, 0)] + [(16, 32)] * (length > 32) + [(32, 64)] * (length > 64) \
        + [(48, 96)] * (length > 96)
    for i, (front, secret) in enumerate(pairs):
        acc += _mix16(rows, front, secret)
        acc += _mix16(rows, length - 16 * (i + 1), secret + 16)
    return _avalanche(acc)


def hash_keys(offsets: np.ndarray, data: np.ndarray) -> np.ndarray | None:
    """XXH3-64 of each key of a binary column, or None when some key is shorter than 9 or
    longer than 128 bytes, or a length occurs too rarely to be worth a vectorised pass.

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
    start = int(offsets[0])
    if low == high:  # one length: the keys are the rows of a matrix, no copy
        rows = data[start:start + n * low].reshape(n, low)
        return _hash_rows(rows)
    out = np.empty(n, np.uint64)
    kinds, counts = np.unique(lengths, return_counts=True)
    if int(counts.min()) < _MIN_GROUP:
        return None
    for length in kinds.tolist():
        picked = np.flatnonzero(lengths == length)
        rows = data[offsets[picked][:, None] + np.arange(length)]
        out[picked] = _hash_rows(rows)
    return out
