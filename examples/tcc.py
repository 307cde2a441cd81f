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
        conn.execute(
            "create table account (id integer primary key,"
            " balance integer not null, trading integer not null default 0)"
        )
        conn.executemany(
            "insert into account (id, balance) values (?, ?)", [(1, START), (2, START)]
        )
    create_table(conn)  # the barrier's own table, in the same database as the balances
    conn.close()


def accounts(path: Path) -> dict[int, tuple[int, int]]:
    """Balance and reserved (trading) amount of each account."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("select id, balance, trading from account order by id").fetchall()
    finally:
        conn.close()
    return {account: (balance, trading) for account, balance, trading in rows}


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
    parser.add_argument("--fail", action="store_true", help="make TransIn's Try fail")
    args = parser.parse_args()

    db = Path(tempfile.mkdtemp()) / "bank.db"
    open_bank(db)
    busi = serve(bank_app(db, fail=args.fail))

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

    final = accounts(db)
    print(f"status: {status}")
    print(f"balances: { {account: balance for account, (balance, _) in final.items()} }")
    if args.fail:
        expected = ("failed", {1: (START, 0), 2: (START, 0)})
    else:
        expected = ("succeed", {1: (START - AMOUNT, 0), 2: (START + AMOUNT, 0)})
    return 0 if (status, final) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
