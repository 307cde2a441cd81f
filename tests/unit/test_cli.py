"""The `dtm` command line: migrate creates the schema and keeps data; version prints."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

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
