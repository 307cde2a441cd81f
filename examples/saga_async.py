"""SAGA with asyncio: the bank transfer of saga.py over AsyncDtmClient and Starlette.

    python examples/saga_async.py [--dtm URL] [--fail]

A small Starlette bank service runs under uvicorn in a thread on a loopback port the OS
picks, its balances in a throw-away SQLite database, each branch behind the sub-transaction
barrier. `--fail` makes TransIn answer FAILURE: the server runs the compensations and both
balances are back where they started.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from _bank import AMOUNT, open_bank, parse_args, report, serve_asgi, wait_done_async
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dtm import AsyncDtmClient, FailureError
from dtm.web.starlette import add_dtm_exception_handlers, branch_barrier, success


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


async def run(dtm: str, *, fail: bool) -> int:
    db = open_bank()
    busi = f"{serve_asgi(bank_app(db, fail=fail))}/api"

    async with AsyncDtmClient(dtm) as client:
        req = {"amount": AMOUNT}
        saga = client.saga(await client.new_gid())
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        await saga.submit()
        print(f"saga {saga.gid} submitted")
        status = await wait_done_async(client, saga.gid)

    return report(db, status, fail=fail)


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail")
    return asyncio.run(run(args.dtm, fail=args.fail))


if __name__ == "__main__":
    sys.exit(main())
