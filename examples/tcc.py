"""TCC: move 30 from account 1 to account 2 with Try / Confirm / Cancel.

    python examples/tcc.py [--dtm URL] [--fail]

A small Flask bank service runs in a thread on a loopback port the OS picks, its balances in
a throw-away SQLite database. Try only reserves the amount (`trading`), Confirm applies it to
`balance`, Cancel releases the reservation; each runs through the sub-transaction barrier.
This program is the initiator: `client.tcc()` prepares the global transaction, the try calls
are made from here, and a clean exit of the block submits it (the server confirms every
branch). `--fail` makes TransIn's Try answer FAILURE: the block raises, the transaction is
aborted and the server cancels every branch, so nothing changes.
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

    def run(sql: str, *params: int) -> None:
        """Run `sql` in the barrier's transaction: the change and the barrier row commit
        together or not at all."""
        conn = sqlite3.connect(db)
        try:
            branch_barrier().call(conn, lambda c: c.execute(sql, params))
        finally:
            conn.close()

    def reserve(account: int, delta: int) -> None:
        run("update account set trading = trading + ? where id = ?", delta, account)

    def apply(account: int, delta: int) -> None:
        run(
            "update account set balance = balance + ?, trading = trading - ? where id = ?",
            delta,
            delta,
            account,
        )

    def amount() -> int:
        value: int = request.get_json()["amount"]
        return value

    @app.post("/api/TransOutTry")
    @dtm_branch
    def trans_out_try() -> None:
        reserve(1, -amount())

    @app.post("/api/TransOutConfirm")
    @dtm_branch
    def trans_out_confirm() -> None:
        apply(1, -amount())

    @app.post("/api/TransOutCancel")
    @dtm_branch
    def trans_out_cancel() -> None:
        reserve(1, amount())

    @app.post("/api/TransInTry")
    @dtm_branch
    def trans_in_try() -> None:
        if fail:
            raise FailureError("TransIn refused (--fail)")  # 409: the TCC is aborted
        reserve(2, amount())

    @app.post("/api/TransInConfirm")
    @dtm_branch
    def trans_in_confirm() -> None:
        apply(2, amount())

    @app.post("/api/TransInCancel")
    @dtm_branch
    def trans_in_cancel() -> None:
        reserve(2, -amount())

    return app


def main() -> int:
    args = parse_args(__doc__, "make TransIn's Try fail")
    db = open_bank()
    busi = f"{serve(bank_app(db, fail=args.fail))}/api"

    with DtmClient(args.dtm) as client:
        gid = client.new_gid()
        req = {"amount": AMOUNT}
        try:
            with client.tcc(gid) as tcc:
                tcc.call_branch(
                    req, f"{busi}/TransOutTry", f"{busi}/TransOutConfirm", f"{busi}/TransOutCancel"
                )
                tcc.call_branch(
                    req, f"{busi}/TransInTry", f"{busi}/TransInConfirm", f"{busi}/TransInCancel"
                )
            print(f"tcc {gid} submitted")
        except FailureError as exc:
            print(f"tcc {gid} aborted: {exc}")
        status = wait_done(client, gid)

    return report(db, status, fail=args.fail)


if __name__ == "__main__":
    sys.exit(main())
