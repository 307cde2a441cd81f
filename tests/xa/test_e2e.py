"""A whole XA global transaction through a real DTM server: a Starlette bank whose two
branches use `dtm.xa.aio.xa_branch` on MariaDB or PostgreSQL, the initiator `DtmClient.xa()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncmy
import asyncpg
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dtm.client import AsyncDtmClient, DtmClient, XaBranchInfo
from dtm.errors import FailureError
from dtm.web.starlette import add_dtm_exception_handlers, success
from dtm.xa.aio import xa_branch
from tests.harness import DtmServer
from tests.xa.conftest import MYSQL, Db


def bank(dtm: DtmServer, db: Db, *, fail_in: bool) -> Starlette:
    """TransOut takes the amount from account 1, TransIn adds it to account 2 (or answers
    FAILURE with `fail_in`); each in the branch's XA transaction."""

    async def connect() -> Any:
        if db.name == "mysql":
            params = {k: v for k, v in MYSQL.items() if k != "database"}
            return await asyncmy.connect(**params, db=MYSQL["database"])
        return await asyncpg.connect(
            host="127.0.0.1", port=db.port, user="postgres", database="postgres"
        )

    def move(account: int, sign: int) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            info = XaBranchInfo.from_query(request.query_params)
            amount = int((await request.json())["amount"]) if info.op == "action" else 0
            if fail_in and sign > 0 and info.op == "action":
                raise FailureError("TransIn refused")

            async def update(conn: Any) -> None:
                sql = (
                    f"update {db.table} set amount = amount + {sign * amount} where id = {account}"
                )
                if db.name == "mysql":
                    async with conn.cursor() as cur:
                        await cur.execute(sql)
                else:
                    await conn.execute(sql)

            async with AsyncDtmClient(dtm.api) as client:
                await xa_branch(client, info, connect, update)
            return JSONResponse(success())

        return endpoint

    app = Starlette(
        routes=[
            Route("/TransOut", move(1, -1), methods=["POST"]),
            Route("/TransIn", move(2, 1), methods=["POST"]),
        ]
    )
    add_dtm_exception_handlers(app)
    return app


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def balances(db: Db) -> dict[int, int]:
    return {int(r[0]): int(r[1]) for r in db.run(f"select id, amount from {db.table} order by id")}


@pytest.mark.parametrize("fail_in", [False, True], ids=["commit", "rollback"])
def test_transfer(dtm: DtmServer, db: Db, fail_in: bool) -> None:
    db.run(f"insert into {db.table} (id, amount) values (1, 100), (2, 100)")
    gid = db.gid()
    with serve(bank(dtm, db, fail_in=fail_in)) as busi, DtmClient(dtm.api) as client:
        if fail_in:
            with pytest.raises(FailureError), client.xa(gid) as xa:
                xa.call_branch({"amount": 30}, f"{busi}/TransOut")
                assert db.prepared() == [f"{gid}-01"]
                xa.call_branch({"amount": 30}, f"{busi}/TransIn")
            dtm.wait_status(gid, "failed")
            assert balances(db) == {1: 100, 2: 100}
        else:
            with client.xa(gid) as xa:
                xa.call_branch({"amount": 30}, f"{busi}/TransOut")
                xa.call_branch({"amount": 30}, f"{busi}/TransIn")
                assert db.prepared() == [f"{gid}-01", f"{gid}-02"]
                assert balances(db) == {1: 100, 2: 100}, "prepared, not yet visible"
            dtm.wait_status(gid, "succeed")
            assert balances(db) == {1: 70, 2: 130}
    assert db.prepared() == []
