"""The asyncio barrier over asyncpg (PostgreSQL) and asyncmy (MariaDB), real services.

Each test gets a private database (MariaDB) or schema (PostgreSQL) holding the barrier
table, `busi(id, amount)` with one row (1, 0) and `busi_log(seq, op)`. A service that is
down fails the tests, never skips them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncmy
import asyncpg
import pytest
import pytest_asyncio

from dtm.barrier import BranchBarrier, TransactionStateError
from dtm.barrier.aio import AsyncBranchBarrier, create_table
from dtm.errors import DuplicateError, FailureError

MYSQL: dict[str, Any] = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
POSTGRES: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 5432,
    "user": "postgres",
    "database": "test",
}


@dataclass
class ABackend:
    name: str
    private: str
    opened: list[Any] = field(default_factory=list)

    @property
    def table(self) -> str:
        return f"{self.private}.barrier"

    async def connect(self) -> Any:
        conn: Any
        if self.name == "mysql":
            conn = await asyncmy.connect(**MYSQL, database=self.private)
        else:
            conn = await asyncpg.connect(**POSTGRES)
        self.opened.append(conn)
        return conn

    def sql(self, text: str) -> str:
        """`text` with `?` markers in this driver's parameter style."""
        if self.name == "mysql":
            return text.replace("?", "%s")
        parts = text.split("?")
        return "".join(p + (f"${i}" if i < len(parts) else "") for i, p in enumerate(parts, 1))

    async def execute(self, conn: Any, text: str, *params: Any) -> None:
        if self.name == "mysql":
            async with conn.cursor() as cur:
                await cur.execute(self.sql(text), params or None)
        else:
            await conn.execute(self.sql(text), *params)

    async def scalar(self, text: str) -> Any:
        conn = await self.connect()
        if self.name == "mysql":
            async with conn.cursor() as cur:
                await cur.execute(text)
                row = await cur.fetchone()
            await conn.rollback()
            return row[0]
        return await conn.fetchval(text)

    async def amount(self) -> int:
        return int(await self.scalar(f"select amount from {self.private}.busi where id = 1"))

    async def ops(self) -> list[str]:
        conn = await self.connect()
        text = f"select op from {self.private}.busi_log order by seq"
        if self.name == "mysql":
            async with conn.cursor() as cur:
                await cur.execute(text)
                rows = await cur.fetchall()
            await conn.rollback()
            return [r[0] for r in rows]
        return [r[0] for r in await conn.fetch(text)]

    async def barrier_rows(self) -> int:
        return int(await self.scalar(f"select count(*) from {self.table}"))

    def barrier(
        self, op: str, *, trans_type: str = "saga", branch_id: str = "01"
    ) -> AsyncBranchBarrier:
        return AsyncBranchBarrier(
            BranchBarrier(trans_type, f"gid-{self.private}", branch_id, op, table=self.table)
        )

    def adjust(self, delta: int, op: str, *, delay: float = 0.0, fail: bool = False) -> Any:
        """A business fn: add `delta` to the amount, log `op`, optionally sleep then raise."""

        async def fn(conn: Any) -> str:
            await self.execute(
                conn, f"update {self.private}.busi set amount = amount + ? where id = 1", delta
            )
            await self.execute(conn, f"insert into {self.private}.busi_log (op) values (?)", op)
            if delay:
                await asyncio.sleep(delay)
            if fail:
                raise RuntimeError("business failure")
            return op

        return fn


@pytest_asyncio.fixture(loop_scope="function", params=["mysql", "postgres"])
async def ab(request: pytest.FixtureRequest) -> AsyncIterator[ABackend]:
    private = f"dtm_bt_{uuid.uuid4().hex[:12]}"
    b = ABackend(request.param, private)
    admin: Any
    if b.name == "mysql":
        admin = await asyncmy.connect(**MYSQL, autocommit=True)
        async with admin.cursor() as cur:
            await cur.execute(f"create database {private}")
        seq = "seq int auto_increment primary key"
    else:
        admin = await asyncpg.connect(**POSTGRES)
        await admin.execute(f"create schema {private}")
        seq = "seq serial primary key"
    try:
        conn = await b.connect()
        await create_table(conn, table=b.table)
        await create_table(conn, table=b.table)  # idempotent
        for text in (
            f"create table {private}.busi (id int primary key, amount int not null)",
            f"create table {private}.busi_log ({seq}, op varchar(20) not null)",
            f"insert into {private}.busi (id, amount) values (1, 0)",
        ):
            await b.execute(conn, text)
        if b.name == "mysql":
            await conn.commit()
        yield b
    finally:
        for c in b.opened:
            c.close() if b.name == "mysql" else await c.close()
        if b.name == "mysql":
            async with admin.cursor() as cur:
                await cur.execute(f"drop database {private}")
            admin.close()
        else:
            await admin.execute(f"drop schema {private} cascade")
            await admin.close()


async def test_idempotent_action(ab: ABackend) -> None:
    conn = await ab.connect()
    assert await ab.barrier("action").call(conn, ab.adjust(10, "action")) == "action"
    assert await ab.barrier("action").call(conn, ab.adjust(10, "action")) is None
    assert await ab.amount() == 10
    assert await ab.ops() == ["action"]
    assert await ab.barrier_rows() == 1


async def test_barrier_ids_count_up_per_instance(ab: ABackend) -> None:
    conn = await ab.connect()
    barrier = ab.barrier("action")
    await barrier.call(conn, ab.adjust(1, "a1"))
    await barrier.call(conn, ab.adjust(1, "a2"))
    assert await ab.ops() == ["a1", "a2"]
    assert await ab.barrier_rows() == 2


async def test_null_compensation_then_hanging_action(ab: ABackend) -> None:
    conn = await ab.connect()
    assert await ab.barrier("compensate").call(conn, ab.adjust(-10, "compensate")) is None
    assert await ab.barrier("action").call(conn, ab.adjust(10, "action")) is None
    assert await ab.amount() == 0
    assert await ab.ops() == []
    assert await ab.barrier_rows() == 2


async def test_compensation_after_action(ab: ABackend) -> None:
    conn = await ab.connect()
    await ab.barrier("action").call(conn, ab.adjust(10, "action"))
    await ab.barrier("compensate").call(conn, ab.adjust(-10, "compensate"))
    await ab.barrier("compensate").call(conn, ab.adjust(-10, "compensate"))
    assert await ab.amount() == 0
    assert await ab.ops() == ["action", "compensate"]


async def test_business_exception_rolls_back(ab: ABackend) -> None:
    conn = await ab.connect()
    with pytest.raises(RuntimeError, match="business failure"):
        await ab.barrier("action").call(conn, ab.adjust(10, "action", fail=True))
    assert await ab.amount() == 0
    assert await ab.barrier_rows() == 0
    assert await ab.barrier("action").call(conn, ab.adjust(10, "action")) == "action"
    assert await ab.amount() == 10


async def test_call_refuses_an_open_transaction(ab: ABackend) -> None:
    conn = await ab.connect()
    await ab.execute(conn, "begin")
    with pytest.raises(TransactionStateError):
        await ab.barrier("action").call(conn, ab.adjust(10, "action"))
    with pytest.raises(TransactionStateError):
        await ab.barrier("msg", trans_type="msg").query_prepared(conn)
    await ab.execute(conn, "rollback")


async def test_call_in_transaction_caller_rolls_back(ab: ABackend) -> None:
    conn = await ab.connect()
    await ab.execute(conn, "begin")
    assert await ab.barrier("action").call_in_transaction(conn, ab.adjust(10, "action")) == "action"
    await ab.execute(conn, "rollback")
    assert await ab.amount() == 0
    assert await ab.barrier_rows() == 0


async def test_call_in_transaction_caller_commits(ab: ABackend) -> None:
    conn = await ab.connect()
    if ab.name == "postgres":
        tx = conn.transaction()  # asyncpg's own transaction object
        await tx.start()
    else:
        await conn.begin()
    await ab.execute(conn, f"insert into {ab.private}.busi_log (op) values (?)", "before")
    with pytest.raises(RuntimeError):
        await ab.barrier("action").call_in_transaction(conn, ab.adjust(5, "bad", fail=True))
    assert await ab.barrier("action").call_in_transaction(conn, ab.adjust(10, "action")) == "action"
    await (tx.commit() if ab.name == "postgres" else conn.commit())
    assert await ab.amount() == 10
    assert await ab.ops() == ["before", "action"]
    assert await ab.barrier_rows() == 1


async def test_call_in_transaction_begins_and_leaves_it_open(ab: ABackend) -> None:
    conn = await ab.connect()
    await ab.barrier("action").call_in_transaction(conn, ab.adjust(10, "action"))
    assert await ab.amount() == 0  # not committed yet
    await ab.execute(conn, "commit")
    assert await ab.amount() == 10


async def test_msg_query_prepared_after_commit(ab: ABackend) -> None:
    conn = await ab.connect()
    await ab.barrier("msg", trans_type="msg", branch_id="00").call(conn, ab.adjust(10, "msg"))
    await ab.barrier("msg", trans_type="msg").query_prepared(conn)
    await ab.barrier("msg", trans_type="msg").query_prepared(conn)
    with pytest.raises(DuplicateError):
        await ab.barrier("msg", trans_type="msg", branch_id="00").call(conn, ab.adjust(10, "msg"))
    assert await ab.amount() == 10


async def test_msg_query_prepared_before_local_transaction(ab: ABackend) -> None:
    conn = await ab.connect()
    with pytest.raises(FailureError):
        await ab.barrier("msg", trans_type="msg").query_prepared(conn)
    with pytest.raises(DuplicateError):
        await ab.barrier("msg", trans_type="msg", branch_id="00").call(conn, ab.adjust(10, "msg"))
    assert await ab.amount() == 0
    assert await ab.ops() == []


async def test_same_branch_twice_at_once_runs_once(ab: ABackend) -> None:
    c1, c2 = await ab.connect(), await ab.connect()
    results = await asyncio.gather(
        ab.barrier("action").call(c1, ab.adjust(10, "action", delay=0.3)),
        ab.barrier("action").call(c2, ab.adjust(10, "action", delay=0.3)),
    )
    assert results.count("action") == 1
    assert results.count(None) == 1
    assert await ab.amount() == 10
    assert await ab.ops() == ["action"]


@pytest.mark.parametrize("first", ["action", "compensate"])
async def test_compensation_racing_action_is_consistent(ab: ABackend, first: str) -> None:
    c1, c2 = await ab.connect(), await ab.connect()

    async def action() -> Any:
        if first == "compensate":
            await asyncio.sleep(0.05)
        return await ab.barrier("action").call(c1, ab.adjust(10, "action", delay=0.2))

    async def compensate() -> Any:
        if first == "action":
            await asyncio.sleep(0.05)
        return await ab.barrier("compensate").call(c2, ab.adjust(-10, "compensate", delay=0.2))

    await asyncio.gather(action(), compensate())
    assert await ab.amount() == 0
    expected = [] if first == "compensate" else ["action", "compensate"]
    assert await ab.ops() == expected
    # Late retries change nothing.
    await ab.barrier("action").call(c1, ab.adjust(10, "action"))
    await ab.barrier("compensate").call(c2, ab.adjust(-10, "compensate"))
    assert await ab.amount() == 0


async def test_unknown_connection_is_refused() -> None:
    barrier = AsyncBranchBarrier.from_query(
        {"trans_type": "saga", "gid": "g", "branch_id": "01", "op": "action"}
    )

    async def fn(conn: object) -> None:
        return None

    with pytest.raises(ValueError, match="asyncpg or asyncmy"):
        await barrier.call(object(), fn)
