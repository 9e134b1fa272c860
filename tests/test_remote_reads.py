"""Remote lookups that cost little, against moto's S3 server on loopback (issue 14).

Requests and bytes are counted for real: botocore's event hooks on the reader's own s3fs client
see every HTTP request and every GetObject body (bench/suite/s3count.py). The counts are
deterministic for a given store, so the tests assert them exactly or against the targets:
a cold hit (index page and block never read) <= 2 requests and <= 8 KiB, a cold miss 1
request, a repeated hit 0 requests. Scans read ahead (a request per kvio.read.ahead.bytes).
"""
from __future__ import annotations

import random

import pytest

from bench.suite.s3count import S3Requests
from kvio import CorruptStoreError, KeyValueSystem
from kvio.read_cache import disk_cache, file_identity

N = 20_000


def key(i: int) -> bytes:
    return b"k%09d" % (2 * i)  # odd numbers are misses inside the key range


def value(i: int) -> bytes:
    return (b"%d-" % i) * 16  # ~100 bytes


@pytest.fixture(scope="module")
def s3_store(s3_server):
    """A store written to S3 by kvio with default settings, and the one with the old 64 KiB
    blocks (kvio.block.size.remote = 0)."""
    bucket = s3_server.new_bucket()
    so = s3_server.storage_options
    uris = {}
    for label, conf in (("default", {}), ("64k", {"kvio.block.size.remote": "0"})):
        uri = f"s3://{bucket}/{label}"
        with KeyValueSystem(conf=conf, storage_options=so).create_store(uri) as w:
            w.put_many((key(i), value(i)) for i in range(N))
        uris[label] = uri
    return s3_server, uris


def _open(server, uri, **conf):
    reader = KeyValueSystem(conf=conf, storage_options=server.storage_options).open_store(uri)
    return reader, S3Requests().attach(reader.io.fs)


def _cost(counter: S3Requests, fn) -> tuple[int, int, object]:
    r0, b0 = counter.snapshot()
    out = fn()
    r1, b1 = counter.snapshot()
    return r1 - r0, b1 - b0, out


def test_cold_hit_miss_and_repeated_hit_costs(s3_store):
    server, uris = s3_store
    reader, counter = _open(server, uris["default"])
    with reader:
        part = reader.partition_readers()[0]  # opens it: header, trailer, footer
        assert part.block_count > 100  # small blocks: a hit reads few bytes
        rnd = random.Random(5)
        seen_blocks: set[int] = set()
        hits = []
        for i in rnd.sample(range(N), 60):
            b = max(0, sum(1 for fk in part.first_keys if fk <= key(i)) - 1)
            if b not in seen_blocks:
                seen_blocks.add(b)
                hits.append(i)
        for i in hits:
            requests, nbytes, got = _cost(counter, lambda i=i: reader.get(key(i)))
            assert got == value(i)
            assert 1 <= requests <= 2, (i, requests)
            assert nbytes <= 8 * 1024, (i, nbytes)
        # Repeated hits: nothing leaves the process.
        requests, nbytes, got = _cost(counter, lambda: [reader.get(key(i)) for i in hits])
        assert got == [value(i) for i in hits] and (requests, nbytes) == (0, 0)
        # Cold misses: one index page each (4 KiB), never a block.
        misses = [i for i in rnd.sample(range(N - 1), 200)]
        costs = []
        for i in misses:
            requests, nbytes, got = _cost(counter, lambda i=i: reader.get(b"k%09d" % (2 * i + 1)))
            assert got is None
            costs.append((requests, nbytes))
        assert all(r <= 1 and nb <= 4096 for r, nb in costs)
        assert any(r == 1 for r, _ in costs)  # (pages already read cost nothing)
        # Outside every partition's key range: no request at all.
        assert _cost(counter, lambda: reader.get(b"zzz"))[:2] == (0, 0)


def test_first_cold_hit_on_fresh_pages_is_exactly_two_requests(s3_store):
    server, uris = s3_store
    reader, counter = _open(server, uris["default"], **{"kvio.read.cache.blocks": 1})
    with reader:
        reader.partition_readers()
        for i in (17, 9_000, 19_999):
            requests, nbytes, got = _cost(counter, lambda i=i: reader.get(key(i)))
            assert got == value(i) and requests == 2 and 4096 < nbytes <= 8192


def test_old_64k_blocks_still_read_and_cost_a_whole_block(s3_store):
    server, uris = s3_store
    reader, counter = _open(server, uris["64k"], **{"kvio.read.cache.blocks": 1})
    with reader:
        part = reader.partition_readers()[0]
        assert part.block_count < 60
        requests, nbytes, got = _cost(counter, lambda: reader.get(key(1234)))
        assert got == value(1234) and requests == 2 and nbytes > 32 * 1024
        assert list(reader.items()) == [(key(i), value(i)) for i in range(N)]


@pytest.mark.parametrize("read_ahead", ["8MB", "64KB", "1B"])
def test_scans_are_correct_and_read_ahead(s3_store, read_ahead):
    server, uris = s3_store
    reader, counter = _open(server, uris["default"], **{"kvio.read.ahead.bytes": read_ahead})
    with reader:
        part = reader.partition_readers()[0]
        data_bytes = part._index_offset  # (blocks end before the index)
        requests, _, items = _cost(counter, lambda: list(reader.items()))
        assert items == [(key(i), value(i)) for i in range(N)]
        if read_ahead == "8MB":
            assert requests == 1
        elif read_ahead == "64KB":
            assert data_bytes // (64 << 10) <= requests <= data_bytes // (60 << 10) + 2
        else:  # at least one block per request
            assert requests == part.block_count
        lo, hi = key(777) + b"\x00", key(15_001)
        assert list(reader.keys(start=lo, stop=hi)) == [key(i) for i in range(778, 15_001)]


def test_corrupt_block_on_s3_names_store_and_file(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    uri = f"s3://{bucket}/bad"
    cache_dir = tmp_path / "cache"
    kvs = KeyValueSystem(storage_options=s3_server.storage_options,
                         conf={"kvio.read.cache.dir": str(cache_dir)})
    with kvs.create_store(uri) as w:
        w.put_many((key(i), value(i)) for i in range(2000))
    with kvs.open_store(uri) as reader:
        part = reader.partition_readers()[0]
        path, victim = part.name, 1000
        b = max(i for i, fk in enumerate(part.first_keys) if fk <= key(victim))
        offset = part._block_offset[b] + part._block_stored[b] - 3  # inside the victim's block
        good_block = b
    fs = reader.io.fs
    data = bytearray(fs.cat_file(path))
    data[offset] ^= 0x40
    fs.pipe_file(path, bytes(data))
    for entry in cache_dir.glob("*/*.kvc"):
        entry.unlink()  # (the pieces read before the damage)
    with kvs.open_store(uri) as reader:
        assert reader.get(key(0)) == value(0)  # other blocks are fine
        with pytest.raises(CorruptStoreError) as err:
            reader.get(key(victim))
        # The damaged block was dropped from the disk cache; the good one read before stays.
        cache = disk_cache(str(cache_dir), 1 << 30)
        ident = file_identity(path, part.size, part.footer_checksum)
        block_piece = (int(part._block_offset[good_block]), int(part._block_stored[good_block]))
        assert cache.get(ident, *block_piece) is None
        assert cache.get(ident, int(part._block_offset[0]), int(part._block_stored[0])) is not None
        text = str(err.value)
        assert f"block {good_block} checksum mismatch" in text and uri in text
        assert path.rsplit("/", 1)[1] in text
        with pytest.raises(CorruptStoreError, match="checksum mismatch"):
            list(reader.items())


def test_disk_cache_serves_a_second_reader(s3_store, tmp_path):
    server, uris = s3_store
    conf = {"kvio.read.cache.dir": str(tmp_path / "cache"), "kvio.read.cache.bytes": "64MB"}
    cache = disk_cache(str(tmp_path / "cache"), 64 << 20)
    keys = random.Random(3).sample(range(N), 50)
    reader, counter = _open(server, uris["default"], **conf)
    with reader:
        reader.partition_readers()
        cold, _, got = _cost(counter, lambda: [reader.get(key(i)) for i in keys])
        assert got == [value(i) for i in keys] and cold >= len(keys)
    inserted = cache.stats().inserted_bytes
    assert inserted > 0 and cache.total_bytes() == inserted
    # A new reader (new process state: nothing in memory) reads every piece from disk.
    reader, counter = _open(server, uris["default"], **conf)
    with reader:
        hits_before = cache.stats().hits
        warm, _, got = _cost(counter, lambda: (reader.partition_readers(),
                                               [reader.get(key(i)) for i in keys]))
        assert got[1] == [value(i) for i in keys]
        assert counter.gets == 0 and warm == 0, "open_store's metadata reads come before attach"
        assert cache.stats().hits - hits_before >= len(keys) + 3  # header, trailer, footer


def test_corrupt_cache_entry_is_dropped_and_fetched_again(s3_store, tmp_path):
    server, uris = s3_store
    cache_dir = tmp_path / "cache"
    conf = {"kvio.read.cache.dir": str(cache_dir), "kvio.read.cache.bytes": "64MB"}
    cache = disk_cache(str(cache_dir), 64 << 20)
    reader, _ = _open(server, uris["default"], **conf)
    with reader:
        assert reader.get(key(4242)) == value(4242)
    entries = sorted(cache_dir.glob("*/*.kvc"), key=lambda p: p.stat().st_size)
    assert len(entries) == 5  # header, trailer, footer, one index page, one block
    for entry in entries:  # flip one byte in the middle of each entry
        blob = bytearray(entry.read_bytes())
        blob[len(blob) // 2] ^= 1
        entry.write_bytes(bytes(blob))
    corrupt_before = cache.stats().corrupt
    reader, counter = _open(server, uris["default"], **conf)
    with reader:
        requests, _, got = _cost(counter, lambda: reader.get(key(4242)))
    assert got == value(4242) and requests == 5  # every piece fetched again, none served
    assert cache.stats().corrupt - corrupt_before == 5
    # The re-fetched pieces replaced the damaged entries, which now verify again.
    assert all(cache._verified(e.read_bytes(), e.name[:-4], e.stat().st_size - 32) is not None
               for e in cache_dir.glob("*/*.kvc"))


def test_verify_of_a_remote_store_reads_ahead_and_finds_damage(s3_server):
    bucket = s3_server.new_bucket()
    uri = f"s3://{bucket}/v"
    kvs = KeyValueSystem(storage_options=s3_server.storage_options)
    with kvs.create_store(uri) as w:
        w.put_many((key(i), value(i)) for i in range(N))
    reader, counter = _open(s3_server, uri)
    with reader:
        part = reader.partition_readers()[0]
        requests, _, _ = _cost(counter, reader.verify)
        # A few requests per 8 MiB (padding pass, index pages, blocks), not one per block.
        assert part.block_count > 500 and requests <= 10
        path = part.name
        b = part.block_count // 2
        pad_at = int(part._block_offset[b]) + int(part._block_stored[b])  # padding after block b
    fs = reader.io.fs
    data = bytearray(fs.cat_file(path))
    if pad_at % 8 == 0:  # no padding after that block: damage the block's last byte instead
        pad_at -= 1
    data[pad_at] ^= 0x01
    fs.pipe_file(path, bytes(data))
    with kvs.open_store(uri) as reader, pytest.raises(CorruptStoreError) as err:
        reader.verify()
    assert path.rsplit("/", 1)[1] in str(err.value)


def test_a_follow_poll_costs_one_request(s3_store):
    """A live store's check for the next commit record is one GET (404 while nothing is new);
    every tenth check also reads its own record (docs/COMMIT.md, 1,000 readers polling)."""
    server, uris = s3_store
    kvs = KeyValueSystem(conf={"kvio.follow.interval": "1h"},
                         storage_options=server.storage_options)
    with kvs.open_store(uris["default"], follow=True) as live:
        counter = S3Requests().attach(live._io.fs)
        costs = [_cost(counter, live._tick)[0] for _ in range(20)]
    assert sorted(costs) == [1] * 18 + [2] * 2

