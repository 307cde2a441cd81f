"""Micro-benchmark of the Redis store's hot path: create + save_progress per transaction.

    .venv/bin/python bench/store_redis.py [--concurrency 64] [--seconds 5] [--host H --port P]

Each of `concurrency` coroutines creates a two-operation saga, then finishes it in one
save_progress, as the engine does for a saga that succeeds at once (the same workload as
bench/store_sqlite.py). Then, to separate Redis's cost from the client's, it times
`--pipelined` EVALSHA calls of the create script alone sent in pipelines of 1,000, as
redis-benchmark would. Keys go under a private prefix that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import msgspec
import redis.asyncio as aioredis

from dtm.protocol.consts import PREPARED, SAGA, SUBMITTED
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.config import StoreConfig
from dtm.server.stores.redis import RedisStore, _lua
from store_workload import worker


async def store_calls(conf: StoreConfig, concurrency: int, seconds: float) -> int:
    store = RedisStore(conf)
    await store.open()
    try:
        cpu, start = time.process_time(), time.perf_counter()
        counts = await asyncio.gather(
            *(worker(store, i, start + seconds) for i in range(concurrency))
        )
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        await store.close()
    calls = 2 * sum(counts)
    print(
        f"store concurrency={concurrency}: {calls / elapsed:,.0f} store calls/s "
        f"({sum(counts) / elapsed:,.0f} transactions/s), "
        f"client CPU {cpu / calls * 1e6:.0f} us/call"
    )
    return calls


async def create_script_alone(conf: StoreConfig, total: int) -> None:
    """EVALSHA of the create script with a store's arguments, pipelined 1,000 at a time."""
    client = aioredis.Redis(host=conf.Host, port=conf.Port)
    sha = await client.script_load(_lua("create"))
    p = conf.RedisPrefix
    encode = msgspec.json.encode
    body = encode(TransGlobal(gid="x", trans_type=SAGA, status=SUBMITTED))
    branch = encode(
        TransBranch(gid="x", url="http://busi/a", branch_id="01", op="action", status=PREPARED)
    )
    try:
        start = time.perf_counter()
        for first in range(0, total, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(first + 1000, total)):
                gid = f"p{i}"
                pipe.evalsha(
                    sha, 6, f"{p}_g_{gid}", f"{p}_b_{gid}", f"{p}_u", f"{p}_all", f"{p}_f",
                    f"{p}_ids", gid, 10_000_000, "0", 86400, body, 1, 0, "",
                    encode(["01", "compensate"]), branch, encode(["01", "action"]), branch,
                )  # fmt: skip
            await pipe.execute()
        elapsed = time.perf_counter() - start
    finally:
        await client.aclose()
    print(
        f"create script alone, pipelined: {total / elapsed:,.0f} EVALSHA/s "
        f"({elapsed / total * 1e6:.1f} us each)"
    )


async def redis_cpu(conf: StoreConfig) -> float:
    client = aioredis.Redis(host=conf.Host, port=conf.Port)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def drop(conf: StoreConfig) -> None:
    client = aioredis.Redis(host=conf.Host, port=conf.Port)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=conf.RedisPrefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    conf = StoreConfig(
        Driver="redis", Host=args.host, Port=args.port, RedisPrefix=f"{{bench{os.getpid()}}}"
    )
    try:
        before = await redis_cpu(conf)
        calls = await store_calls(conf, args.concurrency, args.seconds)
        used = await redis_cpu(conf) - before
        print(f"  redis-server CPU {used / calls * 1e6:.0f} us/call")
        before = await redis_cpu(conf)
        await create_script_alone(conf, args.pipelined)
        used = await redis_cpu(conf) - before
        print(f"  redis-server CPU {used / args.pipelined * 1e6:.0f} us/EVALSHA")
    finally:
        await drop(conf)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pipelined", type=int, default=10_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6379)
    asyncio.run(main(parser.parse_args()))
