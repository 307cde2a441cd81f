"""The asyncio XA manager (`dtm.xa.aio`) over asyncmy on MariaDB and asyncpg on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncmy
import asyncpg
import pytest
import pytest_asyncio

from dtm.client import AsyncDtmClient, XaBranchInfo
from dtm.errors import FailureError, OngoingError
from dtm.xa import TransactionStateError
from dtm.xa.aio import xa_branch, xa_commit, xa_local, xa_rollback
from tests.xa.conftest import MYSQL, Db


class Boom(Exception):
    pass


class Async:
    """Async connections to a test's database, closed at teardown."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.opened: list[Any] = []

    async def connect(self) -> Any:
        conn: Any
        if self.db.name == "mysql":
            params = {k: v for k, v in MYSQL.items() if k != "database"}
            conn = await asyncmy.connect(**params, db=MYSQL["database"])
        else:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=self.db.port, user="postgres", database="postgres"
            )
        self.opened.append(conn)
        return conn

    async def execute(self, conn: Any, sql: str) -> None:
        if self.db.name == "mysql":
            async with conn.cursor() as cur:
                await cur.execute(sql)
        else:
            await conn.execute(sql)

    def insert(self, row_id: int) -> Callable[[Any], Awaitable[int]]:
        async def fn(conn: Any) -> int:
            sql = f"insert into {self.db.table} (id, amount) values ({row_id}, 0)"
            await self.execute(conn, sql)
            return row_id

        return fn

    async def close(self) -> None:
        opened, self.opened = self.opened, []
        for conn in opened:
            if self.db.name == "mysql":
                conn.close()
            else:
                await conn.close()


@pytest_asyncio.fixture(loop_scope="function")
async def adb(db: Db) -> AsyncIterator[Async]:
    a = Async(db)
    yield a
    await a.close()


async def prepare(a: Async, gid: str, row_id: int = 1) -> None:
    conn = await a.connect()
    assert await xa_local(conn, gid, "01", a.insert(row_id)) == row_id
    if a.db.name == "mysql":
        await conn.ensure_closed()  # MariaDB: the xid is bound to its session until then
    else:
        await conn.close()


async def test_action_prepares_and_commit_makes_it_visible(adb: Async) -> None:
    db = adb.db
    gid = db.gid()
    await prepare(adb, gid)
    assert db.ids() == []
    assert db.prepared() == [f"{gid}-01"]
    await xa_commit(await adb.connect(), gid, "01")
    assert db.ids() == [1]


async def test_rollback_discards_the_prepared_change(adb: Async) -> None:
    db = adb.db
    gid = db.gid()
    await prepare(adb, gid)
    await xa_rollback(await adb.connect(), gid, "01")
    assert db.ids() == []
    assert db.prepared() == []


@pytest.mark.parametrize("op", ["commit", "rollback"])
async def test_phase2_twice_and_of_unknown_xids_is_success(adb: Async, op: str) -> None:
    phase2 = xa_commit if op == "commit" else xa_rollback
    gid = adb.db.gid()
    await prepare(adb, gid)
    conn = await adb.connect()
    await phase2(conn, gid, "01")
    await phase2(conn, gid, "01")
    await phase2(conn, adb.db.gid(), "01")  # never prepared
    assert adb.db.ids() == ([1] if op == "commit" else [])


async def test_fn_raising_rolls_back(adb: Async) -> None:
    db = adb.db
    gid = db.gid()
    conn = await adb.connect()

    async def fail(c: Any) -> None:
        await adb.insert(1)(c)
        raise Boom

    with pytest.raises(Boom):
        await xa_local(conn, gid, "01", fail)
    assert db.prepared() == []
    assert db.ids() == []
    assert await xa_local(conn, gid, "02", adb.insert(2)) == 2  # the connection is usable
    await adb.close()  # MariaDB: a session holding a prepared xid can run nothing else
    await xa_rollback(await adb.connect(), gid, "02")
    assert db.prepared() == []


async def test_a_connection_inside_a_transaction_is_refused(adb: Async) -> None:
    conn = await adb.connect()
    await adb.execute(conn, "begin")
    gid = adb.db.gid()
    with pytest.raises(TransactionStateError, match="transaction open"):
        await xa_local(conn, gid, "01", adb.insert(1))
    with pytest.raises(TransactionStateError):
        await xa_rollback(conn, gid, "01")
    await adb.execute(conn, "rollback")
    assert adb.db.prepared() == []


async def test_mysql_xid_still_bound_to_its_session_is_ongoing(mysql_db: Db) -> None:
    a = Async(mysql_db)
    gid = mysql_db.gid()
    holder = await a.connect()
    await xa_local(holder, gid, "01", a.insert(1))
    with pytest.raises(OngoingError):
        await xa_commit(await a.connect(), gid, "01")
    await holder.ensure_closed()
    await xa_commit(await a.connect(), gid, "01")
    assert mysql_db.ids() == [1]
    await a.close()


class StubClient:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.registered: list[XaBranchInfo] = []

    async def register_xa_branch(self, info: XaBranchInfo) -> None:
        if self.error is not None:
            raise self.error
        self.registered.append(info)


def info(gid: str, op: str) -> XaBranchInfo:
    query = {"gid": gid, "branch_id": "01", "op": op, "phase2_url": "http://x/p2"}
    return XaBranchInfo.from_query(query)


async def test_branch_handler_action_commit_rollback(adb: Async) -> None:
    db = adb.db
    stub = StubClient()
    client = cast(AsyncDtmClient, stub)
    gid = db.gid()
    assert await xa_branch(client, info(gid, "action"), adb.connect, adb.insert(1)) == 1
    assert len(stub.registered) == 1
    assert db.prepared() == [f"{gid}-01"]
    await xa_branch(client, info(gid, "commit"), adb.connect, adb.insert(9))
    await xa_branch(client, info(gid, "commit"), adb.connect, adb.insert(9))
    assert db.ids() == [1]

    other = db.gid()
    await xa_branch(client, info(other, "action"), adb.connect, adb.insert(2))
    await xa_branch(client, info(other, "rollback"), adb.connect, adb.insert(9))
    assert db.ids() == [1]
    assert db.prepared() == []


async def test_branch_handler_rolls_back_when_registering_fails(adb: Async) -> None:
    client = cast(AsyncDtmClient, StubClient(FailureError("transaction aborted")))
    with pytest.raises(FailureError):
        await xa_branch(client, info(adb.db.gid(), "action"), adb.connect, adb.insert(1))
    assert adb.db.prepared() == []
    assert adb.db.ids() == []
