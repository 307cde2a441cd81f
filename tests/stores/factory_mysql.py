"""The MySQL/MariaDB store over a database private to the test, on the machine's MariaDB.

The database is named after the process and the test's directory, `dtm_t_<pid>_<hash>`,
so concurrent test sessions never share one. It is dropped the first time a test asks for
it (the store's `migrate` creates it), dropped again when the next test of the process
starts and at exit; databases left by processes that died are dropped by the next session.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
from pathlib import Path

import pymysql

from dtm.server.config import StoreConfig
from dtm.server.stores.base import Store
from dtm.server.stores.mysql import MysqlStore

HOST = "127.0.0.1"
PORT = 3306
USER = "root"
PASSWORD = ""
# Connections per store: enough for the concurrency tests, far below max_connections.
POOL_SIZE = 10

_PREFIX = "dtm_t_"
_NAME = re.compile(rf"^{_PREFIX}(\d+)_[0-9a-f]+$")


class _State:
    """This process's database of the running test, and whether stale ones were swept."""

    current: str | None = None
    swept = False


def database_name(tmp: Path) -> str:
    digest = hashlib.sha1(str(tmp).encode()).hexdigest()[:12]
    return f"{_PREFIX}{os.getpid()}_{digest}"


def config(tmp: Path, **overrides: object) -> StoreConfig:
    """The `Store` section over the test's private database."""
    values: dict[str, object] = {
        "Driver": "mysql",
        "Host": HOST,
        "Port": PORT,
        "User": USER,
        "Password": PASSWORD,
        "Db": database_name(tmp),
        "MaxOpenConns": POOL_SIZE,
        **overrides,
    }
    return StoreConfig(**values)  # type: ignore[arg-type]


def connect(**kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    """A plain client connection to the test server (autocommit)."""
    return pymysql.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, autocommit=True, **kwargs
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop(*names: str) -> None:
    if not names:
        return
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_notes = 0")
            for name in names:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def _stale() -> list[str]:
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE %s", (_PREFIX.replace("_", r"\_") + "%",))
            names = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    stale = []
    for name in names:
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            stale.append(name)
    return stale


def _at_exit() -> None:
    if _State.current is not None:
        _drop(_State.current)


def make(tmp: Path) -> Store:
    name = database_name(tmp)
    if name != _State.current:
        if not _State.swept:
            _State.swept = True
            atexit.register(_at_exit)
            _drop(*_stale())
        _drop(*[n for n in (_State.current, name) if n is not None])
        _State.current = name
    return MysqlStore(config(tmp))
