"""The disk cache of remote partition pieces (kvio/read_cache.py): verified, bounded, LRU,
shared by processes, and it removes only its own files."""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from kvio import ConfigError
from kvio.read_cache import DiskCache, file_identity

HEADER = 32  # bytes of entry header


def _entry(cache: DiskCache, ident: str, offset: int, length: int) -> Path:
    name = cache.piece_name(ident, offset, length)
    return Path(cache.directory) / name[:2] / f"{name}.kvc"


def test_round_trip_and_identity(tmp_path):
    cache = DiskCache(str(tmp_path / "c"), 1 << 20)
    ident = file_identity("s3://b/s/_versions/v/t/p.kvp", 1000, "00ff00ff00ff00ff")
    assert cache.get(ident, 0, 5) is None
    cache.put(ident, 0, 5, b"hello")
    assert cache.get(ident, 0, 5) == b"hello"
    # Another file, offset, length or content identity is another entry.
    other = file_identity("s3://b/s/_versions/v/t/p.kvp", 1000, "00ff00ff00ff00fe")
    assert cache.get(other, 0, 5) is None and cache.get(ident, 1, 5) is None
    assert cache.get(ident, 0, 4) is None
    # A piece of the wrong length is not cached; nor is one larger than the bound.
    cache.put(ident, 10, 6, b"short")
    assert cache.get(ident, 10, 6) is None
    big = DiskCache(str(tmp_path / "small"), 100)
    big.put(ident, 0, 200, bytes(200))
    assert big.get(ident, 0, 200) is None and big.total_bytes() == 0
    stats = cache.stats()
    assert (stats.hits, stats.inserted_bytes) == (1, 5 + HEADER)
    with pytest.raises(ConfigError):
        DiskCache(str(tmp_path / "zero"), 0)


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "header", "swap"])
def test_damaged_entry_is_removed_never_served(tmp_path, damage):
    cache = DiskCache(str(tmp_path / "c"), 1 << 20)
    ident = file_identity("s3://b/f.kvp", 99, "0123456789abcdef")
    data = bytes(range(256)) * 4
    cache.put(ident, 64, len(data), data)
    cache.put(ident, 2048, len(data), data[::-1])
    path = _entry(cache, ident, 64, len(data))
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[HEADER + 500] ^= 0x10
    elif damage == "truncate":
        del blob[-1:]
    elif damage == "extend":
        blob += b"\0"
    elif damage == "header":
        blob[0] ^= 1
    else:  # another entry's bytes under this name (e.g. a file copied into the wrong place)
        blob = bytearray(_entry(cache, ident, 2048, len(data)).read_bytes())
    path.write_bytes(bytes(blob))
    assert cache.get(ident, 64, len(data)) is None
    assert not path.exists() and cache.stats().corrupt == 1
    cache.put(ident, 64, len(data), data)  # fetched again
    assert cache.get(ident, 64, len(data)) == data


def test_bounded_and_least_recently_used_first(tmp_path):
    bound = 40 * (1024 + HEADER)
    cache = DiskCache(str(tmp_path / "c"), bound)
    ident = file_identity("s3://b/f.kvp", 1 << 30, "0123456789abcdef")
    past = time.time() - 1000
    for i in range(30):
        cache.put(ident, i * 1024, 1024, bytes([i]) * 1024)
        os.utime(_entry(cache, ident, i * 1024, 1024), (past + i, past + i))
    assert cache.get(ident, 0, 1024) == bytes(1024)  # piece 0 is now the most recent
    for i in range(30, 41):  # the 41st entry passes the bound: down to 90% (36 entries)
        cache.put(ident, i * 1024, 1024, bytes([i]) * 1024)
    assert cache.stats().evictions == 5
    assert cache.get(ident, 0, 1024) == bytes(1024)  # used recently: kept
    assert [cache.get(ident, i * 1024, 1024) is None for i in range(1, 7)] == [True] * 5 + [False]
    for i in range(41, 200):
        cache.put(ident, i * 1024, 1024, bytes([i % 256]) * 1024)
        assert cache.total_bytes() <= bound
    assert cache.get(ident, 199 * 1024, 1024) == bytes([199]) * 1024
    # The running total in .bytes agrees with the directory after the last eviction's recount
    # plus the inserts since.
    assert int(Path(cache.directory, ".bytes").read_text()) == cache.total_bytes()


def test_removes_only_its_own_files(tmp_path):
    root = tmp_path / "c"
    cache = DiskCache(str(root), 10 * (100 + HEADER))
    ident = file_identity("s3://b/f.kvp", 1 << 20, "0123456789abcdef")
    cache.put(ident, 0, 100, bytes(100))
    sub = next(p for p in root.iterdir() if p.is_dir())
    foreign = [root / "notes.txt", sub / "mine.kvc", sub / ("a" * 32 + ".txt"), root / "zz" / "x"]
    (root / "zz").mkdir()
    for f in foreign:
        f.write_bytes(b"not the cache's")
        os.utime(f, (1, 1))  # the oldest files there
    fresh_tmp, old_tmp = sub / ".tmp-1-fresh", sub / ".tmp-1-old"
    fresh_tmp.write_bytes(b"x")
    old_tmp.write_bytes(b"x")
    os.utime(old_tmp, (1, 1))
    for i in range(1, 50):
        cache.put(ident, i * 100, 100, bytes(100))
    assert all(f.read_bytes() == b"not the cache's" for f in foreign)
    assert fresh_tmp.exists() and not old_tmp.exists()  # a killed writer's leftover, an hour old


def _hammer(directory: str, bound: int, worker: int, out) -> None:
    cache = DiskCache(directory, bound)
    ident = file_identity("s3://b/shared.kvp", 1 << 30, "0123456789abcdef")
    bad = 0
    for i in range(300):
        piece = bytes([(worker * 7 + i) % 256]) * 512
        offset = (i % 120) * 512  # the workers insert and read the same pieces
        got = cache.get(ident, offset, 512)
        if got is not None and got != bytes([got[0]]) * 512:
            bad += 1
        cache.put(ident, offset, 512, piece)
    out.put(bad)


def test_shared_by_processes(tmp_path):
    """Four processes insert and read the same pieces under a bound that forces evictions:
    no torn entry is ever served and the bound holds once they are done."""
    bound = 40 * (512 + HEADER)
    directory = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(directory, bound, w, out)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert [out.get(timeout=5) for _ in procs] == [0] * 4
    cache = DiskCache(directory, bound)
    assert 0 < cache.total_bytes() <= bound
    assert int(Path(directory, ".bytes").read_text()) == cache.total_bytes()
    ident = file_identity("s3://b/shared.kvp", 1 << 30, "0123456789abcdef")
    for offset in range(0, 120 * 512, 512):
        got = cache.get(ident, offset, 512)
        assert got is None or got == bytes([got[0]]) * 512
    assert cache.stats().corrupt == 0


def test_settings_are_checked():
    from kvio.config import Config
    conf = Config()
    assert (conf.block_size_remote, conf.read_ahead_bytes) == (3584, 8 << 20)
    assert (conf.read_cache_dir, conf.read_cache_bytes) == (None, 1 << 30)
    for bad in ({"kvio.block.size.remote": "10"}, {"kvio.read.cache.bytes": "0"},
                {"kvio.read.ahead.bytes": "0"}):
        with pytest.raises(ConfigError):
            Config(bad)


@pytest.mark.parametrize("where, conf, small", [("local", {}, False), ("memory", {}, True),
                                                ("memory", {"kvio.block.size.remote": "0"}, False)])
def test_remote_stores_are_written_with_small_blocks(tmp_path, where, conf, small):
    import uuid

    from kvio import KeyValueSystem
    uri = str(tmp_path / "s") if where == "local" else f"memory://kvio-rc-{uuid.uuid4().hex[:8]}/s"
    kvs = KeyValueSystem(conf=conf)
    with kvs.create_store(uri) as w:
        w.put_many((b"k%06d" % i, bytes(100)) for i in range(5000))
    with kvs.open_store(uri) as r:
        part = r.partition_readers()[0]
        sizes = part._block_raw[:-1]  # (the last block holds what is left)
        assert (int(sizes.max()) < 4096) if small else (int(sizes.min()) > 32 << 10)
        assert list(r.keys()) == [b"k%06d" % i for i in range(5000)]
        # the manifest records the block size the partitions were written with
        assert r.manifest.options["block_size"] == (3584 if small else 64 << 10)
    kvs.delete_store(uri)
