"""SAGA with asyncio: the bank transfer of saga.py over AsyncDtmClient and Starlette.

    python examples/saga_async.py [--dtm URL] [--fail]

A small Starlette bank service runs under uvicorn in a thread on a loopback port the OS
picks, its balances in a throw-away SQLite database, each branch behind the sub-transaction
barrier. `--fail` makes TransIn answer FAILURE: the server runs the compensations and both
balances are back where they started.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dtm import AsyncDtmClient, FailureError
from dtm.barrier import create_table
from dtm.web.starlette import add_dtm_exception_handlers, branch_barrier, success

AMOUNT = 30
START = 100
WAIT_LIMIT = 30.0  # seconds to wait for the transaction to finish


def open_bank(path: Path) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("create table account (id integer primary key, balance integer not null)")
        conn.executemany("insert into account values (?, ?)", [(1, START), (2, START)])
    create_table(conn)  # the barrier's own table, in the same database as the balances
    conn.close()


def balances(path: Path) -> dict[int, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("select id, balance from account order by id").fetchall())
    finally:
        conn.close()


def bank_app(db: Path, *, fail: bool) -> Starlette:
    def adjust(request: Request, account: int, delta: int) -> None:
        """Change a balance in the barrier's transaction: the change and the barrier row
        commit together or not at all. (SQLite is quick enough to call from the event loop
        here; a real service would use a thread or an async driver.)"""

        def change(conn: sqlite3.Connection) -> None:
            conn.execute("update account set balance = balance + ? where id = ?", (delta, account))

        conn = sqlite3.connect(db)
        try:
            branch_barrier(request).call(conn, change)
        finally:
            conn.close()

    async def amount(request: Request) -> int:
        value: int = (await request.json())["amount"]
        return value

    async def trans_out(request: Request) -> JSONResponse:
        adjust(request, 1, -await amount(request))
        return JSONResponse(success())

    async def trans_out_compensate(request: Request) -> JSONResponse:
        adjust(request, 1, await amount(request))
        return JSONResponse(success())

    async def trans_in(request: Request) -> JSONResponse:
        if fail:
            raise FailureError("TransIn refused (--fail)")  # 409: the saga rolls back
        adjust(request, 2, await amount(request))
        return JSONResponse(success())

    async def trans_in_compensate(request: Request) -> JSONResponse:
        adjust(request, 2, -await amount(request))
        return JSONResponse(success())

    app = Starlette(
        routes=[
            Route("/api/TransOut", trans_out, methods=["POST"]),
            Route("/api/TransOutCompensate", trans_out_compensate, methods=["POST"]),
            Route("/api/TransIn", trans_in, methods=["POST"]),
            Route("/api/TransInCompensate", trans_in_compensate, methods=["POST"]),
        ]
    )
    add_dtm_exception_handlers(app)  # FailureError -> 409 FAILURE, OngoingError -> 425
    return app


def serve(app: Starlette) -> str:
    """Serve `app` with uvicorn in a daemon thread on a free loopback port; its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}/api"


async def wait_done(client: AsyncDtmClient, gid: str) -> str:
    """Poll the server until the transaction has finished; its final status."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        trans = (await client.query(gid)).transaction
        status = trans.status if trans else "unknown"
        if status in ("succeed", "failed") or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


async def run(dtm: str, *, fail: bool) -> int:
    db = Path(tempfile.mkdtemp()) / "bank.db"
    open_bank(db)
    busi = serve(bank_app(db, fail=fail))

    async with AsyncDtmClient(dtm) as client:
        req = {"amount": AMOUNT}
        saga = client.saga(await client.new_gid())
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        await saga.submit()
        print(f"saga {saga.gid} submitted")
        status = await wait_done(client, saga.gid)

    final = balances(db)
    print(f"status: {status}")
    print(f"balances: {final}")
    if fail:
        expected = ("failed", {1: START, 2: START})
    else:
        expected = ("succeed", {1: START - AMOUNT, 2: START + AMOUNT})
    return 0 if (status, final) == expected else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtm", default="http://localhost:36789/api/dtmsvr")
    parser.add_argument("--fail", action="store_true", help="make TransIn fail")
    args = parser.parse_args()
    return asyncio.run(run(args.dtm, fail=args.fail))


if __name__ == "__main__":
    sys.exit(main())
