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

import sqlite3
import sys
from pathlib import Path

from _bank import AMOUNT, open_bank, parse_args, report, serve, wait_done
from flask import Flask, request

from dtm import DtmClient, FailureError
from dtm.barrier import BranchBarrier
from dtm.web.flask import branch_barrier, dtm_branch

CHECK_BACK_AFTER = 3  # seconds before the server asks QueryPrepared


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


def main() -> int:
    args = parse_args(__doc__, "make the local TransOut fail")
    db = open_bank()
    busi = f"{serve(bank_app(db))}/api"

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

    return report(db, status, fail=args.fail)


if __name__ == "__main__":
    sys.exit(main())
