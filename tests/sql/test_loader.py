"""kvio.sql.Loader: read-through to a table, batched, pooled, with errors that stay errors."""
from __future__ import annotations

import threading

import pytest

import kvio
from kvio.errors import DatabaseError, InvalidArgumentError
from kvio.sql import Loader, connect, export_store
from tests.serve.conftest import pkey, spawn  # noqa: F401  (spawn is a fixture)

PAIRS = {b"\x00k": b"\xff\x00", b"a": b"1", b"b": b"", b"\xff": b"last"}


@pytest.fixture
def table(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as writer:
        writer.put_many(sorted(PAIRS.items()))
    name = database.table()
    export_store(kvs, uri, database.url, name)
    return name


def test_get_and_get_many(database, table):
    with Loader(database.url, table, pool_size=2) as loader:
        for key, value in PAIRS.items():
            assert loader.get(key) == value
        assert loader.get(b"missing") is None
        keys = [b"a", b"missing", b"\x00k", b"a", b"\xff"]
        assert loader.get_many(keys) == [b"1", None, b"\xff\x00", b"1", b"last"]
        many = [b"%05d" % i for i in range(2500)] + [b"b"]  # more than one IN (...) query
        assert loader.get_many(many) == [None] * 2500 + [b""]
        assert loader("store-name", b"a") == b"1"  # the kvio serve loader interface


def test_text_columns(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "t")
    with kvs.create_store(uri) as writer:
        writer.put_many([(b"k", b"v"), ("é".encode(), "ü".encode())])
    name = database.table()
    export_store(kvs, uri, database.url, name, text=True)
    with Loader(database.url, name) as loader:
        assert loader.get("é".encode()) == "ü".encode()
        assert loader.get_many([b"k", b"\xff", "é".encode()]) == [b"v", None, "ü".encode()]


def test_errors_are_raised_never_none(database, table):
    with Loader(database.url, "no_such_table_" + table[-8:]) as loader:
        with pytest.raises(DatabaseError, match="no_such_table"):
            loader.get(b"a")
        with pytest.raises(DatabaseError):
            loader.get_many([b"a", b"b"])
    nulls = database.table()
    database.run(f'CREATE TABLE "{nulls}" ("key" TEXT PRIMARY KEY, "value" TEXT)')
    database.run(f'INSERT INTO "{nulls}" VALUES (\'k\', NULL)')
    with Loader(database.url, nulls) as loader:
        with pytest.raises(DatabaseError, match="NULL") as info:
            loader.get(b"k")
        assert info.value.key == b"k"
    with pytest.raises(InvalidArgumentError):
        Loader(database.url, 'x"; DROP TABLE y')
    with pytest.raises(InvalidArgumentError):
        Loader(database.url, table, pool_size=0)


def test_pool_exhaustion_times_out(database, table):
    loader = Loader(database.url, table, pool_size=1, timeout=0.3)
    held = loader._connection()
    held.__enter__()  # the one connection is busy
    try:
        with pytest.raises(DatabaseError, match="no free connection"):
            loader.get(b"a")
    finally:
        held.__exit__(None, None, None)
    assert loader.get(b"a") == b"1"
    loader.close()


def test_concurrent_lookups_share_the_pool(database, table):
    loader = Loader(database.url, table, pool_size=2, timeout=30)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                assert loader.get_many([b"a", b"\xff", b"nope"]) == [b"1", b"last", None]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert loader._idle.qsize() <= 2
    loader.close()


def test_statement_timeout_is_an_error(postgres, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    with kvs.create_store(uri) as writer:
        writer.put_many([(b"a", b"1")])
    name = postgres.table()
    export_store(kvs, uri, postgres.url, name)
    with connect(postgres.url) as blocker:  # holds a lock that makes every read wait
        blocker.execute(f'LOCK TABLE "{name}" IN ACCESS EXCLUSIVE MODE')
        with Loader(postgres.url, name, timeout=1) as loader:
            with pytest.raises(DatabaseError, match="statement timeout"):
                loader.get(b"a")
        blocker.rollback()


def test_through_kvio_serve(spawn, database, table, tmp_path):  # noqa: F811
    uri = str(tmp_path / "served")
    with kvio.KeyValueSystem().create_store(uri) as writer:
        writer.put_many([(b"a", b"from the store")])
    env = {"KVIO_SQL_LOADER_URL": database.url, "KVIO_SQL_LOADER_TABLE": table}
    srv = spawn([f"s={uri}"], "--read-through", "s=kvio.sql.loader:load", env=env)
    assert srv.get("/v1/stores/s/keys/a").body == b"from the store"
    loaded = srv.get("/v1/stores/s/keys/" + pkey(b"\x00k"))
    assert loaded.status == 200 and loaded.body == b"\xff\x00"
    assert loaded.headers["kvio-source"] == "read-through"
    assert srv.get("/v1/stores/s/keys/missing").status == 404
    batch = srv.post_json("/v1/stores/s/get", {"keys": ["a", "b", "missing", "\xff"]})
    assert batch.status == 200
    assert srv.get("/v1/stores/s/keys/" + pkey(b"\xff")).body == b"last"
    assert batch.json()["values"][:3] == ["from the store", "", None]


def test_environment_loader_needs_its_settings(monkeypatch):
    from kvio.errors import KvioError
    from kvio.sql import loader as module

    monkeypatch.delenv(module.ENV_URL, raising=False)
    monkeypatch.setattr(module, "_LOADERS", {})
    with pytest.raises(KvioError, match="KVIO_SQL_LOADER_URL"):
        module.load("s", b"k")
    monkeypatch.setenv(module.ENV_URL, "sqlite:///x.db")
    monkeypatch.setenv(module.ENV_POOL, "many")
    with pytest.raises(KvioError, match="KVIO_SQL_LOADER_POOL"):
        module.load("s", b"k")
