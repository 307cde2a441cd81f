"""`Msg.do_and_submit(_db)` against the real server, a business stub for the message's steps,
and the application's own query_prepared endpoint answering from a real SQLite barrier."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from dtm import AsyncDtmClient, DtmClient, FailureError
from dtm.barrier import BranchBarrier, create_table
from dtm.errors import DuplicateError
from tests.harness import DtmServer, Endpoints


@dataclass
class App:
    """The application: a SQLite database and its query_prepared endpoint."""

    path: Path
    url: str = ""
    checks: list[dict[str, list[str]]] = field(default_factory=list)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, check_same_thread=False)

    def amount(self) -> int:
        conn = self.connect()
        try:
            return int(conn.execute("select amount from busi where id = 1").fetchone()[0])
        finally:
            conn.close()

    def deposit(self, conn: sqlite3.Connection, delta: int = 10) -> None:
        conn.execute("update busi set amount = amount + ? where id = 1", (delta,))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    application = App(tmp_path / "app.db")
    conn = application.connect()
    create_table(conn)
    conn.execute("create table busi (id int primary key, amount int not null)")
    conn.execute("insert into busi values (1, 0)")
    conn.commit()
    conn.close()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            application.checks.append(query)
            db = application.connect()
            try:
                BranchBarrier.from_query(query).query_prepared(db)
                status, body = 200, {"dtm_result": "SUCCESS"}
            except FailureError as exc:
                status, body = 409, {"dtm_result": "FAILURE", "message": str(exc)}
            finally:
                db.close()
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    application.url = f"http://127.0.0.1:{server.server_address[1]}/query_prepared"
    yield application
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def client(dtm: DtmServer) -> Iterator[DtmClient]:
    with DtmClient(dtm.api) as c:
        yield c


def test_success_submits_and_calls_the_steps(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    msg = client.msg(gid).add(busi.url("m1"), {"n": 1}).add(busi.url("m2"), {"n": 2})
    conn = app.connect()
    assert msg.do_and_submit_db(app.url, conn, lambda c: app.deposit(c) or "done") == "done"
    dtm.wait_status(gid, "succeed")
    assert busi.wait_calls("m1", 1)[0].json() == {"n": 1}
    assert busi.wait_calls("m2", 1)[0].json() == {"n": 2}
    assert app.amount() == 10
    assert not conn.in_transaction
    assert app.checks == []
    # The check-back finds the committed local transaction.
    BranchBarrier("msg", gid, "00", "msg").query_prepared(conn)


def test_failing_local_transaction_aborts(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    msg = client.msg(gid).add(busi.url("m1"), {})

    def fn(conn: sqlite3.Connection) -> None:
        app.deposit(conn)
        raise RuntimeError("local transaction broke")

    with pytest.raises(RuntimeError, match="broke"):
        msg.do_and_submit_db(app.url, app.connect(), fn)
    # Not a FailureError: the outcome was unknown, so the app's endpoint was asked.
    assert len(app.checks) == 1
    assert app.checks[0]["branch_id"] == ["00"] and app.checks[0]["op"] == ["msg"]
    assert dtm.status(gid) == "failed"
    assert busi.count("m1") == 0
    assert app.amount() == 0


def test_failure_error_aborts_without_asking(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    msg = client.msg(gid).add(busi.url("m1"), {})
    with pytest.raises(FailureError):
        msg.do_and_submit(app.url, lambda bb: (_ for _ in ()).throw(FailureError("no")))
    assert app.checks == []
    assert dtm.status(gid) == "failed"
    assert busi.count("m1") == 0


def test_crash_after_local_commit_submits_via_query_prepared(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    msg = client.msg(gid).add(busi.url("m1"), {"x": 1})
    conn = app.connect()

    def fn(barrier: BranchBarrier) -> None:
        barrier.call(conn, app.deposit)
        raise ConnectionResetError("lost after commit")

    with pytest.raises(ConnectionResetError):
        msg.do_and_submit(app.url, fn)
    assert len(app.checks) == 1
    dtm.wait_status(gid, "succeed")
    assert busi.wait_calls("m1", 1)[0].json() == {"x": 1}
    assert app.amount() == 10


def test_nested_in_an_outer_transaction_commits_once(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    conn = app.connect()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("begin immediate")
    app.deposit(conn, 1)  # the outer transaction's own work
    msg = client.msg(gid).add(busi.url("m1"), {})
    msg.do_and_submit_db(app.url, conn, app.deposit)
    assert conn.in_transaction, "the caller's transaction must still be open"
    assert not [s for s in statements if s.upper().startswith("COMMIT")]
    assert app.amount() == 0
    conn.commit()
    assert [s for s in statements if s.upper().startswith("COMMIT")] == ["COMMIT"]
    assert app.amount() == 11
    dtm.wait_status(gid, "succeed")
    busi.wait_calls("m1", 1)


def test_nested_message_is_not_sent_when_the_outer_transaction_rolls_back(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    conn = app.connect()
    conn.execute("begin immediate")
    msg = client.msg(gid, timeout_to_fail=1).add(busi.url("m1"), {})
    msg.do_and_submit_db(app.url, conn, app.deposit)
    assert dtm.status(gid) == "prepared"  # the caller's transaction decides, not this call
    conn.rollback()
    dtm.wait_status(gid, "failed")  # the server's check-back found nothing committed
    assert busi.calls("m1") == []
    assert app.amount() == 0


def test_repeated_local_transaction_is_a_duplicate(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, app: App, gid: str
) -> None:
    conn = app.connect()
    # The server's check-back came first and marked the local transaction rolled back.
    with pytest.raises(FailureError):
        BranchBarrier("msg", gid, "00", "msg").query_prepared(conn)
    msg = client.msg(gid).add(busi.url("m1"), {})
    # DuplicateError is not a FailureError: the app is asked, says rolled back, and the
    # message is aborted.
    with pytest.raises(DuplicateError):
        msg.do_and_submit_db(app.url, conn, app.deposit)
    assert len(app.checks) == 1
    assert dtm.status(gid) == "failed"
    assert app.amount() == 0


async def test_async_do_and_submit(dtm: DtmServer, busi: Endpoints, app: App, gid: str) -> None:
    conn = app.connect()
    async with AsyncDtmClient(dtm.api) as client:
        msg = client.msg(gid).add(busi.url("m1"), {})

        async def fn(barrier: BranchBarrier) -> int:
            return barrier.call(conn, lambda c: app.deposit(c) or 7) or 0

        assert await msg.do_and_submit(app.url, fn) == 7
        dtm.wait_status(gid, "succeed")
        busi.wait_calls("m1", 1)

        failed = client.msg(f"{gid}-2").add(busi.url("m2"), {})

        async def broken(barrier: BranchBarrier) -> None:
            raise RuntimeError("broke before the local transaction")

        with pytest.raises(RuntimeError):
            await failed.do_and_submit(app.url, broken)
        assert dtm.status(f"{gid}-2") == "failed"

        db = client.msg(f"{gid}-3").add(busi.url("m3"), {})
        assert await db.do_and_submit_db(app.url, conn, lambda c: app.deposit(c) or 3) == 3
        dtm.wait_status(f"{gid}-3", "succeed")
    assert busi.count("m2") == 0
    assert app.amount() == 20
