"""The PostgreSQL store over a schema private to the test, in database `test` on this machine.

The schema is named after the test's directory (`dtm_t_<hash>`) and made afresh the first
time a test asks for it (a marker file in the directory remembers that), so a store made
again in the same test sees the same data. Each schema carries its directory as a comment;
schemas whose directory pytest has since deleted (it keeps the last few runs) are dropped,
so repeated runs do not pile schemas up, and concurrent runs do not touch each other's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
from pathlib import Path

import asyncpg

from dtm.server.config import StoreConfig
from dtm.server.stores.postgres import PostgresStore

HOST = os.environ.get("DTM_TEST_PG_HOST", "127.0.0.1")
PORT = int(os.environ.get("DTM_TEST_PG_PORT", "5432"))
USER = os.environ.get("DTM_TEST_PG_USER", "postgres")
DATABASE = "test"
PREFIX = "dtm_t_"
MARKER = ".postgres-schema"
# Small, so that many tests and concurrent runs stay far below max_connections.
POOL_SIZE = 4


def schema_of(tmp: Path) -> str:
    return PREFIX + hashlib.sha256(str(tmp).encode()).hexdigest()[:16]


def config(tmp: Path, **overrides: object) -> StoreConfig:
    values: dict[str, object] = {
        "Driver": "postgres",
        "Host": HOST,
        "Port": PORT,
        "User": USER,
        "Db": DATABASE,
        "Schema": schema_of(tmp),
        "MaxOpenConns": POOL_SIZE,
        "MaxIdleConns": POOL_SIZE,
    }
    values.update(overrides)
    return StoreConfig(**values)  # type: ignore[arg-type]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stale(schemas: list[tuple[str, str | None]]) -> list[str]:
    """Schemas whose test directory is gone; those without a comment are not ours."""
    return [name for name, path in schemas if path and not Path(path).exists()]


async def _fresh_schema(tmp: Path) -> None:
    conn = await asyncpg.connect(host=HOST, port=PORT, user=USER, database=DATABASE)
    try:
        await conn.execute("SET client_min_messages = warning")
        rows = await conn.fetch(
            "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace"
            " WHERE starts_with(nspname, $1)",
            PREFIX,
        )
        for name in _stale([(row[0], row[1]) for row in rows]):
            # Another run may be dropping it too.
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        schema = schema_of(tmp)
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"COMMENT ON SCHEMA {schema} IS {_literal(str(tmp))}")
    finally:
        await conn.close()


def prepare(tmp: Path) -> None:
    """Make the test's schema afresh, once per test directory."""
    marker = tmp / MARKER
    if marker.exists():
        return
    # make() is called from inside the test's event loop: run the set-up on a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _fresh_schema(tmp)).result()
    marker.write_text(schema_of(tmp))


def make(tmp: Path) -> PostgresStore:
    prepare(tmp)
    return PostgresStore(config(tmp))
