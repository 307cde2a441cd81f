"""SAGA: move 30 from account 1 to account 2, with compensations.

    python examples/saga.py [--dtm URL] [--fail]

A small Flask bank service runs in a thread on a loopback port the OS picks, its balances in
a throw-away SQLite database. Every branch runs through the sub-transaction barrier, so a
repeated call, a compensation whose action never arrived, or an action arriving after its
compensation does no harm. `--fail` makes TransIn answer FAILURE: the server then runs the
compensations and both balances are back where they started.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from _bank import AMOUNT, open_bank, parse_args, report, serve, wait_done
from flask import Flask, request

from dtm import DtmClient, FailureError
from dtm.web.flask import branch_barrier, dtm_branch


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


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail")
    db = open_bank()
    busi = f"{serve(bank_app(db, fail=args.fail))}/api"

    with DtmClient(args.dtm) as client:
        req = {"amount": AMOUNT}
        saga = client.saga(client.new_gid())
        saga.add(f"{busi}/TransOut", f"{busi}/TransOutCompensate", req)
        saga.add(f"{busi}/TransIn", f"{busi}/TransInCompensate", req)
        saga.submit()
        print(f"saga {saga.gid} submitted")
        status = wait_done(client, saga.gid)

    return report(db, status, fail=args.fail)


if __name__ == "__main__":
    sys.exit(main())
