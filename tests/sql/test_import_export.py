"""kvio.sql import and export against real SQLite files and the real PostgreSQL server."""
from __future__ import annotations

import contextlib

import pyarrow as pa
import pytest

import kvio
from kvio.cli import main
from kvio.errors import KvioError, StoreExistsError
from kvio.sql import connect, export_store, import_table, parse_table_name

BINARY = {b"\x00": b"zero", b"\x00\x00": b"\xff\x00", b"a": b"", b"\xff": b"\x00\x01\x02",
          b"\xff\xff\xfe": b"v" * 3000, b"mid\tdle\n": b"line\r\n"}


def write_store(kvs, uri, pairs, mode="error"):
    with kvs.create_store(uri, mode=mode) as writer:
        writer.put_many(sorted(pairs.items()))


def store_dict(kvs, uri):
    with kvs.open_store(uri) as reader:
        return dict(reader.items())


def load_table(database, table, rows, kind="bytes"):
    """Create ``table`` (key, value) with rows, directly through ADBC (not through kvio)."""
    arrow = pa.string() if kind == "text" else pa.binary()
    data = pa.table({"key": pa.array([k for k, _ in rows], arrow),
                     "value": pa.array([v for _, v in rows], arrow)})
    with connect(database.url) as db:
        db.ingest(parse_table_name(table), data, mode="create")
        db.commit()


def test_round_trip_binary_keys(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    write_store(kvs, str(tmp_path / "a"), BINARY)
    table = database.table()
    result = export_store(kvs, str(tmp_path / "a"), database.url, table)
    assert (result.rows, result.created, result.mode) == (len(BINARY), True, "create")
    assert database.rows(table) == BINARY
    back = import_table(kvs, database.url, str(tmp_path / "b"), table=table)
    assert back.rows == len(BINARY)
    assert store_dict(kvs, str(tmp_path / "b")) == BINARY


def test_text_mode_round_trip_and_non_utf8_error(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    text = {"é".encode(): "ünïcode".encode(), b"plain": b"v", "日本".encode(): b""}
    write_store(kvs, str(tmp_path / "t"), text)
    table = database.table()
    export_store(kvs, str(tmp_path / "t"), database.url, table, text=True)
    with connect(database.url) as db:
        db.execute(f'SELECT "key", "value" FROM "{table}"')
        kinds = db.cursor.fetch_arrow_table().schema.types
    assert all(pa.types.is_string(k) for k in kinds)
    assert database.rows(table) == text
    import_table(kvs, database.url, str(tmp_path / "r"), table=table)
    assert store_dict(kvs, str(tmp_path / "r")) == text

    write_store(kvs, str(tmp_path / "bad"), {b"ok": b"fine", b"zz": b"\xff\xfe"})
    other = database.table()
    with pytest.raises(KvioError, match="not valid UTF-8") as info:
        export_store(kvs, str(tmp_path / "bad"), database.url, other, text=True)
    assert info.value.key == b"zz"
    with connect(database.url) as db:  # the transaction was rolled back: no table
        assert not db.table_exists(parse_table_name(other))


def test_create_on_existing_table_is_refused(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    write_store(kvs, str(tmp_path / "a"), {b"k": b"v"})
    table = database.table()
    load_table(database, table, [(b"other", b"row")])
    with pytest.raises(KvioError, match="already exists.*--mode replace"):
        export_store(kvs, str(tmp_path / "a"), database.url, table)
    assert database.rows(table) == {b"other": b"row"}


def test_replace_and_upsert(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "a")
    write_store(kvs, uri, {b"a": b"1", b"b": b"2"})
    table = database.table()
    export_store(kvs, uri, database.url, table)
    write_store(kvs, uri, {b"b": b"20", b"c": b"30"}, mode="overwrite")
    export_store(kvs, uri, database.url, table, mode="upsert")
    assert database.rows(table) == {b"a": b"1", b"b": b"20", b"c": b"30"}
    write_store(kvs, uri, {b"x": b"9"}, mode="overwrite")
    result = export_store(kvs, uri, database.url, table, mode="replace")
    assert not result.created
    assert database.rows(table) == {b"x": b"9"}


def test_upsert_into_a_table_without_key_column_is_refused(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    write_store(kvs, str(tmp_path / "a"), {b"k": b"v"})
    table = database.table()
    database.run(f'CREATE TABLE "{table}" (k TEXT, v TEXT)')
    with pytest.raises(KvioError, match=r"no column\(s\) \['key', 'value'\]"):
        export_store(kvs, str(tmp_path / "a"), database.url, table, mode="upsert")


@pytest.mark.parametrize("policy,expected", [("first", b"1"), ("last", b"3")])
def test_import_duplicates(database, tmp_path, policy, expected):
    kvs = kvio.KeyValueSystem()
    table = database.table()
    # no primary key: a query or a view can return a key twice
    load_table(database, table, [(b"k", b"1"), (b"j", b"2"), (b"k", b"3")])
    query = f'SELECT "key", "value" FROM "{table}" ORDER BY "value"'
    with pytest.raises(KvioError, match="--duplicates first or --duplicates last"):
        import_table(kvs, database.url, str(tmp_path / "err"), query=query)
    assert not kvs.exists(str(tmp_path / "err"))
    result = import_table(kvs, database.url, str(tmp_path / policy), query=query,
                          duplicates=policy)
    assert result.dropped == 1
    assert store_dict(kvs, str(tmp_path / policy)) == {b"j": b"2", b"k": expected}


def test_import_type_errors_name_column_and_cast(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    table = database.table()
    database.run(f'CREATE TABLE "{table}" (id INTEGER, "value" TEXT)')
    database.run(f'INSERT INTO "{table}" VALUES (1, \'x\')')
    with pytest.raises(KvioError, match=r"column 'id' has type int.*CAST\(id AS TEXT\)"):
        import_table(kvs, database.url, str(tmp_path / "s"), table=table, key_col="id")
    with pytest.raises(KvioError, match="no column 'key'"):
        import_table(kvs, database.url, str(tmp_path / "s"),
                     query=f'SELECT id, "value" FROM "{table}"')
    import_table(kvs, database.url, str(tmp_path / "s"),
                 query=f'SELECT CAST(id AS TEXT) AS "key", "value" FROM "{table}"')
    assert store_dict(kvs, str(tmp_path / "s")) == {b"1": b"x"}


def test_import_nulls_are_refused(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    table = database.table()
    database.run(f'CREATE TABLE "{table}" ("key" TEXT, "value" TEXT)')
    database.run(f'INSERT INTO "{table}" VALUES (\'a\', \'1\'), (\'b\', NULL)')
    with pytest.raises(KvioError, match="null"):
        import_table(kvs, database.url, str(tmp_path / "s"), table=table)
    assert not kvs.exists(str(tmp_path / "s"))


def test_import_into_existing_store_needs_overwrite(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    write_store(kvs, uri, {b"old": b"1"})
    table = database.table()
    load_table(database, table, [(b"new", b"2")])
    with pytest.raises(StoreExistsError):
        import_table(kvs, database.url, uri, table=table)
    import_table(kvs, database.url, uri, table=table, mode="overwrite")
    assert store_dict(kvs, uri) == {b"new": b"2"}


def test_import_many_batches_unsorted(database, tmp_path):
    """More rows than one driver batch, in reverse order: kvio sorts them (spilling with a
    small sort memory)."""
    kvs = kvio.KeyValueSystem(conf={"kvio.sort.memory": "1MB"})
    n = 150_000
    rows = [(f"{i:08d}".encode(), f"v{i}".encode()) for i in reversed(range(n))]
    table = database.table()
    load_table(database, table, rows)
    result = import_table(kvs, database.url, str(tmp_path / "s"), table=table)
    assert result.rows == n and not result.input_sorted
    with kvs.open_store(str(tmp_path / "s")) as reader:
        assert len(reader) == n
        assert reader[b"00000000"] == b"v0" and reader[b"00149999"] == b"v149999"
        keys = [b for batch in reader.batches() for b in batch.column(0).to_pylist()]
    assert keys == sorted(keys) and len(keys) == n


def test_cli(database, tmp_path, capsys):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    write_store(kvs, uri, BINARY)
    table = database.table()
    assert main(["export", uri, database.url, "--table", table]) == 0
    assert "(created it)" in capsys.readouterr().out
    assert main(["export", uri, database.url, "--table", table]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", uri, database.url, "--table", table, "--mode", "upsert"]) == 0
    assert main(["--json", "import", database.url, str(tmp_path / "b"), "--table", table]) == 0
    assert '"count": 6' in capsys.readouterr().out
    assert store_dict(kvs, str(tmp_path / "b")) == BINARY
    assert main(["import", database.url, str(tmp_path / "c")]) == 2
    assert "--table T or --query SQL" in capsys.readouterr().err
    assert main(["export", uri, str(tmp_path / "x.tsv"), "--table", table]) == 2
    assert main(["import", database.url, str(tmp_path / "c"), "--table", 'x"; drop']) == 1
    assert "not a valid SQL identifier" in capsys.readouterr().err


def test_failure_mid_stream_stops_the_fetch_thread(database, tmp_path):
    """A duplicate in the first of many driver batches fails the import while the fetch
    thread is still reading: the thread is stopped before the connection closes."""
    import threading

    kvs = kvio.KeyValueSystem()
    rows = [(b"dup", b"1"), (b"dup", b"2")] + [(b"k%07d" % i, b"v") for i in range(200_000)]
    table = database.table()
    load_table(database, table, rows)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(KvioError, match="--duplicates first or --duplicates last"):
        import_table(kvs, database.url, str(tmp_path / "s"), table=table)
    assert not kvs.exists(str(tmp_path / "s"))
    assert "kvio-sql-fetch" not in {t.name for t in threading.enumerate()} - before


def test_text_and_bytes_tables_are_not_mixed(database, tmp_path):
    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    write_store(kvs, uri, {b"a": b"1"})
    texts, blobs = database.table(), database.table()
    export_store(kvs, uri, database.url, texts, text=True)
    export_store(kvs, uri, database.url, blobs)
    with pytest.raises(KvioError, match="holds text, not bytes: write it with --text"):
        export_store(kvs, uri, database.url, texts, mode="upsert")
    with pytest.raises(KvioError, match="holds bytes, not text: write it without --text"):
        export_store(kvs, uri, database.url, blobs, mode="replace", text=True)
    export_store(kvs, uri, database.url, texts, mode="replace", text=True)
    assert database.rows(texts) == database.rows(blobs) == {b"a": b"1"}


def test_import_streams_postgresql_in_small_batches(postgres, tmp_path, monkeypatch):
    """The driver is asked for batches of db.PG_BATCH_BYTES: a table several batches long
    arrives whole, in order, and the sorted path needs no sort."""
    from kvio.sql import db as db_module

    monkeypatch.setattr(db_module, "PG_BATCH_BYTES", 64 << 10)
    n = 20_000
    rows = [(b"k%08d" % i, b"v" * 40) for i in range(n)]
    table = postgres.table()
    load_table(postgres, table, rows)
    with connect(postgres.url) as db:
        reader = db.batches(f'SELECT "key", "value" FROM "{table}"')
        sizes = [batch.num_rows for batch in reader]
    assert len(sizes) > 5 and sum(sizes) == n
    kvs = kvio.KeyValueSystem()
    result = import_table(kvs, postgres.url, str(tmp_path / "s"), table=table)
    assert result.rows == n and result.input_sorted
    assert store_dict(kvs, str(tmp_path / "s")) == dict(rows)


def test_primary_key_build_memory_is_raised_for_the_transaction_only(postgres):
    """add_primary_key(rows=...) raises maintenance_work_mem with SET LOCAL semantics: never
    below the server's setting, at most SORT_BYTES_MAX, gone after the commit."""
    from kvio.sql.tables import SORT_BYTES_MAX, add_primary_key, create_kv_table

    def setting_kb(db):
        return int(db.rows("SELECT setting::bigint FROM pg_settings "
                           "WHERE name = 'maintenance_work_mem'")[0][0])

    with connect(postgres.url) as db:
        server_kb = setting_kb(db)
        db.commit()
        for rows, expected_kb in ((10, server_kb), (10**9, max(server_kb, SORT_BYTES_MAX // 1024))):
            name = parse_table_name(postgres.table())
            create_kv_table(db, name, text=False, primary_key=False)
            add_primary_key(db, name, rows)
            assert setting_kb(db) == expected_kb
            db.commit()
            assert setting_kb(db) == server_kb
            db.commit()
            assert db.rows("SELECT count(*) FROM pg_index WHERE indrelid = to_regclass($1) "
                           "AND indisprimary", [name.quoted])[0][0] == 1


def test_import_cuts_partitions_while_rows_arrive(database, tmp_path, monkeypatch):
    """An import from a database writes partitions of at most IMPORT_PARTITION_BYTES (each
    finished while the rest streams), or of kvio.partition.size.max when that is smaller; the
    store holds the same pairs either way."""
    from kvio.sql import importer

    monkeypatch.setattr(importer, "IMPORT_PARTITION_BYTES", 256 << 10)
    rows = [(b"k%07d" % i, b"v" * 100) for i in range(10_000)]  # about 1.3 MB
    table = database.table()
    load_table(database, table, rows)
    for conf, most in (({}, 256 << 10), ({"kvio.partition.size.max": "128KB"}, 128 << 10)):
        kvs = kvio.KeyValueSystem(conf=conf)
        uri = str(tmp_path / f"s{most}")
        result = import_table(kvs, database.url, uri, table=table)
        assert result.rows == len(rows)
        assert store_dict(kvs, uri) == dict(rows)
        with kvs.open_store(uri) as reader:
            parts = reader.manifest.partitions
            assert len(parts) > 1 and reader.manifest.disjoint
            assert all(p.size <= most for p in parts)


def test_export_joins_store_blocks_into_larger_batches(database, tmp_path, monkeypatch):
    """The store's per-block batches reach the driver joined into batches of about
    COALESCE_BYTES: every pair once, in key order; a bad UTF-8 value inside a joined batch is
    still named by its own key."""
    from kvio.sql import tables

    monkeypatch.setattr(tables, "COALESCE_BYTES", 20_000)
    kvs = kvio.KeyValueSystem(conf={"kvio.block.size": "1KB"})
    pairs = {b"k%05d" % i: b"v%d" % i * 20 for i in range(3000)}
    write_store(kvs, str(tmp_path / "s"), pairs)
    with kvs.open_store(str(tmp_path / "s")) as reader:
        blocks = sum(1 for _ in reader.batches())
        joined = list(tables.as_table_batches(reader.batches(), False, reader.uri))
    assert 1 < len(joined) < blocks / 5
    assert [k for b in joined for k in b.column(0).to_pylist()] == sorted(pairs)
    table = database.table()
    export_store(kvs, str(tmp_path / "s"), database.url, table)
    assert database.rows(table) == pairs

    bad = dict(pairs)
    bad[b"k01500"] = b"\xff"
    write_store(kvs, str(tmp_path / "bad"), bad)
    with pytest.raises(KvioError, match="not valid UTF-8") as info:
        export_store(kvs, str(tmp_path / "bad"), database.url, database.table(), text=True)
    assert info.value.key == b"k01500"


def test_export_connects_with_builtin_types_and_names_an_unknown_column_type(postgres, tmp_path):
    """Export and sync connect with the driver's built-in types (no catalogue read). A table
    whose value column has a type the driver does not know then gets an error naming the
    column and its type, not a wrong "holds bytes" verdict; an import reads an enum column as
    text (through the server's types)."""
    from kvio.errors import DatabaseError, InvalidArgumentError
    from kvio.sql.db import TYPES_BUILTIN

    kvs = kvio.KeyValueSystem()
    uri = str(tmp_path / "s")
    write_store(kvs, uri, {b"a": b"x"})
    with _enum_table(postgres, tmp_path, "('x', 'y')", '"key" TEXT PRIMARY KEY, "value" {kind}',
                     "('a', 'y')") as (table, kind):
        with pytest.raises(DatabaseError, match=f"column 'value' of table {table}.*{kind}"):
            export_store(kvs, uri, postgres.url, table=table, mode="upsert", text=True)
        with connect(postgres.url, types=TYPES_BUILTIN) as db:  # the opaque value, as bytes
            assert db.rows(f'SELECT "value" FROM "{table}"') == [(b"y",)]
        result = import_table(kvs, postgres.url, str(tmp_path / "back"),
                              query=f'SELECT "key", "value"::text AS "value" FROM "{table}"')
        assert result.rows == 1 and store_dict(kvs, str(tmp_path / "back")) == {b"a": b"y"}
        # The enum column itself: the built-in types do not name it, so the import reads it
        # again with the server's types, where it is text.
        result = import_table(kvs, postgres.url, str(tmp_path / "enum"), table=table)
        assert result.rows == 1 and store_dict(kvs, str(tmp_path / "enum")) == {b"a": b"y"}
        with pytest.raises(InvalidArgumentError, match="types must be"):
            connect(postgres.url, types="catalogue")


def test_import_connects_with_builtin_types_unless_a_column_needs_the_catalogue(postgres, tmp_path,
                                                                                 monkeypatch):
    """An import of text or binary columns connects once, with the driver's built-in types (no
    read of the server's type catalogue); an enum key column makes it read again with the
    server's types, and its labels become the keys."""
    import kvio.sql.importer as importer
    from kvio.sql.db import TYPES_BUILTIN, TYPES_SERVER

    kvs = kvio.KeyValueSystem()
    opened: list[str] = []
    real = importer.connect

    def spy(url, *args, types=TYPES_SERVER, **kwargs):
        opened.append(types)
        return real(url, *args, types=types, **kwargs)

    monkeypatch.setattr(importer, "connect", spy)
    with _enum_table(postgres, tmp_path, "('b', 'a')", '"key" {kind} PRIMARY KEY, "value" BYTEA',
                     "('a', '\\x01'), ('b', '\\x02')") as (table, _):
        import_table(kvs, postgres.url, str(tmp_path / "text"),
                     query=f'SELECT "key"::text AS "key", "value" FROM "{table}"')
        assert opened == [TYPES_BUILTIN]
        assert store_dict(kvs, str(tmp_path / "text")) == {b"a": b"\x01", b"b": b"\x02"}
        opened.clear()
        import_table(kvs, postgres.url, str(tmp_path / "enum"), table=table)
        assert opened == [TYPES_BUILTIN, TYPES_SERVER]
        assert store_dict(kvs, str(tmp_path / "enum")) == {b"a": b"\x01", b"b": b"\x02"}


@contextlib.contextmanager
def _enum_table(postgres, tmp_path, labels: str, columns: str, rows: str):
    """A new enum type of ``labels`` and a table of ``columns`` (``{kind}`` stands for the
    type) holding ``rows``; both dropped afterwards. Yields (table, type name)."""
    table = postgres.table()
    kind = "".join(ch if ch.isalnum() else "_" for ch in f"kvio_test_enum_{tmp_path.name[-8:]}")
    kind = kind.lower()
    with connect(postgres.url) as db:
        db.execute(f'CREATE TYPE "{kind}" AS ENUM {labels}')
        quoted = f'"{kind}"'
        db.execute(f'CREATE TABLE "{table}" ({columns.format(kind=quoted)})')
        db.execute(f'INSERT INTO "{table}" VALUES {rows}')
        db.commit()
    try:
        yield table, kind
    finally:
        with connect(postgres.url) as db:
            db.execute(f'DROP TABLE IF EXISTS "{table}"')
            db.execute(f'DROP TYPE IF EXISTS "{kind}"')
            db.commit()
