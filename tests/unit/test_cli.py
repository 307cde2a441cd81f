"""The `dtm` command line: migrate creates the schema (the store's, or the barrier's in a
business database) and keeps data; version prints."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pymysql

from dtm import __version__


def dtm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dtm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_creates_upstreams_tables_and_keeps_data(tmp_path: Path) -> None:
    path = str(tmp_path / "dtm.db")
    first = dtm("migrate", "--store-path", path)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"trans_global", "trans_branch_op", "kv"} <= tables
        conn.execute("INSERT INTO kv (cat, k, v) VALUES ('topics', 't', '[]')")
    again = dtm("migrate", "--store-path", path)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT k FROM kv").fetchall() == [("t",)]


def test_version() -> None:
    done = dtm("version")
    assert done.stdout.strip() == __version__


def test_migrate_creates_the_barrier_table_in_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "busi.db"
    done = dtm("migrate", "--barrier", f"sqlite:///{path}")
    assert done.returncode == 0, done.stderr
    assert "barrier table barrier is ready" in done.stdout
    with sqlite3.connect(path) as conn:
        conn.execute(
            "insert into barrier (trans_type, gid, branch_id, op, barrier_id, reason)"
            " values ('saga', 'g', '01', 'action', '01', 'action')"
        )
    again = dtm("migrate", "--barrier", f"sqlite:///{path}")  # idempotent, keeps the row
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from barrier").fetchone() == (1,)


def test_migrate_creates_the_barrier_table_in_mariadb_and_postgres() -> None:
    table = f"dtm_barrier.cli_{uuid.uuid4().hex[:8]}"
    mysql = dtm(
        "migrate", "--barrier", "mysql://root@127.0.0.1:3306/test", "--barrier-table", table
    )
    assert mysql.returncode == 0, mysql.stderr
    conn = pymysql.connect(host="127.0.0.1", user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute(f"select count(*) from {table}")
            assert cur.fetchone() == (0,)
            cur.execute(f"drop table {table}")
    finally:
        conn.close()
    pg_url = "postgresql://postgres@127.0.0.1:5432/test"
    pg = dtm("migrate", "--barrier", pg_url, "--barrier-table", table)
    assert pg.returncode == 0, pg.stderr
    with psycopg.connect(pg_url, autocommit=True) as pg_conn:
        assert pg_conn.execute(f"select count(*) from {table}").fetchone() == (0,)
        pg_conn.execute(f"drop table {table}")


def test_migrate_barrier_refuses_bad_input(tmp_path: Path) -> None:
    unknown = dtm("migrate", "--barrier", "oracle://x/y")
    assert unknown.returncode == 2 and "expected mysql://" in unknown.stderr
    bad_name = dtm("migrate", "--barrier", f"sqlite:///{tmp_path}/b.db", "--barrier-table", "a;b")
    assert bad_name.returncode == 2 and "invalid barrier table name" in bad_name.stderr
    down = dtm("migrate", "--barrier", "mysql://root@127.0.0.1:1/test")
    assert down.returncode == 1 and "cannot connect" in down.stderr
