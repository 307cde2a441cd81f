"""Open a business database's DB-API connection from a URL, for `dtm migrate --barrier`.

The drivers are the barrier's: PyMySQL, psycopg 3 and sqlite3, so the connection is one
`dtm.barrier` recognises.
"""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import unquote, urlsplit

_MYSQL = ("mysql", "mariadb", "mysql+pymysql")
_POSTGRES = ("postgres", "postgresql", "postgresql+psycopg")


def connect(url: str) -> Any:
    """A connection to the database at `url`; ValueError for a URL of no known kind."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if not path:
            raise ValueError("sqlite URL needs a path: sqlite:///relative.db or sqlite:////abs.db")
        # sqlite:///x.db is the relative file x.db, sqlite:////tmp/x.db an absolute one.
        return sqlite3.connect(path[1:] if path.startswith("/") else path)
    if scheme in _MYSQL:
        import pymysql

        return pymysql.connect(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or None,
        )
    if scheme in _POSTGRES:
        import psycopg

        return psycopg.connect(url.replace(parts.scheme + "://", "postgresql://", 1))
    raise ValueError(f"unknown database URL {url!r}: expected mysql://, postgresql:// or sqlite://")
