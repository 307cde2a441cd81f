"""Micro-benchmark of the PostgreSQL store's hot path: create + save_progress per transaction.

    .venv/bin/python bench/store_postgres.py [--concurrency 64] [--seconds 5] [--pool 16] [--uvloop]

Each of `concurrency` coroutines creates a two-operation saga, then finishes it in one
save_progress, as the engine does for a saga that succeeds at once (see store_sqlite.py).
Runs against database `test` on 127.0.0.1:5432 in a schema of its own, dropped at the end.
Prints store calls per second and this process's CPU per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg

from dtm.server.config import StoreConfig
from dtm.server.stores.postgres import PostgresStore
from store_workload import one_transaction, worker


async def main(concurrency: int, seconds: float, pool: int, host: str, port: int) -> None:
    schema = f"dtm_bench_{os.getpid()}"
    conf = StoreConfig(
        Driver="postgres",
        Host=host,
        Port=port,
        User="postgres",
        Db="test",
        Schema=schema,
        MaxOpenConns=pool,
    )
    store = PostgresStore(conf)
    await store.open()
    try:
        await store.migrate()
        await asyncio.gather(*(one_transaction(store, f"warm-{i}") for i in range(pool)))
        cpu = time.process_time()
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(worker(store, i, start + seconds) for i in range(concurrency))
        )
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        await store.close()
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database="test")
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
    calls = 2 * sum(counts)
    print(
        f"concurrency={concurrency} pool={pool}: {calls / elapsed:,.0f} store calls/s "
        f"({sum(counts) / elapsed:,.0f} transactions/s), "
        f"client CPU {cpu / calls * 1e6:,.0f} µs/call"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--uvloop", action="store_true", help="the server's event loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.concurrency, args.seconds, args.pool, args.host, args.port))
