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

from dtm.server.stores.sqlite import SqliteStore
from store_workload import worker


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
