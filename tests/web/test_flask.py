from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from dtm import DtmClient
from dtm.barrier import create_table
from dtm.errors import DuplicateError, FailureError, OngoingError
from dtm.web.flask import (
    branch_barrier,
    dtm_branch,
    dtm_response,
    register_dtm_error_handlers,
    trans_info,
)
from tests.harness import DtmServer
from tests.web.checks import check_all
from tests.web.conftest import serve_wsgi


def checks_app(*, with_handlers: bool) -> Flask:
    """With handlers the views raise straight to Flask; without, `@dtm_branch` answers."""
    app = Flask(__name__)
    if with_handlers:
        register_dtm_error_handlers(app)

    @app.post("/info")
    def info() -> ResponseReturnValue:
        return jsonify(dataclasses.asdict(trans_info()))

    @app.post("/barrier")
    def barrier() -> ResponseReturnValue:
        b = branch_barrier(dialect="sqlite")
        return {"trans_type": b.trans_type, "gid": b.gid, "branch_id": b.branch_id, "op": b.op}

    @app.post("/ok")
    @dtm_branch
    def ok() -> None:
        return None

    @app.post("/fail")
    @dtm_branch
    def fail() -> None:
        raise FailureError("no money")

    @app.post("/ongoing")
    @dtm_branch
    def ongoing() -> None:
        raise OngoingError("later")

    @app.post("/dup")
    @dtm_branch
    def dup() -> None:
        raise DuplicateError("again")

    @app.post("/boom")
    @dtm_branch
    def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.mark.parametrize("with_handlers", [True, False])
def test_answers_over_http(with_handlers: bool) -> None:
    with serve_wsgi(checks_app(with_handlers=with_handlers)) as base:
        check_all(base)


def test_error_handlers_without_decorator() -> None:
    app = Flask(__name__)
    register_dtm_error_handlers(app)

    @app.post("/fail")
    def fail() -> ResponseReturnValue:
        raise FailureError("no money")

    with serve_wsgi(app) as base:
        resp = requests.post(f"{base}/fail", timeout=10)
        assert resp.status_code == 409
        assert resp.json() == {"dtm_result": "FAILURE", "message": "no money"}


def test_dtm_branch_passes_other_returns_through() -> None:
    app = Flask(__name__)

    @app.get("/text")
    @dtm_branch
    def text() -> ResponseReturnValue:
        return "plain", 202

    with app.test_client() as client:
        resp = client.get("/text")
        assert (resp.status_code, resp.text) == (202, "plain")
    with app.test_request_context(), pytest.raises(KeyError):
        dtm_response(KeyError("k"))


# --- end to end: a saga whose branches a Flask app serves, on sqlite3 with the barrier ------


class Bank:
    """Two accounts in one SQLite file; every branch op runs through the barrier."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[dict[str, Any]] = []
        with self.connect() as conn:
            conn.execute("create table account (id integer primary key, balance integer)")
            conn.executemany("insert into account values (?, ?)", [(1, 100), (2, 0)])
        conn.close()
        conn = self.connect()
        create_table(conn)
        conn.close()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def balances(self) -> dict[int, int]:
        conn = self.connect()
        try:
            return dict(conn.execute("select id, balance from account").fetchall())
        finally:
            conn.close()

    def barrier_ops(self, gid: str) -> list[tuple[str, str, str]]:
        """(branch_id, op, reason) of the gid's barrier rows, in insertion order."""
        conn = self.connect()
        try:
            rows = conn.execute(
                "select branch_id, op, reason from barrier where gid = ? order by id", (gid,)
            ).fetchall()
            return [(str(b), str(o), str(r)) for b, o, r in rows]
        finally:
            conn.close()

    def app(self) -> Flask:
        app = Flask(__name__)
        register_dtm_error_handlers(app)

        def move(account: int, delta: int) -> None:
            self.seen.append(dataclasses.asdict(trans_info()))
            body = request.get_json()

            def apply(conn: sqlite3.Connection) -> None:
                if body.get("fail"):
                    raise FailureError("refused as programmed")
                (balance,) = conn.execute(
                    "select balance from account where id = ?", (account,)
                ).fetchone()
                if balance + delta < 0:
                    raise FailureError("insufficient balance")
                conn.execute(
                    "update account set balance = balance + ? where id = ?", (delta, account)
                )

            conn = self.connect()
            try:
                branch_barrier().call(conn, apply)
            finally:
                conn.close()

        @app.post("/TransOut")
        @dtm_branch
        def trans_out() -> None:
            move(1, -request.get_json()["amount"])

        @app.post("/TransOutCompensate")
        @dtm_branch
        def trans_out_compensate() -> None:
            move(1, request.get_json()["amount"])

        @app.post("/TransIn")
        @dtm_branch
        def trans_in() -> None:
            move(2, request.get_json()["amount"])

        @app.post("/TransInCompensate")
        @dtm_branch
        def trans_in_compensate() -> None:
            move(2, -request.get_json()["amount"])

        return app


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[tuple[Bank, str]]:
    bank = Bank(tmp_path / "bank.db")
    with serve_wsgi(bank.app()) as base:
        yield bank, base


def test_saga_succeeds(dtm: DtmServer, bank: tuple[Bank, str], gid: str) -> None:
    service, base = bank
    with DtmClient(dtm.api) as client:
        client.saga(gid).add(f"{base}/TransOut", f"{base}/TransOutCompensate", {"amount": 30}).add(
            f"{base}/TransIn", f"{base}/TransInCompensate", {"amount": 30}
        ).submit()
    dtm.wait_status(gid, "succeed")
    assert service.balances() == {1: 70, 2: 30}
    assert service.seen[0] == {
        "gid": gid,
        "trans_type": "saga",
        "branch_id": "01",
        "op": "action",
        "dtm": "",
        "phase2_url": "",
    }
    assert [(s["branch_id"], s["op"]) for s in service.seen] == [
        ("01", "action"),
        ("02", "action"),
    ]
    assert service.barrier_ops(gid) == [("01", "action", "action"), ("02", "action", "action")]


def test_saga_fails_and_compensates(dtm: DtmServer, bank: tuple[Bank, str], gid: str) -> None:
    service, base = bank
    with DtmClient(dtm.api) as client:
        client.saga(gid).add(f"{base}/TransOut", f"{base}/TransOutCompensate", {"amount": 30}).add(
            f"{base}/TransIn", f"{base}/TransInCompensate", {"amount": 30, "fail": True}
        ).submit()
    dtm.wait_status(gid, "failed")
    # TransOut was undone by its compensation. TransIn's action rolled back with its barrier
    # rows, so DTM's compensation of branch 02 found no action row: it inserted one itself
    # (reason "compensate") and was skipped as a null compensation, changing nothing.
    assert service.balances() == {1: 100, 2: 0}
    assert service.barrier_ops(gid) == [
        ("01", "action", "action"),
        ("02", "action", "compensate"),
        ("02", "compensate", "compensate"),
        ("01", "compensate", "compensate"),
    ]
    statuses = {(b["branch_id"], b["op"]): b["status"] for b in dtm.query(gid)["branches"]}
    assert statuses[("02", "action")] == "failed"
    assert statuses[("01", "compensate")] == "succeed"
