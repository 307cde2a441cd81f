"""SAGA: move 30 from account 1 to account 2, with compensations.

    python examples/saga.py [--dtm URL] [--fail]

A small Flask bank service runs in a thread on a loopback port the OS picks, its balances in
a throw-away SQLite database. Every branch runs through the sub-transaction barrier, so a
repeated call, a compensation whose action never arrived, or an action arriving after its
compensation does no harm. `--fail` makes TransIn answer FAILURE: the server then runs the
compensations and both balances are back where they started.
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
from dtm.barrier import create_table
from dtm.web.flask import branch_barrier, dtm_branch

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
            raise FailureError("TransIn refused (--fail)")  # 409: the saga rolls back
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
    parser.add_argument("--fail", action="store_true", help="make TransIn fail")
    args = parser.parse_args()

    db = Path(tempfile.mkdtemp()) / "bank.db"
    open_bank(db)
    busi = serve(bank_app(db, fail=args.fail))

    with DtmClient(args.dtm) as client:
        req = {"amount": AMOUNT}
        saga = client.saga(client.new_gid())
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        saga.submit()
        print(f"saga {saga.gid} submitted")
        status = wait_done(client, saga.gid)

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
