"""Database URLs and identifiers: parsed into typed objects, never pasted unsafely."""
from __future__ import annotations

import pytest

from kvio.errors import InvalidArgumentError
from kvio.sql import TableName, is_database_url, parse_database_url, parse_table_name, quote_identifier


def test_sqlite_urls():
    assert parse_database_url("sqlite:///rel/x.db").target == "rel/x.db"
    assert parse_database_url("sqlite:////abs/x.db").target == "/abs/x.db"
    assert parse_database_url("sqlite:///x.db").kind == "sqlite"
    with pytest.raises(InvalidArgumentError, match="names a file, not a host"):
        parse_database_url("sqlite://host/x.db")


def test_postgresql_urls_hide_the_password():
    url = parse_database_url("postgresql://me:secret@db.example:5433/prod?sslmode=require")
    assert url.kind == "postgresql"
    assert url.target == "postgresql://me:secret@db.example:5433/prod?sslmode=require"
    assert "secret" not in str(url) and "***" in str(url)
    assert parse_database_url("postgres://u@h/db").target == "postgresql://u@h/db"
    with pytest.raises(InvalidArgumentError, match="no database name"):
        parse_database_url("postgresql://u:pw@h:5432/")
    with pytest.raises(InvalidArgumentError) as info:
        parse_database_url("postgresql://u:pw@h:5432/")
    assert "pw" not in str(info.value)


def test_other_schemes_are_not_databases():
    assert not is_database_url("/tmp/x.tsv")
    assert not is_database_url("s3://bucket/key")
    assert is_database_url("SQLITE:///x.db")
    with pytest.raises(InvalidArgumentError, match="not a database URL"):
        parse_database_url("mysql://u@h/db")


@pytest.mark.parametrize("bad", ['t"; DROP TABLE x; --', "a b", "1abc", "", "t.u.v", "x-y",
                                 "a" * 64])
def test_identifiers_are_validated(bad):
    with pytest.raises(InvalidArgumentError):
        parse_table_name(bad)


def test_identifiers_are_quoted():
    assert quote_identifier("key") == '"key"'
    assert parse_table_name("public.KV").quoted == '"public"."KV"'
    assert parse_table_name("kv") == TableName("kv")
