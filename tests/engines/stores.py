"""The stores every engine must read alike, each built by real writes (kvio's writer, merges,
Spark appends) while the same writes are applied to a plain dict: the model.

Each builder writes the store at ``uri`` (any fsspec URL the writer supports; sources of
merges go next to it) and returns the model. They are small (a few thousand pairs at most)
but have many partitions, overlapping key ranges and several blocks per partition, so every
routing and merging case of the read paths is exercised.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from kvio import KeyValueSystem

from .model import Model, apply

#: many small partitions of several blocks each
SMALL = {"kvio.partition.size.max": "16KB", "kvio.block.size": "512B"}
#: fewer, larger partitions for the stores of several layers (each map task of mrjob's local
#: runner is a process): still several partitions per layer, each of many blocks
LAYER = {"kvio.partition.size.max": "24KB", "kvio.block.size": "512B"}
#: everything in one partition file
ONE_PARTITION = {"kvio.partition.size.max": "512MB", "kvio.block.size": "1KB"}
HOSTILE_BYTES = b"\t\n\r\x00\xff\\ k"


def key(i: int, prefix: bytes = b"k") -> bytes:
    return prefix + b"%05d" % i


def write(uri: str, pairs: list[tuple[bytes, bytes]], conf: dict[str, str],
          mode: str = "error") -> Model:
    """Write sorted ``pairs`` as a new store (or version) with kvio's writer."""
    with KeyValueSystem(conf=conf).create_store(uri, mode=mode) as writer:
        writer.put_many(pairs)
    return dict(pairs)


def merge(uri: str, src_uri: str, pairs: list[tuple[bytes, bytes]], conf: dict[str, str],
          model: Model) -> Model:
    """Write ``pairs`` as the store ``src_uri``, merge it into ``uri`` (src wins) and apply
    the same to the model."""
    write(src_uri, pairs, conf)
    KeyValueSystem(conf=conf).merge_store(src_uri, uri)
    return apply(model, pairs)


# ---- the stores ---------------------------------------------------------------------------------
def build_single(uri: str, spark: Any = None) -> Model:
    """One partition file with many blocks."""
    pairs = [(key(i), b"single-%d" % (i % 7) + b"." * (i % 13)) for i in range(1500)]
    return write(uri, pairs, ONE_PARTITION)


def build_disjoint(uri: str, spark: Any = None) -> Model:
    """One write rolled over into many disjoint partitions."""
    pairs = [(key(i), b"d%d" % (i % 11) + b"-" * (i % 29)) for i in range(2000)]
    return write(uri, pairs, SMALL)


def build_merged(uri: str, spark: Any = None) -> Model:
    """A base store merged three times with sources whose key ranges overlap the base and each
    other; the last source also reaches below the base's lowest key. Values come from small
    sets so that counts per value change with every merge."""
    model = write(uri, [(key(i), b"a%d" % (i % 4)) for i in range(2000)], LAYER)
    first = [(key(i), b"b%d" % (i % 3)) for i in range(500, 1500, 2)]
    merge(uri, uri + "-src1", first, LAYER, model)
    second = [(key(i), b"c%d" % (i % 5)) for i in range(1000, 2600, 3)]
    merge(uri, uri + "-src2", second, LAYER, model)
    third = [(key(i, b"j"), b"d%d" % (i % 2)) for i in range(300)]
    third += [(key(i), b"d%d" % (i % 2)) for i in range(0, 2600, 7)]
    return merge(uri, uri + "-src3", third, LAYER, model)


def build_merged_disjoint(uri: str, spark: Any = None) -> Model:
    """A store merged with a source of a lower key range: no keys overlap, so the result is
    disjoint, but its partition list (priority order) is not in key order."""
    model = write(uri, [(key(i, b"m"), b"upper%d" % (i % 3)) for i in range(600)], SMALL)
    return merge(uri, uri + "-low", [(key(i, b"c"), b"lower%d" % (i % 3)) for i in range(600)],
                 SMALL, model)


def build_appended(uri: str, spark: Any) -> Model:
    """A store written by kvio, then appended to twice by Spark's ``kvstore`` writer with
    overlapping keys (appended values win). Round-robin Spark partitions make the files of one
    append overlap each other too (without sharing keys). Local paths only: Spark's workers
    write it."""
    model = write(uri, [(key(i), b"base%d" % (i % 4)) for i in range(1800)], LAYER)
    appends = [
        ([(key(i), b"app1-%d" % (i % 3)) for i in range(900, 2400, 2)], {}),
        ([(key(i), b"app2-%d" % (i % 2)) for i in range(0, 3000, 5)], LAYER),
    ]
    for pairs, options in appends:
        df = spark.createDataFrame(pairs, "key binary, value binary").repartition(3)
        df.write.format("kvstore").mode("append").options(**options).save(uri)
        apply(model, pairs)
    return model


def build_updated(uri: str, spark: Any = None) -> Model:
    """A store changed by three updates (delta versions with tombstones): deletes spread over
    the range, a deleted run of keys, deletes of keys that never existed (a tombstone file
    that hides nothing, above every key), and keys deleted by one update and set again by the
    next. Every engine must show deleted keys as absent and re-set keys as back."""
    model = write(uri, [(key(i), b"base%d" % (i % 4)) for i in range(1500)], LAYER)
    kvs = KeyValueSystem(conf=LAYER)
    with kvs.update_store(uri) as u:
        for i in range(0, 1500, 7):
            u.delete(key(i))
            model.pop(key(i), None)
        for i in range(600, 700):
            u.delete(key(i))
            model.pop(key(i), None)
        for i in range(1400, 1700, 3):
            u.set(key(i), b"upd1-%d" % (i % 3))
            model[key(i)] = b"upd1-%d" % (i % 3)
    with kvs.update_store(uri) as u:
        for i in range(0, 700, 14):
            u.set(key(i), b"back%d" % (i % 2))
            model[key(i)] = b"back%d" % (i % 2)
    with kvs.update_store(uri) as u:
        u.delete_many(key(i, b"z") for i in range(50))
    return model


def build_empty(uri: str, spark: Any = None) -> Model:
    return write(uri, [], SMALL)


def hostile_pairs(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """Sorted unique pairs full of record separators and escape bytes: \\t \\n \\r \\0 \\xff
    and backslashes in keys and values, empty values, the empty key, the 1-byte key \\xff,
    keys that are prefixes of others and long keys (up to 3 KB, longer than a block)."""
    rng = random.Random(seed)
    keys = {b"", b"\x00", b"\t", b"\n", b"\r", b"\r\n", b"\xff", b"\xff\xff", b"\\", b"\\x41",
            b"k\t", b"k\n", b"k\x00", bytes(range(256))}
    for length in (700, 1500, 3000):
        long_key = bytes(rng.choice(HOSTILE_BYTES) for _ in range(length))
        keys.update({long_key, long_key[:length // 2], long_key + b"\xff"})
    while len(keys) < n:
        keys.add(bytes(rng.choice(HOSTILE_BYTES) if rng.random() < 0.7 else rng.randrange(256)
                       for _ in range(rng.randint(1, 10))))
    pairs = []
    for i, k in enumerate(sorted(keys)):
        length = 0 if i % 9 == 0 else rng.randint(1, 30)
        value = bytes(rng.choice(HOSTILE_BYTES) for _ in range(length))
        pairs.append((k, value))
    return pairs


def build_hostile(uri: str, spark: Any = None) -> Model:
    return write(uri, hostile_pairs(1200, seed=9), SMALL)


Builder = Callable[[str, Any], Model]
#: kind -> (builder, needs Spark to build)
STORES: dict[str, tuple[Builder, bool]] = {
    "single": (build_single, False),
    "disjoint": (build_disjoint, False),
    "merged": (build_merged, False),
    "merged-disjoint": (build_merged_disjoint, False),
    "appended": (build_appended, True),
    "updated": (build_updated, False),
    "empty": (build_empty, False),
    "hostile": (build_hostile, False),
}
#: stores with keys whose superseded values are still in older partitions
OVERLAPPING = ["merged", "appended", "updated"]
