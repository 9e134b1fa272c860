"""Real databases for the kvio.sql tests: a SQLite file per test and the PostgreSQL server on
127.0.0.1:5432 (database ``test``). Without PostgreSQL its tests skip, except with CI=true where
they fail. Each test uses tables of its own (random names) and drops only those, and the rows of
``kvio_sync_state`` naming them."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import pytest

from tests.helpers import require_module

require_module("adbc_driver_sqlite", "the sql extra (adbc-driver-sqlite) is not installed")
require_module("adbc_driver_postgresql", "the sql extra (adbc-driver-postgresql) is not installed")

from kvio.errors import DatabaseError  # noqa: E402
from kvio.sql import TableName, connect  # noqa: E402
from kvio.sql.sync import STATE_TABLE  # noqa: E402

PG_URL = os.environ.get("KVIO_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test")


def postgres_or_skip() -> str:
    """The PostgreSQL URL, or skip (outside CI) / fail (CI=true) when it cannot be reached."""
    try:
        with connect(PG_URL, timeout=5) as db:
            db.rows("SELECT 1")
    except DatabaseError as exc:
        reason = f"PostgreSQL is not reachable at {PG_URL} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: a missing server is a failure)")
        pytest.skip(reason)
    return PG_URL


@dataclass
class TestDatabase:
    """A database for one test and the tables it made."""
    url: str
    kind: str
    made: list[str] = field(default_factory=list)

    def table(self, stem: str = "t") -> str:
        name = f"kvt_{stem}_{uuid.uuid4().hex[:10]}"
        self.made.append(name)
        return name

    def rows(self, table: str) -> dict[bytes, bytes]:
        """The table's (key, value) rows as bytes."""
        with connect(self.url) as db:
            found = db.rows(f'SELECT "key", "value" FROM "{table}"')
        out = {}
        for k, v in found:
            out[k.encode() if isinstance(k, str) else bytes(k)] = \
                v.encode() if isinstance(v, str) else bytes(v)
        assert len(out) == len(found)
        return out

    def run(self, sql: str, params=None) -> list[tuple]:
        with connect(self.url) as db:
            db.execute(sql, params)
            try:
                out = db.cursor.fetchall()
            except Exception:
                out = []
            db.commit()
            return out

    def cleanup(self) -> None:
        with connect(self.url) as db:
            for name in self.made:
                db.execute(f'DROP TABLE IF EXISTS "{name}"')
            if self.made and db.table_exists(TableName(STATE_TABLE)):
                marks = db.placeholders(len(self.made))
                db.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name IN ({marks})", self.made)
            db.commit()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Each test runs against a SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        found = TestDatabase(f"sqlite:///{tmp_path}/test.db", "sqlite")
    else:
        found = TestDatabase(postgres_or_skip(), "postgresql")
    yield found
    found.cleanup()


@pytest.fixture
def postgres():
    found = TestDatabase(postgres_or_skip(), "postgresql")
    yield found
    found.cleanup()
