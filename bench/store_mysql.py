"""Micro-benchmark of the MySQL/MariaDB store's hot path: create + save_progress per transaction.

    .venv/bin/python bench/store_mysql.py [--concurrency 64] [--seconds 5] [--pool 32]
        [--host 127.0.0.1] [--port 3306] [--user root] [--password ""]

Each of `concurrency` coroutines creates a two-operation saga, then finishes it in one
save_progress, as the engine does for a saga that succeeds at once. Runs in a database of
its own (`dtm_bench_<pid>`), dropped at the end. Prints store calls per second and this
process's CPU time per transaction (the database server's CPU is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncmy

from dtm.server.config import StoreConfig
from dtm.server.stores.mysql import MysqlStore
from store_workload import one_transaction, worker


async def drop(conf: StoreConfig) -> None:
    conn = await asyncmy.connect(
        host=conf.Host, port=conf.Port, user=conf.User, password=conf.Password
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{conf.Db}`")
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> None:
    conf = StoreConfig(
        Driver="mysql",
        Host=args.host,
        Port=args.port,
        User=args.user,
        Password=args.password,
        Db=f"dtm_bench_{os.getpid()}",
        MaxOpenConns=args.pool,
    )
    store = MysqlStore(conf)
    await store.open()
    try:
        await store.migrate()
        await asyncio.gather(*(one_transaction(store, f"warm-{i}") for i in range(args.pool)))
        cpu = time.process_time()
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(worker(store, i, start + args.seconds) for i in range(args.concurrency))
        )
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    finally:
        await store.close()
        await drop(conf)
    done = sum(counts)
    print(
        f"concurrency={args.concurrency} pool={args.pool}: "
        f"{2 * done / elapsed:,.0f} store calls/s ({done / elapsed:,.0f} transactions/s), "
        f"client CPU {1e6 * cpu / done:,.0f} us per transaction"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=32)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default="")
    asyncio.run(main(parser.parse_args()))
