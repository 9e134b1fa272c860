"""Property tests: a store always reads exactly like a plain dict of what was written, whatever
the keys, values, block size, partition size and compression."""
from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem, PairTooLargeError, StoreNotFoundError

from .helpers import assert_matches_model

SPECIAL_KEYS = [b"", b"\x00", b"\x00\x00", b"\x00\xff", b"\x01", b"\x7f", b"\x80", b"\xfe",
                b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff", b"a", b"a\x00", b"a\xff", b"ab"]


# Many small stores: on a RAM-backed directory when there is one, since every partition file
# is fsynced at commit and the disk's sync latency would otherwise dominate the run time.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="kvio-prop-", dir=_SCRATCH)


def _repeat(seed: bytes, length: int) -> bytes:
    """A long byte string built from a short drawn seed (keeps hypothesis' choice count small)."""
    return (seed * (length // len(seed) + 1))[:length]


long_bytes = st.builds(_repeat, st.binary(min_size=1, max_size=8), st.integers(256, 3000))
short_keys = st.one_of(st.binary(max_size=6), st.sampled_from(SPECIAL_KEYS),
                       st.integers(0, (1 << 24) - 1).map(lambda i: i.to_bytes(3, "big")))


@st.composite
def key_sets(draw) -> list[bytes]:
    size = draw(st.one_of(st.integers(0, 12), st.integers(0, 250)))
    base = draw(st.lists(short_keys, min_size=size, max_size=size))
    keys = set(base)
    if base:  # keys that are prefixes of other keys
        for stem in draw(st.lists(st.sampled_from(base), max_size=8)):
            keys.add(stem + draw(st.binary(min_size=1, max_size=3)))
    for long_key in draw(st.lists(long_bytes, max_size=3)):
        keys.add(long_key)
        keys.add(long_key[:draw(st.integers(0, len(long_key)))])
    return sorted(keys)


values = st.one_of(st.just(b""), st.binary(max_size=40))
configs = st.fixed_dictionaries({
    "kvio.partition.size.max": st.one_of(st.integers(1 << 10, 8 << 10), st.integers(8 << 10, 64 << 10)),
    "kvio.block.size": st.integers(64, 4 << 10),
    "kvio.block.compression": st.sampled_from(["none", "zstd", "lz4"]),
    "kvio.index.load.factor": st.sampled_from([0.1, 0.7, 0.95]),
})
optional_bound = st.one_of(st.none(), short_keys)


def _probes(draw, keys: list[bytes]) -> list[bytes]:
    """Keys that are absent but close to present ones, plus random ones."""
    near = []
    for k in keys[:20]:
        near += [k + b"\x00", k[:-1], k + b"\xff"]
    return near + draw(st.lists(short_keys, max_size=10))


def _write(kvs: KeyValueSystem, uri: str, pairs: list[tuple[bytes, bytes]], how: str) -> None:
    with kvs.create_store(uri) as writer:
        if how == "put":
            for k, v in pairs:
                writer.put(k, v)
        elif how == "list":
            writer.put_many(pairs)
        else:
            half = len(pairs) // 2
            for part in (pairs[:half], pairs[half:]):
                writer.put_many(pa.table({"key": pa.array([k for k, _ in part], pa.binary()),
                                          "value": pa.array([v for _, v in part], pa.binary())}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), keys=key_sets(), conf=configs, how=st.sampled_from(["put", "list", "arrow"]))
def test_store_reads_like_a_dict(data, keys, conf, how):
    model = {k: data.draw(values) for k in keys}
    for k in data.draw(st.lists(st.sampled_from(keys), max_size=2)) if keys else []:
        model[k] = data.draw(long_bytes)  # a few values of a few KB
    pairs = sorted(model.items())
    ranges = data.draw(st.lists(st.tuples(optional_bound, optional_bound), max_size=4))
    ranges += [(k, None) for k in keys[:2]] + [(None, k) for k in keys[-2:]]
    prefixes = data.draw(st.lists(short_keys, max_size=3)) + [k[:2] for k in keys[:3]] + [b""]
    limit = conf["kvio.partition.size.max"]
    biggest = max((len(k) + len(v) for k, v in pairs), default=0)
    too_large = biggest > limit
    if not too_large:  # a pair within a few bytes of the limit may or may not fit with its overhead
        conf = {**conf, "kvio.partition.size.max": max(limit, biggest + 64)}
    kvs = KeyValueSystem(conf=conf)
    with scratch_dir() as tmp:
        uri = f"{tmp}/store"
        if too_large:
            event("pair larger than the partition limit")
            with pytest.raises(PairTooLargeError):
                _write(kvs, uri, pairs, how)
            with pytest.raises(StoreNotFoundError):  # a failed first write leaves nothing
                kvs.open_store(uri)
            return
        _write(kvs, uri, pairs, how)
        with kvs.open_store(uri) as reader:
            assert_matches_model(reader, model, absent=_probes(data.draw, keys), ranges=ranges,
                                 prefixes=prefixes)
            parts = reader.info()["partitions"]
            assert sum(p["count"] for p in parts) == len(model)
            event(f"partitions: {min(len(parts), 5)}{'+' if len(parts) >= 5 else ''}")
            n = len(keys)
            event(f"keys: {'0' if not n else '1-9' if n < 10 else '10-99' if n < 100 else '100+'}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), src_keys=key_sets(), dst_keys=key_sets(), conf=configs)
def test_merged_store_reads_like_a_dict_update(data, src_keys, dst_keys, conf):
    src = {k: b"s" + data.draw(st.binary(max_size=20)) for k in src_keys}
    dst = {k: b"d" + data.draw(st.binary(max_size=20)) for k in dst_keys}
    biggest = max((len(k) + 21 for k in src_keys + dst_keys), default=0)
    conf = {**conf, "kvio.partition.size.max": max(conf["kvio.partition.size.max"], biggest + 64)}
    kvs = KeyValueSystem(conf=conf)
    with scratch_dir() as tmp:
        _write(kvs, f"{tmp}/src", sorted(src.items()), "list")
        _write(kvs, f"{tmp}/dst", sorted(dst.items()), "list")
        kvs.merge_store(f"{tmp}/src", f"{tmp}/dst")
        ranges = data.draw(st.lists(st.tuples(optional_bound, optional_bound), max_size=3))
        with kvs.open_store(f"{tmp}/dst") as reader:
            assert_matches_model(reader, {**dst, **src}, absent=_probes(data.draw, src_keys + dst_keys),
                                 ranges=ranges, prefixes=[k[:1] for k in src_keys[:3]])
