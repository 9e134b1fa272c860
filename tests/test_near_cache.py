"""The near cache (kvio/near_cache.py): an LRU bounded by bytes, keyed by (store, version, key),
with negative entries; and ``cached(reader, max_bytes)`` over real stores, live ones included."""
from __future__ import annotations

import threading
import time

import pytest

import kvio
from kvio.near_cache import ENTRY_OVERHEAD, MISS, NearCache, cached


def test_hit_miss_and_negative_entries():
    cache = NearCache(10_000)
    assert cache.get("s", "v1", b"k") is MISS
    cache.put("s", "v1", b"k", b"value")
    cache.put("s", "v1", b"absent", None)
    assert cache.get("s", "v1", b"k") == b"value"
    assert cache.get("s", "v1", b"absent") is None  # a negative entry is a hit
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 2)
    assert stats.bytes == 1 + 5 + 6 + 2 * ENTRY_OVERHEAD


def test_a_new_version_or_another_store_is_another_entry():
    cache = NearCache(10_000)
    cache.put("s", "v1", b"k", b"old")
    assert cache.get("s", "v2", b"k") is MISS
    assert cache.get("t", "v1", b"k") is MISS
    cache.put("s", "v2", b"k", b"new")
    assert cache.get("s", "v2", b"k") == b"new"
    assert cache.get("s", "v1", b"k") == b"old"


def test_bounded_by_bytes_least_recently_used_goes_first():
    entry = 10 + 1 + ENTRY_OVERHEAD  # 10-byte value, 1-byte key
    cache = NearCache(3 * entry)
    for k in (b"a", b"b", b"c"):
        cache.put("s", "v", k, b"x" * 10)
    assert cache.get("s", "v", b"a") == b"x" * 10  # a is now the most recent
    cache.put("s", "v", b"d", b"x" * 10)
    assert cache.get("s", "v", b"b") is MISS  # b was the least recently used
    assert cache.get("s", "v", b"a") is not MISS
    stats = cache.stats()
    assert (stats.evictions, stats.entries, stats.bytes) == (1, 3, 3 * entry)
    assert stats.bytes <= stats.max_bytes


def test_an_entry_larger_than_the_bound_is_not_kept_and_replacing_recounts():
    cache = NearCache(1000)
    cache.put("s", "v", b"big", b"x" * 1000)
    assert cache.get("s", "v", b"big") is MISS and cache.stats().bytes == 0
    cache.put("s", "v", b"k", b"12345")
    cache.put("s", "v", b"k", b"1")
    assert cache.stats().bytes == 1 + 1 + ENTRY_OVERHEAD and cache.stats().entries == 1


def test_negative_bound_is_refused():
    with pytest.raises(kvio.InvalidArgumentError):
        NearCache(-1)


def test_threads_keep_the_bound_and_the_counts():
    cache = NearCache(50 * (8 + 8 + ENTRY_OVERHEAD))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(2000):
                key = b"%08d" % ((i * 7 + n) % 300)
                if cache.get("s", "v", key) is MISS:
                    cache.put("s", "v", key, key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.hits + stats.misses == 8 * 2000
    assert stats.bytes <= stats.max_bytes and stats.entries <= 50
    assert stats.bytes == stats.entries * (8 + 8 + ENTRY_OVERHEAD)


def test_cached_reader_agrees_with_the_reader(tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s.kv")
    pairs = {b"k%03d" % i: b"v%d" % i for i in range(200)}
    with kvs.create_store(uri) as w:
        w.put_many(sorted(pairs.items()))
    with kvs.open_store(uri) as plain, cached(kvs.open_store(uri), 1 << 20) as store:
        for _ in range(2):
            for key in [*pairs, b"nope", b""]:
                assert store.get(key) == plain.get(key)
                assert (key in store) == (key in plain)
        assert store.get_many([b"k001", b"zz", b"k199"], b"-") == [b"v1", b"-", b"v199"]
        assert store[b"k005"] == b"v5"
        with pytest.raises(KeyError):
            store[b"nope"]
        assert len(store) == 200 and list(store.items(prefix=b"k19")) == \
            list(plain.items(prefix=b"k19"))
        stats = store.cache_stats()
        assert stats.entries == 203 and stats.hits >= 202 * 3  # 200 keys, b"nope", b"", b"zz"
        with pytest.raises(kvio.InvalidArgumentError):
            store.get(12)


def test_cached_live_store_serves_a_new_version(tmp_path):
    kvs = kvio.KeyValueSystem(conf={"kvio.follow.interval": "0.05", "kvio.gc.grace": "0s"})
    uri = str(tmp_path / "live.kv")
    with kvs.create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    with cached(kvs.open_store(uri, follow=True), 1 << 20) as store:
        assert store.get(b"a") == b"1" and store.get(b"c") is None
        assert store.get(b"a") == b"1" and store.get(b"c") is None  # from the cache
        first = store.version
        with kvs.create_store(uri, mode="overwrite") as w:
            w.put_many([(b"a", b"10"), (b"c", b"30")])
        deadline = time.monotonic() + 30
        while store.version == first:
            assert time.monotonic() < deadline, "the live store never swapped"
            time.sleep(0.02)
        # the new version is a new cache key: neither the old value nor the old absence is served
        assert store.get(b"a") == b"10" and store.get(b"c") == b"30"
        assert store.get_many([b"a", b"b", b"c"]) == [b"10", None, b"30"]


def test_open_store_cache_bytes(tmp_path):
    """``open_store(uri, cache_bytes=N)`` is ``cached(open_store(uri), N)``, with follow too."""
    kvs = kvio.KeyValueSystem(conf={"kvio.follow.interval": "0.05"})
    uri = str(tmp_path / "s.kv")
    with kvs.create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    with kvs.open_store(uri, cache_bytes=1 << 16) as store:
        assert store.get(b"a") == b"1" and store.get(b"a") == b"1" and store.get(b"x") is None
        stats = store.cache_stats()
        assert (stats.hits, stats.misses, stats.max_bytes) == (1, 2, 1 << 16)
        old = store.version
    with kvs.open_store(uri, follow=True, cache_bytes=1 << 16) as live:
        assert live.get(b"b") == b"2" and hasattr(live.reader, "snapshot")
    with kvs.open_store(uri, old, cache_bytes=1024) as pinned:
        assert pinned.version == old and pinned.get(b"b") == b"2"
    with pytest.raises(kvio.InvalidArgumentError, match="cache_bytes"):
        kvs.open_store(uri, cache_bytes=-1)
    with pytest.raises(kvio.InvalidArgumentError, match="follow=True"):
        kvs.open_store(uri, old, follow=True, cache_bytes=1024)
