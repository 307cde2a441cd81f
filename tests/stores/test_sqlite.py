"""SQLite-only behaviour of the embedded store, beside the shared contract suite."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtm.server.stores.base import ScanFilter, StoreUnavailable
from dtm.server.stores.sqlite import SqliteStore
from tests.stores.test_contract import create, create_ok, new_trans, saga_ops


async def test_an_unreachable_store_raises_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "missing" / "dtm.sqlite3"))
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(str(tmp_path / "dtm.sqlite3"))
    await opened.open()
    yield opened
    await opened.close()


async def test_a_failing_write_spoils_nothing_else_in_its_batch(store: SqliteStore) -> None:
    await create(store, "dup")
    # Holding SQLite's write lock from outside stalls the writer, so all the jobs below
    # queue up and share the commit after it.
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    batches_before, _ = store.batch_stats()
    broken_ops = saga_ops("broken", "01")
    # A NULL status breaks the second insert of this job, after its global row is written.
    broken_ops[1].status = None  # type: ignore[assignment]

    jobs = asyncio.gather(
        *(create_ok(store, f"ok{i}") for i in range(10)),
        create_ok(store, "dup"),
        store.create(new_trans("broken"), broken_ops, next_cron_delay=10),
        *(create_ok(store, f"ok{i}") for i in range(10, 20)),
        return_exceptions=True,
    )
    await asyncio.sleep(0.05)
    blocker.execute("COMMIT")
    blocker.close()
    results = await jobs

    assert store.batch_stats()[0] - batches_before <= 2
    assert results[:10] == [True] * 10 and results[12:] == [True] * 10
    assert results[10] is False
    assert isinstance(results[11], StoreUnavailable)
    assert await store.load("broken") == (None, [])
    page = await store.scan(position="", limit=100, where=ScanFilter())
    assert len(page.items) == 21
