"""The embedded store over a file in the test's directory."""

from __future__ import annotations

from pathlib import Path

from dtm.server.stores.base import Store
from dtm.server.stores.sqlite import SqliteStore


def make(tmp: Path) -> Store:
    return SqliteStore(str(tmp / "dtm.sqlite3"))
