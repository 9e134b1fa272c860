"""kvio sync: the table follows the store, incrementally where the versions share partitions."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

import kvio
from kvio.cli import main
from kvio.errors import KvioError
from kvio.sql import connect, parse_table_name, read_state, sync_store

# No automatic compaction unless a test asks for it: the method each sync picks is asserted.
NO_COMPACT = {"kvio.compact.max.layers": "0", "kvio.compact.size.ratio": "0"}


def make(kvs, uri, pairs, mode="error"):
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(sorted(pairs.items()))


def current(kvs, uri):
    with kvs.open_store(uri) as reader:
        return dict(reader.items())


def update(kvs, uri, sets=(), deletes=()):
    with kvs.update_store(uri) as u:
        for k, v in sets:
            u.set(k, v)
        for k in deletes:
            u.delete(k)


def test_first_sync_creates_then_updates_and_deletes_apply(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"\x00": b"a", b"b": b"2", b"\xff": b"3", b"gone": b"x"})
    table = database.table()
    first = sync_store(kvs, uri, database.url, table)
    assert first.method == "create" and first.from_version is None
    assert database.rows(table) == current(kvs, uri)

    update(kvs, uri, sets=[(b"b", b"20"), (b"new", b"\x00\xff")], deletes=[b"gone", b"never"])
    second = sync_store(kvs, uri, database.url, table)
    assert (second.method, second.upserted, second.deleted) == ("incremental", 2, 2)
    assert second.from_version == first.to_version
    assert database.rows(table) == current(kvs, uri)
    assert b"gone" not in database.rows(table)

    again = sync_store(kvs, uri, database.url, table)
    assert again.method == "unchanged"
    with connect(database.url) as db:
        state = read_state(db, parse_table_name(table))
    with kvs.open_store(uri) as reader:
        assert state is not None
        assert (state.version, state.commit_seq) == (reader.version, reader.commit.seq)
    assert state.store == str(tmp_path / "s")


def test_several_updates_between_syncs(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"k%03d" % i: b"v" for i in range(100)})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    update(kvs, uri, sets=[(b"k001", b"one")], deletes=[b"k002"])
    update(kvs, uri, sets=[(b"k002", b"back")], deletes=[b"k001"])  # the same keys again
    update(kvs, uri, deletes=[b"k050"])
    result = sync_store(kvs, uri, database.url, table)
    assert result.method == "incremental"
    assert database.rows(table) == current(kvs, uri)
    assert b"k001" not in database.rows(table) and database.rows(table)[b"k002"] == b"back"


def test_overwrite_takes_the_full_path(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"a": b"1", b"b": b"2"})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    make(kvs, uri, {b"b": b"22", b"c": b"3"}, mode="overwrite")
    result = sync_store(kvs, uri, database.url, table)
    assert result.method == "replace"
    assert database.rows(table) == {b"b": b"22", b"c": b"3"}


def test_compaction_keeps_the_incremental_path(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"k%03d" % i: b"v" for i in range(50)})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    update(kvs, uri, sets=[(b"k001", b"x")], deletes=[b"k003"])
    kvs.compact(uri)
    result = sync_store(kvs, uri, database.url, table)
    assert (result.method, result.upserted, result.deleted) == ("incremental", 1, 1)
    assert database.rows(table) == current(kvs, uri)


def test_synced_version_no_longer_retained_replaces(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf={**NO_COMPACT, "kvio.versions.retain": "1",
                                    "kvio.gc.grace": "0s"})
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"a": b"1", b"b": b"2"})
    table = database.table()
    first = sync_store(kvs, uri, database.url, table)
    for i in range(3):
        update(kvs, uri, sets=[(b"c%d" % i, b"3")], deletes=[b"a"])
    kvs.gc(uri)
    assert not any(d["version"] == first.to_version and d["available"]
                   for d in kvs.versions(uri))
    result = sync_store(kvs, uri, database.url, table)
    assert result.method == "replace"
    assert database.rows(table) == current(kvs, uri)


def test_refuses_tables_it_did_not_create_and_other_stores(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    make(kvs, str(tmp_path / "s"), {b"a": b"1"})
    make(kvs, str(tmp_path / "t"), {b"a": b"1"})
    theirs = database.table()
    database.run(f'CREATE TABLE "{theirs}" ("key" TEXT PRIMARY KEY, "value" TEXT)')
    database.run(f'INSERT INTO "{theirs}" VALUES (\'keep\', \'me\')')
    with pytest.raises(KvioError, match="not created by kvio sync"):
        sync_store(kvs, str(tmp_path / "s"), database.url, theirs)
    assert database.rows(theirs) == {b"keep": b"me"}
    mine = database.table()
    sync_store(kvs, str(tmp_path / "s"), database.url, mine)
    with pytest.raises(KvioError, match="mirrors the store"):
        sync_store(kvs, str(tmp_path / "t"), database.url, mine)


def test_text_mirror(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {"é".encode(): b"1", b"b": b"2"})
    table = database.table()
    sync_store(kvs, uri, database.url, table, text=True)
    update(kvs, uri, sets=[(b"c", "ü".encode())], deletes=["é".encode()])
    assert sync_store(kvs, uri, database.url, table, text=True).method == "incremental"
    assert database.rows(table) == {b"b": b"2", b"c": "ü".encode()}
    update(kvs, uri, sets=[(b"d", b"\xff")])
    with pytest.raises(KvioError, match="not valid UTF-8"):
        sync_store(kvs, uri, database.url, table, text=True)
    assert database.rows(table) == {b"b": b"2", b"c": "ü".encode()}  # rolled back


def test_mirror_of_20k_keys_through_10_updates_of_1_percent(database, tmp_path):
    """The issue's proof at test scale (the benchmark runs 1M keys): with the default
    compaction policy, which compacts somewhere along the way."""
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    rng = random.Random(13)
    n = 20_000
    make(kvs, uri, {b"key-%08d" % i: rng.randbytes(rng.randrange(0, 40)) for i in range(n)})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    methods = []
    for round_ in range(10):
        keys = rng.sample(range(n + 1000), n // 100)
        sets = [(b"key-%08d" % k, b"r%d-" % round_ + rng.randbytes(8)) for k in keys[::2]]
        deletes = [b"key-%08d" % k for k in keys[1::2]]
        update(kvs, uri, sets=sets, deletes=deletes)
        methods.append(sync_store(kvs, uri, database.url, table).method)
    assert set(methods) == {"incremental"}, methods
    assert database.rows(table) == current(kvs, uri)
    assert any(d["op"] == "compact" for d in kvs.versions(uri)), "the policy never compacted"


def test_million_keys_mirror_follows_ten_updates_of_one_percent(postgres, tmp_path):
    """The issue's proof at its size: a mirror of 1,000,000 keys, then 10 updates of 1% each
    (sets of existing and new keys, deletes), each synced incrementally (the default policy
    compacts along the way); the table ends equal to the store, row for row."""
    rng = random.Random(13)
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    n = 1_000_000
    keys = pa.array([b"key-%08d" % i for i in range(n)], pa.binary())
    values = pa.array([b"v%d" % (i * 7919 % 100_003) for i in range(n)], pa.binary())
    with kvs.create_store(uri) as writer:
        writer.put_many(pa.table({"key": keys, "value": values}))
    table = postgres.table()
    assert sync_store(kvs, uri, postgres.url, table).upserted == n
    methods = []
    for round_ in range(10):
        changed = rng.sample(range(n + n // 10), n // 100)  # some keys are new
        update(kvs, uri, sets=[(b"key-%08d" % k, b"r%d" % round_) for k in changed[::2]],
               deletes=[b"key-%08d" % k for k in changed[1::2]])
        methods.append(sync_store(kvs, uri, postgres.url, table).method)
    assert set(methods) == {"incremental"}, methods
    with connect(postgres.url) as db:
        db.execute(f'SELECT "key", "value" FROM "{table}" ORDER BY "key"')
        mirrored = db.cursor.fetch_arrow_table()
    with kvs.open_store(uri) as reader:
        expected = reader.to_table()
    assert mirrored.num_rows == expected.num_rows > n - n // 10
    for column in ("key", "value"):
        assert mirrored.column(column).cast(pa.large_binary()).equals(
            expected.column(column).cast(pa.large_binary()))


def test_cli(database, tmp_path, capsys):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"a": b"1"})
    table = database.table()
    assert main(["sync", uri, database.url, "--table", table]) == 0
    assert "create, 1 upserted" in capsys.readouterr().out
    update(kvs, uri, sets=[(b"b", b"2")], deletes=[b"a"])
    assert main(["--json", "sync", uri, database.url, "--table", table]) == 0
    out = capsys.readouterr().out
    assert '"method": "incremental"' in out and '"deleted": 1' in out
    assert main(["sync", uri, database.url, "--table", table]) == 0
    assert "already holds version" in capsys.readouterr().out
    assert database.rows(table) == {b"b": b"2"}
    assert main(["sync", uri, str(tmp_path / "x.db"), "--table", table]) == 2


def test_rollback_takes_the_full_path(database, tmp_path):
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"a": b"1", b"b": b"2"})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    update(kvs, uri, sets=[(b"c", b"3")], deletes=[b"a"])
    assert sync_store(kvs, uri, database.url, table).method == "incremental"
    kvs.rollback(uri)  # back to {a, b}: not the synced version plus layers
    result = sync_store(kvs, uri, database.url, table)
    assert result.method == "replace"
    assert database.rows(table) == {b"a": b"1", b"b": b"2"} == current(kvs, uri)


def _layer_change(kvs, uri, base_version, path):
    """The change an incremental sync computes above ``base_version``, by the given path."""
    from kvio import versions
    from kvio.sql import sync as sync_module

    with kvs.open_store(uri) as reader:
        old = versions.load_manifest(reader.io, base_version)
        layers = sync_module.new_layers(old, reader.manifest)
        assert layers
        if path == "arrow":
            table = sync_module._layer_table(reader, layers)
            return list(zip(table.column("key").to_pylist(), table.column("value").to_pylist(),
                            strict=True))
        return list(sync_module._layer_rows(reader, layers))


def test_layer_merge_in_arrow_equals_the_streamed_merge(tmp_path):
    # Small layers are merged with Arrow kernels, large ones by the streamed k-way merge: both
    # give every key of the layers once, in key order, with the highest layer's value or None.
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    rng = random.Random(7)
    make(kvs, uri, {b"k%04d" % i: b"base" for i in range(0, 3000, 3)})
    with kvs.open_store(uri) as reader:
        base = reader.version
    for round_ in range(6):
        keys = rng.sample([b"k%04d" % i for i in range(3000)] + [b"", b"\x00", b"\xff\xff"], 400)
        update(kvs, uri, sets=[(k, b"r%d" % round_ + k) for k in keys[:250]],
               deletes=keys[250:])
    arrow = _layer_change(kvs, uri, base, "arrow")
    streamed = _layer_change(kvs, uri, base, "streamed")
    assert arrow == streamed
    assert [k for k, _ in arrow] == sorted({k for k, _ in arrow})
    assert any(v is None for _, v in arrow) and any(v is not None for _, v in arrow)


def test_large_layers_stream_through_the_k_way_merge(database, tmp_path, monkeypatch):
    from kvio.sql import sync as sync_module

    monkeypatch.setattr(sync_module, "IN_MEMORY_LAYER_BYTES", 0)  # every change streams
    monkeypatch.setattr(sync_module, "_CHUNK", 100)
    kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
    uri = str(tmp_path / "s")
    make(kvs, uri, {b"k%04d" % i: b"v" for i in range(1000)})
    table = database.table()
    sync_store(kvs, uri, database.url, table)
    update(kvs, uri, sets=[(b"k%04d" % i, b"new") for i in range(0, 1000, 3)],
           deletes=[b"k%04d" % i for i in range(1, 1000, 3)])
    update(kvs, uri, sets=[(b"k0001", b"again")], deletes=[b"k0000"])
    result = sync_store(kvs, uri, database.url, table)
    assert result.method == "incremental"
    assert database.rows(table) == current(kvs, uri)
