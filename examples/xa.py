"""XA: move 30 from account 1 to account 2 with the database's own two-phase commit.

    python examples/xa.py [--dtm URL] [--fail]

Needs MariaDB (or MySQL) at 127.0.0.1:3306, user root without a password, database `test`
(the `MYSQL` settings below): SQLite has no XA. A small Flask bank service runs in a thread on
a loopback port the OS picks, its balances in a throw-away table. Each branch runs its
update in an XA transaction and leaves it prepared (`dtm.xa.xa_branch`); when the
initiator's `client.xa()` block ends cleanly the server commits both, otherwise it rolls
back the prepared ones. `--fail` makes TransIn answer FAILURE: TransOut's prepared update is
rolled back and both balances stay where they were.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pymysql
from _bank import AMOUNT, START, parse_args, serve, wait_done
from flask import Flask, request

from dtm import DtmClient, FailureError, XaBranchInfo
from dtm.web.flask import dtm_branch
from dtm.xa import xa_branch

MYSQL: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 3306,
    "user": "root",
    "password": "",
    "database": "test",
}


def connect() -> pymysql.Connection[Any]:
    return pymysql.connect(**MYSQL)


def run(sql: str) -> list[Any]:
    """One statement outside any branch, committed; its rows."""
    with connect() as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = list(cur.fetchall())
        conn.commit()
        return rows


def bank_app(client: DtmClient, table: str, *, fail: bool) -> Flask:
    app = Flask(__name__)

    def adjust(account: int, sign: int) -> None:
        """Serve one XA branch call: the update prepared (op "action"), then committed or
        rolled back when the server calls again (ops "commit", "rollback")."""
        info = XaBranchInfo.from_query(request.args)

        def update(conn: pymysql.Connection[Any]) -> None:
            delta = sign * int(request.get_json()["amount"])
            with conn.cursor() as cur:
                cur.execute(
                    f"update {table} set balance = balance + %s where id = %s", (delta, account)
                )

        xa_branch(client, info, connect, update)

    @app.post("/api/TransOutXa")
    @dtm_branch
    def trans_out() -> None:
        adjust(1, -1)

    @app.post("/api/TransInXa")
    @dtm_branch
    def trans_in() -> None:
        if fail and request.args.get("op") == "action":
            raise FailureError("TransIn refused (--fail)")  # 409: the XA is aborted
        adjust(2, 1)

    return app


def main() -> int:
    args = parse_args(__doc__, "make TransIn fail")
    table = f"test.xa_bank_{uuid.uuid4().hex[:8]}"
    run(f"create table {table} (id int primary key, balance int not null)")
    run(f"insert into {table} values (1, {START}), (2, {START})")
    try:
        with DtmClient(args.dtm) as client:
            busi = f"{serve(bank_app(client, table, fail=args.fail))}/api"
            gid = client.new_gid()
            req = {"amount": AMOUNT}
            try:
                with client.xa(gid) as xa:
                    xa.call_branch(req, f"{busi}/TransOutXa")
                    xa.call_branch(req, f"{busi}/TransInXa")
                print(f"xa {gid} submitted")
            except FailureError as exc:
                print(f"xa {gid} aborted: {exc}")
            status = wait_done(client, gid)
        final = {int(i): int(b) for i, b in run(f"select id, balance from {table} order by id")}
    finally:
        run(f"drop table {table}")

    print(f"status: {status}")
    print(f"balances: {final}")
    moved = {1: START - AMOUNT, 2: START + AMOUNT}
    expected = ("failed", {1: START, 2: START}) if args.fail else ("succeed", moved)
    return 0 if (status, final) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
