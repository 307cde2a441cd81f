"""Store configurations for `dtm serve` processes started by tests.

`store_config(driver, name)` gives the `Store` section of a server's configuration over data
private to `name`: a SQLite file, a MySQL database, a PostgreSQL schema or a Redis key
prefix. Servers given the same name share that data, which is how tests run many servers on
one store. `drop_store(driver, name)` removes the data; call it before starting the servers
so that a rerun starts clean (the servers create the schema again: `Store.AutoMigrate`).

The server stores use the services of this machine (scripts/ensure-services.sh starts them).
A service that is down makes the test fail, never skip: in CI a missing service is a fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import asyncmy  # type: ignore[import-untyped]
import asyncpg
import redis

__all__ = ["DRIVERS", "POOL_SIZE", "drop_store", "private_name", "store_config"]

DRIVERS = ("sqlite", "mysql", "postgres", "redis")

MYSQL: dict[str, Any] = {"Host": "127.0.0.1", "Port": 3306, "User": "root", "Password": ""}
POSTGRES: dict[str, Any] = {
    "Host": "127.0.0.1",
    "Port": 5432,
    "User": "postgres",
    "Password": "",
    "Db": "test",
}
REDIS: dict[str, Any] = {"Host": "127.0.0.1", "Port": 6379}

# Connections per server process. Upstream's default (500) is more than PostgreSQL's
# max_connections (100 here): a few servers under load, or one, would be refused connections
# ("too many clients") and answer 503. A deployment sizes the pools to the database; so do
# the tests, leaving room for other clients of the same service.
POOL_SIZE = 10

# MySQL names end at 64 characters, PostgreSQL identifiers at 63.
_MAX_NAME = 60


def private_name(name: str) -> str:
    """`name` as a safe identifier, `dtm_` first: lower case letters, digits and `_`.

    A name that had to be changed or shortened gets a hash of the original, so two
    different names never give the same identifier.
    """
    plain = re.sub(r"[^a-z0-9_]", "_", name.lower())
    ident = f"dtm_{plain}"
    if plain != name or len(ident) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        ident = f"{ident[: _MAX_NAME - 9]}_{digest}"
    return ident


def store_config(driver: str, name: str, *, directory: Path | None = None) -> dict[str, Any]:
    """The `Store` section for `driver` over data private to `name`.

    SQLite needs `directory`, where its file is kept; the other drivers ignore it.
    """
    ident = private_name(name)
    if driver == "sqlite":
        if directory is None:
            raise ValueError("the sqlite store needs a directory for its file")
        return {"Driver": "sqlite", "Path": str(directory / f"{ident}.db")}
    if driver == "mysql":
        return {"Driver": "mysql", **MYSQL, "Db": ident, "MaxOpenConns": POOL_SIZE}
    if driver == "postgres":
        return {"Driver": "postgres", **POSTGRES, "Schema": ident, "MaxOpenConns": POOL_SIZE}
    if driver == "redis":
        # Braces: a Redis Cluster hash tag, so every key of the store is in one slot.
        return {"Driver": "redis", **REDIS, "RedisPrefix": f"{{{ident}}}"}
    raise ValueError(f"unknown store driver {driver!r}")


def drop_store(driver: str, name: str, *, directory: Path | None = None) -> None:
    """Remove the data `store_config(driver, name)` points at; nothing there is fine."""
    conf = store_config(driver, name, directory=directory)
    if driver == "sqlite":
        path = Path(conf["Path"])
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    elif driver == "mysql":
        asyncio.run(_drop_mysql_database(conf["Db"]))
    elif driver == "postgres":
        asyncio.run(_drop_postgres_schema(conf["Schema"]))
    else:
        _drop_redis_keys(conf["RedisPrefix"])


async def _drop_mysql_database(db: str) -> None:
    conn = await asyncmy.connect(
        host=MYSQL["Host"], port=MYSQL["Port"], user=MYSQL["User"], password=MYSQL["Password"]
    )
    try:
        async with conn.cursor() as cur:
            # No note for a database that is not there: asyncmy would log it as a warning.
            await cur.execute("SET SESSION sql_notes = 0")
            await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        conn.close()


async def _drop_postgres_schema(schema: str) -> None:
    conn = await asyncpg.connect(
        host=POSTGRES["Host"],
        port=POSTGRES["Port"],
        user=POSTGRES["User"],
        password=POSTGRES["Password"] or None,
        database=POSTGRES["Db"],
    )
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _drop_redis_keys(prefix: str) -> None:
    # The prefix is made of [a-z0-9_{}] only: nothing a Redis glob pattern would read.
    client = redis.Redis(host=REDIS["Host"], port=REDIS["Port"])
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()
