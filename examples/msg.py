"""2-phase message: TransOut in a local transaction, TransIn delivered as the message.

    python examples/msg.py [--dtm URL] [--fail]

A small Flask bank service runs in a thread on a loopback port the OS picks, its balances in
a throw-away SQLite database. This program prepares the message, runs TransOut as a local
transaction guarded by the barrier (branch "00", op "msg"), then submits: the server delivers
TransIn until it succeeds. Had this program died between its commit and the submit, the
server would ask QueryPrepared, which reads the same barrier, whether the local transaction
committed.

A message cannot be rolled back once submitted (a failing TransIn is retried, not
compensated), so `--fail` makes the local TransOut fail instead: its change is rolled back,
the message is never submitted, and the server's check-back (after `timeout_to_fail`) finds
it rolled back and fails the message; TransIn is never called.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

from flask import Flask, request
from werkzeug.serving import make_server

from dtm import DtmClient, FailureError
from dtm.barrier import BranchBarrier, create_table
from dtm.web.flask import branch_barrier, dtm_branch

AMOUNT = 30
START = 100
WAIT_LIMIT = 30.0  # seconds to wait for the transaction to finish
CHECK_BACK_AFTER = 3  # seconds before the server asks QueryPrepared


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


def adjust(
    db: Path, barrier: BranchBarrier, account: int, delta: int, *, fail: bool = False
) -> None:
    """Change a balance in the barrier's transaction: the change and the barrier row commit
    together or not at all."""

    def change(conn: sqlite3.Connection) -> None:
        conn.execute("update account set balance = balance + ? where id = ?", (delta, account))
        if fail:
            raise FailureError("TransOut refused (--fail)")  # rolls the update back too

    conn = sqlite3.connect(db)
    try:
        barrier.call(conn, change)
    finally:
        conn.close()


def bank_app(db: Path) -> Flask:
    app = Flask(__name__)

    @app.post("/api/TransIn")
    @dtm_branch
    def trans_in() -> None:
        adjust(db, branch_barrier(), 2, request.get_json()["amount"])

    @app.get("/api/QueryPrepared")
    @dtm_branch
    def query_prepared() -> None:
        """The server's check-back: None (SUCCESS) if the local transaction committed,
        FailureError (FAILURE) if it did not and now never will."""
        conn = sqlite3.connect(db)
        try:
            branch_barrier().query_prepared(conn)
        finally:
            conn.close()

    return app


def serve(app: Flask) -> str:
    """Serve `app` in a daemon thread on a free loopback port; its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/api"


def wait_done(client: DtmClient, gid: str) -> str:
    """Poll the server until the transaction has finished; its final status."""
    deadline = time.monotonic() + WAIT_LIMIT
    while True:
        trans = client.query(gid).transaction
        status = trans.status if trans else "unknown"
        if status in ("succeed", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtm", default="http://localhost:36789/api/dtmsvr")
    parser.add_argument("--fail", action="store_true", help="make the local TransOut fail")
    args = parser.parse_args()

    db = Path(tempfile.mkdtemp()) / "bank.db"
    open_bank(db)
    busi = serve(bank_app(db))

    with DtmClient(args.dtm) as client:
        msg = client.msg(client.new_gid(), timeout_to_fail=CHECK_BACK_AFTER)
        msg.add(f"{busi}/TransIn", {"amount": AMOUNT})
        msg.prepare(f"{busi}/QueryPrepared")
        # The local transaction's barrier: what QueryPrepared reads back.
        local = BranchBarrier("msg", msg.gid, "00", "msg")
        try:
            adjust(db, local, 1, -AMOUNT, fail=args.fail)
        except FailureError as exc:
            print(f"msg {msg.gid} not submitted: {exc}")
        else:
            msg.submit()
            print(f"msg {msg.gid} submitted")
        status = wait_done(client, msg.gid)

    final = balances(db)
    print(f"status: {status}")
    print(f"balances: {final}")
    if args.fail:
        expected = ("failed", {1: START, 2: START})
    else:
        expected = ("succeed", {1: START - AMOUNT, 2: START + AMOUNT})
    return 0 if (status, final) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
