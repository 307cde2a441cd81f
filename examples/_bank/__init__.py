"""The scaffolding every example shares: the throw-away SQLite bank, serving its app on a
loopback port the OS picks, the command line, waiting for the transaction's final status,
and the printed outcome and exit code; and `bank_app`, the Flask bank of actions with
compensations that saga.py and workflow.py both call. Each example keeps only its mode: the
transaction itself and the branch handlers no other example shares.

A package rather than `_bank.py`, so that `examples/*.py` stays the list of runnable
examples; `from _bank import ...` works because `python examples/x.py` puts `examples/` on
`sys.path`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtm import AsyncDtmClient, DtmClient, FailureError
from dtm.barrier import create_table

if TYPE_CHECKING:
    from flask import Flask

AMOUNT = 30
START = 100
WAIT_LIMIT = 30.0  # seconds to wait for the transaction to finish


def parse_args(
    doc: str, fail_help: str, *, dtm: str = "http://localhost:36789/api/dtmsvr"
) -> argparse.Namespace:
    """`--dtm URL` (default `dtm`) and `--fail`, described by the first line of the
    example's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--dtm", default=dtm)
    parser.add_argument("--fail", action="store_true", help=fail_help)
    return parser.parse_args()


def open_bank() -> Path:
    """A new SQLite database holding accounts 1 and 2 at START each (`trading` is the amount
    a TCC Try has reserved) and the barrier's table; its path."""
    path = Path(tempfile.mkdtemp()) / "bank.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "create table account (id integer primary key,"
            " balance integer not null, trading integer not null default 0)"
        )
        conn.executemany(
            "insert into account (id, balance) values (?, ?)", [(1, START), (2, START)]
        )
    create_table(conn)  # the barrier's own table, in the same database as the balances
    conn.close()
    return path


def bank_app(db: Path, *, fail: bool) -> Flask:
    """The bank's branches over Flask: TransOut and TransIn with their compensations, each
    through the barrier; with `fail`, TransIn answers FAILURE."""
    from flask import Flask, request

    from dtm.web.flask import branch_barrier, dtm_branch

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
            raise FailureError("TransIn refused (--fail)")  # 409: the transaction rolls back
        adjust(2, request.get_json()["amount"])

    @app.post("/api/TransInCompensate")
    @dtm_branch
    def trans_in_compensate() -> None:
        adjust(2, -request.get_json()["amount"])

    return app


def serve(app: Flask) -> str:
    """Serve a Flask `app` in a daemon thread on a free loopback port; its root URL."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def serve_asgi(app: Any) -> str:
    """Serve an ASGI `app` with uvicorn in a daemon thread on a free loopback port; its root
    URL, once the server has started."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}"


def _finished(status: str, deadline: float) -> bool:
    return status in ("succeed", "failed") or time.monotonic() > deadline


def wait_done(client: DtmClient, gid: str) -> str:
    """Poll the server until the transaction has finished; its final status."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        trans = client.query(gid).transaction
        status = trans.status if trans else "unknown"
        if _finished(status, deadline):
            return status
        time.sleep(0.1)


async def wait_done_async(client: AsyncDtmClient, gid: str) -> str:
    """`wait_done` for `AsyncDtmClient`."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        trans = (await client.query(gid)).transaction
        status = trans.status if trans else "unknown"
        if _finished(status, deadline):
            return status
        await asyncio.sleep(0.1)


def report(db: Path, status: str, *, fail: bool) -> int:
    """Print the final status and balances; the exit code: 0 if they are the expected ones
    (moved, or with `--fail` untouched) and nothing is left reserved."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("select id, balance, trading from account order by id").fetchall()
    finally:
        conn.close()
    final = {account: balance for account, balance, _ in rows}
    print(f"status: {status}")
    print(f"balances: {final}")
    if fail:
        expected = ("failed", {1: START, 2: START})
    else:
        expected = ("succeed", {1: START - AMOUNT, 2: START + AMOUNT})
    reserved = any(trading for _, _, trading in rows)
    return 0 if (status, final) == expected and not reserved else 1
