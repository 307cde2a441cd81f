"""Micro-benchmark of the SQLite store's hot path: create + save_progress per transaction.

    .venv/bin/python bench/store_sqlite.py [--concurrency 64] [--seconds 5] [--synchronous FULL]

Each of `concurrency` coroutines creates a two-operation saga, then finishes it in one
save_progress, as the engine does for a saga that succeeds at once. Prints store calls per
second and the writer's average group-commit size.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from dtm.protocol.consts import OP_ACTION, OP_COMPENSATE, PREPARED, SAGA, SUBMITTED, SUCCEED
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.stores.base import BranchUpdate, Progress
from dtm.server.stores.sqlite import SqliteStore

FINISH = Progress(branches=[BranchUpdate("01", OP_ACTION, SUCCEED)], status=SUCCEED)


async def one_transaction(store: SqliteStore, gid: str) -> None:
    trans = TransGlobal(gid=gid, trans_type=SAGA, status=SUBMITTED)
    ops = [
        TransBranch(gid=gid, url="http://busi/" + op, branch_id="01", op=op, status=PREPARED)
        for op in (OP_COMPENSATE, OP_ACTION)
    ]
    assert await store.create(trans, ops, next_cron_delay=10)
    assert await store.save_progress(gid, FINISH, expect_status=SUBMITTED)


async def worker(store: SqliteStore, name: int, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        await one_transaction(store, f"w{name}-{done}")
        done += 1
    return done


async def main(concurrency: int, seconds: float, synchronous: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "bench.sqlite3"), synchronous=synchronous)
        await store.open()
        try:
            start = time.perf_counter()
            counts = await asyncio.gather(
                *(worker(store, i, start + seconds) for i in range(concurrency))
            )
            elapsed = time.perf_counter() - start
            batches, jobs = store.batch_stats()
        finally:
            await store.close()
    calls = 2 * sum(counts)
    print(
        f"synchronous={synchronous} concurrency={concurrency}: "
        f"{calls / elapsed:,.0f} store calls/s ({sum(counts) / elapsed:,.0f} transactions/s), "
        f"average batch {jobs / batches:.1f} jobs over {batches} commits"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()
    asyncio.run(main(args.concurrency, args.seconds, args.synchronous))
