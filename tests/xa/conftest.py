"""XA resource managers against real databases: the machine's MariaDB, and a private
PostgreSQL with `max_prepared_transactions` (the shared one has it at 0, which refuses
PREPARE TRANSACTION). A service that is down fails the tests, never skips them.

Each test gets a private table `<name>(id int primary key, amount int)` and gids of its own
(short: MySQL's xid is at most 64 bytes). Teardown fails the test if an xid of its gids is
still prepared, then rolls such xids back and drops the table.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
import pymysql
import pytest

from dtm.xa._sql import statements
from tests.services import PostgresService, service_fixture

MYSQL: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 3306,
    "user": "root",
    "password": "",
    "database": "test",
}


class XaPostgresService(PostgresService):
    """A private PostgreSQL that accepts PREPARE TRANSACTION."""

    settings: ClassVar[dict[str, str]] = {"max_prepared_transactions": "20"}


xa_postgres = service_fixture(XaPostgresService, scope="session")


def postgres_dsn(service: PostgresService) -> str:
    return f"host=127.0.0.1 port={service.port} user=postgres dbname=postgres"


@dataclass
class Db:
    """One database for a test: fresh connections, its table, and what is prepared there."""

    name: str
    """"mysql" or "postgres"."""
    connect_fn: Callable[[], Any]
    table: str
    prefix: str
    """Every gid of the test starts with it, so its prepared xids can be found."""
    port: int
    opened: list[Any] = field(default_factory=list)

    def connect(self) -> Any:
        conn = self.connect_fn()
        self.opened.append(conn)
        return conn

    def gid(self) -> str:
        return f"{self.prefix}{uuid.uuid4().hex[:8]}"

    def run(self, sql: str) -> list[Any]:
        """One statement on a fresh autocommit connection; its rows."""
        conn = self.connect_fn()
        try:
            if self.name == "mysql":
                conn.autocommit(True)
            else:
                conn.autocommit = True
            cur = conn.cursor()
            if self.name == "mysql":  # a DROP blocked by a forgotten xid fails, not hangs
                cur.execute("set session lock_wait_timeout = 5")
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def ids(self) -> list[int]:
        """The committed rows' ids, as any other session sees them."""
        return [int(r[0]) for r in self.run(f"select id from {self.table} order by id")]

    def prepared(self) -> list[str]:
        """The prepared xids of this test."""
        if self.name == "mysql":
            xids = [bytes(r[3]).decode() for r in self.run("xa recover")]
        else:
            xids = [r[0] for r in self.run("select gid from pg_prepared_xacts")]
        return sorted(x for x in xids if x.startswith(self.prefix))

    def insert(self, row_id: int, amount: int = 0) -> Callable[[Any], int]:
        """A branch's `fn`: insert one row; returns its id."""

        def fn(conn: Any) -> int:
            cur = conn.cursor()
            cur.execute(f"insert into {self.table} (id, amount) values ({row_id}, {amount})")
            cur.close()
            return row_id

        return fn

    def close_opened(self) -> None:
        for conn in self.opened:
            with contextlib.suppress(Exception):  # PyMySQL refuses a second close
                conn.close()
        self.opened.clear()


def make_db(name: str, pg: PostgresService) -> Db:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    table = f"xa_{prefix[:-1]}"
    if name == "mysql":
        return Db(name, lambda: pymysql.connect(**MYSQL), f"test.{table}", prefix, 3306)
    dsn = postgres_dsn(pg)
    return Db(name, lambda: psycopg.connect(dsn), table, prefix, pg.port)


def cleanup(db: Db) -> list[str]:
    """Close the test's connections, roll back what it left prepared, drop its table; the
    xids that were left prepared."""
    db.close_opened()
    left = db.prepared()
    for xid in left:
        db.run(statements(db.name, xid).rollback)
    db.run(f"drop table if exists {db.table}")
    return left


def _db(name: str, pg: PostgresService) -> Iterator[Db]:
    d = make_db(name, pg)
    d.run(f"create table {d.table} (id int primary key, amount int not null)")
    yield d
    left = cleanup(d)
    assert left == [], f"the test left xids prepared: {left}"


@pytest.fixture(params=["mysql", "postgres"])
def db(request: pytest.FixtureRequest, xa_postgres: PostgresService) -> Iterator[Db]:
    yield from _db(request.param, xa_postgres)


@pytest.fixture
def mysql_db(xa_postgres: PostgresService) -> Iterator[Db]:
    yield from _db("mysql", xa_postgres)


@pytest.fixture
def postgres_db(xa_postgres: PostgresService) -> Iterator[Db]:
    yield from _db("postgres", xa_postgres)
