"""Workflow: the bank transfer as a plain Python function whose branches DTM records.

    python examples/workflow.py [--dtm URL] [--fail]

A small Flask bank service runs in a thread on a loopback port the OS picks, its balances in
a throw-away SQLite database, each branch behind the sub-transaction barrier. The workflow
calls TransOut then TransIn, each with an `on_rollback` compensation. `--fail` makes TransIn
answer FAILURE: the workflow function raises `FailureError`, the compensations of the
branches that succeeded run in reverse (TransOutCompensate) and the failure is submitted.

Had this process died mid-way, the server would call `/workflow/callback`, which resumes the
workflow: recorded branch results are replayed instead of called again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.serving import make_server

from dtm import AsyncDtmClient, FailureError
from dtm.barrier import create_table
from dtm.web.flask import branch_barrier, dtm_branch
from dtm.workflow import Phase2, Workflow, Workflows

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


def add_callback(app: Flask, workflows: Workflows, loop: asyncio.AbstractEventLoop) -> None:
    """The route through which the server resumes an unfinished workflow. `Workflows` lives
    on the main thread's event loop, so the call is handed over to it."""

    @app.post("/workflow/callback")
    def workflow_callback() -> Response:
        future = asyncio.run_coroutine_threadsafe(
            workflows.handle_callback_request(dict(request.args), request.get_data()), loop
        )
        status, body = future.result()
        return Response(body, status=status, mimetype="application/json")


def bank_app(db: Path, *, fail: bool) -> Flask:
    app = Flask(__name__)

    def adjust(account: int, delta: int) -> None:
        """Change a balance in the barrier's transaction: the change and the barrier row
        commit together or not at all."""

        def change(conn: sqlite3.Connection) -> None:
            conn.execute("update account set balance = balance + ? where id = ?", (delta, account))

        conn = sqlite3.connect(db)
        try:
            branch_barrier().call(conn, change)
        finally:
            conn.close()

    @app.post("/api/TransOut")
    @dtm_branch
    def trans_out() -> None:
        adjust(1, -request.get_json()["amount"])

    @app.post("/api/TransOutCompensate")
    @dtm_branch
    def trans_out_compensate() -> None:
        adjust(1, request.get_json()["amount"])

    @app.post("/api/TransIn")
    @dtm_branch
    def trans_in() -> None:
        if fail:
            raise FailureError("TransIn refused (--fail)")  # 409: the workflow rolls back
        adjust(2, request.get_json()["amount"])

    @app.post("/api/TransInCompensate")
    @dtm_branch
    def trans_in_compensate() -> None:
        adjust(2, -request.get_json()["amount"])

    return app


def serve(app: Flask) -> str:
    """Serve `app` in a daemon thread on a free loopback port; its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


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
    app = bank_app(db, fail=fail)
    root = serve(app)
    busi = f"{root}/api"
    async with (
        Workflows(dtm, callback_url=f"{root}/workflow/callback") as workflows,
        AsyncDtmClient(dtm) as client,
    ):
        add_callback(app, workflows, asyncio.get_running_loop())

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> bytes:
            req = {"amount": AMOUNT}

            async def undo_out(phase2: Phase2) -> None:
                await phase2.call(f"{busi}/TransOutCompensate", req)

            async def undo_in(phase2: Phase2) -> None:
                await phase2.call(f"{busi}/TransInCompensate", req)

            await wf.call(f"{busi}/TransOut", req, on_rollback=undo_out)  # branch "01"
            await wf.call(f"{busi}/TransIn", req, on_rollback=undo_in)  # branch "02"
            return b"transferred"

        gid = await client.new_gid()
        try:
            result = await workflows.execute("transfer", gid, b"")
            print(f"workflow {gid} finished: {result.decode()}")
        except FailureError as exc:
            print(f"workflow {gid} rolled back: {exc}")
        status = await wait_done(client, gid)

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
