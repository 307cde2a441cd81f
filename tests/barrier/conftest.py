"""A barrier backend per test: sqlite3, PyMySQL or psycopg over data private to the test.

Each backend gives fresh connections (`connect()`), a private barrier table and a business
table `busi(id, amount)` with one row (id 1, amount 0) plus `busi_log(op)`. MariaDB and
PostgreSQL are the machine's services (scripts/ensure-services.sh starts them); when one is
down the tests fail, never skip: in CI a missing service is a fault.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from dtm.barrier import create_table

MYSQL: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
POSTGRES = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@dataclass
class Backend:
    name: str
    connect_fn: Callable[[], Any]
    table: str
    busi: str
    log: str
    placeholder: str
    opened: list[Any] = field(default_factory=list)

    def connect(self) -> Any:
        conn = self.connect_fn()
        self.opened.append(conn)
        return conn

    def sql(self, text: str) -> str:
        """`text` with `?` markers in this driver's parameter style."""
        return text.replace("?", self.placeholder)

    def run(self, text: str, *params: Any) -> list[Any]:
        """Run one statement on a fresh connection in its own committed transaction."""
        conn = self.connect_fn()
        try:
            cur = conn.cursor()
            if params:
                cur.execute(self.sql(text), params)
            else:
                cur.execute(text)
            rows = list(cur.fetchall()) if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def amount(self) -> int:
        return int(self.run(f"select amount from {self.busi} where id = 1")[0][0])

    def ops(self) -> list[str]:
        return [row[0] for row in self.run(f"select op from {self.log} order by seq")]

    def barrier_rows(self) -> int:
        return int(self.run(f"select count(*) from {self.table}")[0][0])


def _setup(backend: Backend, seq_column: str) -> None:
    conn = backend.connect_fn()
    try:
        create_table(conn, dialect=None, table=backend.table)
        create_table(conn, table=backend.table)  # idempotent
        cur = conn.cursor()
        cur.execute(f"create table {backend.busi} (id int primary key, amount int not null)")
        cur.execute(f"create table {backend.log} ({seq_column}, op varchar(20) not null)")
        cur.execute(f"insert into {backend.busi} (id, amount) values (1, 0)")
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "mysql", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name: str = request.param
    private = f"dtm_bt_{uuid.uuid4().hex[:12]}"
    b: Backend
    drop: Callable[[], None]
    if name == "sqlite":
        path = tmp_path / "busi.db"
        b = Backend(
            name,
            lambda: sqlite3.connect(path, timeout=30, check_same_thread=False),
            "barrier",
            "busi",
            "busi_log",
            "?",
        )
        seq = "seq integer primary key autoincrement"
        drop = lambda: None  # noqa: E731  (tmp_path goes with the test)
    elif name == "mysql":
        admin = pymysql.connect(**MYSQL, autocommit=True)
        admin.cursor().execute(f"create database {private}")
        b = Backend(
            name,
            lambda: pymysql.connect(**MYSQL, database=private),
            f"{private}.barrier",
            f"{private}.busi",
            f"{private}.busi_log",
            "%s",
        )
        seq = "seq int auto_increment primary key"

        def drop() -> None:
            admin.cursor().execute(f"drop database {private}")
            admin.close()

    else:
        admin_pg = psycopg.connect(POSTGRES, autocommit=True)
        admin_pg.execute(f"create schema {private}")
        b = Backend(
            name,
            lambda: psycopg.connect(POSTGRES),
            f"{private}.barrier",
            f"{private}.busi",
            f"{private}.busi_log",
            "%s",
        )
        seq = "seq serial primary key"

        def drop() -> None:
            admin_pg.execute(f"drop schema {private} cascade")
            admin_pg.close()

    try:
        _setup(b, seq)
        yield b
    finally:
        for conn in b.opened:
            conn.close()
        drop()
