"""The blocking XA manager (`dtm.xa`) over PyMySQL on MariaDB and psycopg on PostgreSQL."""

from __future__ import annotations

from typing import Any, cast

import psycopg
import pytest

from dtm.client import DtmClient, XaBranchInfo
from dtm.errors import FailureError, OngoingError
from dtm.xa import TransactionStateError, xa_branch, xa_commit, xa_id, xa_local, xa_rollback
from tests.xa.conftest import Db


class Boom(Exception):
    pass


def prepare(db: Db, gid: str, row_id: int = 1) -> None:
    """Prepare an insert of `row_id` under (gid, "01") on a connection closed afterwards (on
    MariaDB a prepared xid stays bound to its session until it disconnects)."""
    conn = db.connect_fn()
    try:
        assert xa_local(conn, gid, "01", db.insert(row_id)) == row_id
    finally:
        conn.close()


def test_xid_is_gid_dash_branch_id() -> None:
    assert xa_id("gid-1", "01") == "gid-1-01"


def test_action_prepares_and_commit_makes_it_visible(db: Db) -> None:
    gid = db.gid()
    prepare(db, gid)
    assert db.ids() == [], "a prepared change is invisible to other sessions"
    assert db.prepared() == [f"{gid}-01"]

    xa_commit(db.connect(), gid, "01")
    assert db.ids() == [1]
    assert db.prepared() == []


def test_rollback_discards_the_prepared_change(db: Db) -> None:
    gid = db.gid()
    prepare(db, gid)
    xa_rollback(db.connect(), gid, "01")
    assert db.ids() == []
    assert db.prepared() == []


@pytest.mark.parametrize("phase2", [xa_commit, xa_rollback])
def test_phase2_twice_is_success(db: Db, phase2: Any) -> None:
    gid = db.gid()
    prepare(db, gid)
    conn = db.connect()
    phase2(conn, gid, "01")
    phase2(conn, gid, "01")
    phase2(db.connect(), gid, "01")
    assert db.ids() == ([1] if phase2 is xa_commit else [])


@pytest.mark.parametrize("phase2", [xa_commit, xa_rollback])
def test_phase2_of_a_never_prepared_xid_is_success(db: Db, phase2: Any) -> None:
    phase2(db.connect(), db.gid(), "01")
    assert db.prepared() == []


def test_fn_raising_rolls_back_and_leaves_the_connection_usable(db: Db) -> None:
    gid = db.gid()
    conn = db.connect()

    def fail(c: Any) -> None:
        db.insert(1)(c)
        raise Boom

    with pytest.raises(Boom):
        xa_local(conn, gid, "01", fail)
    assert db.prepared() == []
    assert db.ids() == []
    # The same connection takes the next branch.
    assert xa_local(conn, gid, "02", db.insert(2)) == 2
    conn.close()
    xa_commit(db.connect(), gid, "02")
    assert db.ids() == [2]


def test_a_failing_statement_in_fn_rolls_back(db: Db) -> None:
    gid = db.gid()
    with pytest.raises(Exception, match=r"(?i)duplicate"):
        xa_local(db.connect(), gid, "01", lambda c: (db.insert(1)(c), db.insert(1)(c)))
    assert db.prepared() == []
    assert db.ids() == []


def test_a_connection_inside_a_transaction_is_refused(db: Db) -> None:
    conn = db.connect()
    cur = conn.cursor()
    if db.name == "mysql":
        conn.begin()
    cur.execute(f"select count(*) from {db.table}")  # psycopg opens a transaction here
    gid = db.gid()
    with pytest.raises(TransactionStateError, match="transaction open"):
        xa_local(conn, gid, "01", db.insert(1))
    with pytest.raises(TransactionStateError):
        xa_commit(conn, gid, "01")
    conn.rollback()
    assert db.prepared() == []


def test_psycopg_autocommit_is_restored(postgres_db: Db) -> None:
    db = postgres_db
    conn: psycopg.Connection[Any] = db.connect()
    gid = db.gid()
    xa_local(conn, gid, "01", db.insert(1))
    assert conn.autocommit is False
    xa_commit(conn, gid, "01")  # PostgreSQL frees the session at PREPARE: it can commit
    assert conn.autocommit is False
    assert db.ids() == [1]


def test_mysql_xid_still_bound_to_its_session_is_ongoing_not_done(mysql_db: Db) -> None:
    """MariaDB answers XAER_NOTA to another session while the preparing one lives: that
    must not pass for "already committed"."""
    db = mysql_db
    gid = db.gid()
    holder = db.connect_fn()
    xa_local(holder, gid, "01", db.insert(1))
    with pytest.raises(OngoingError, match="still bound"):
        xa_commit(db.connect(), gid, "01")
    holder.close()
    xa_commit(db.connect(), gid, "01")
    assert db.ids() == [1]


def test_an_xid_too_long_for_mysql_is_refused(mysql_db: Db) -> None:
    with pytest.raises(ValueError, match="at most 64"):
        xa_local(mysql_db.connect(), "g" * 70, "01", mysql_db.insert(1))


def test_a_gid_with_quotes_and_backslashes_is_quoted(db: Db) -> None:
    gid = db.gid() + "'\\x"
    prepare(db, gid)
    assert db.prepared() == [f"{gid}-01"]
    xa_commit(db.connect(), gid, "01")
    assert db.ids() == [1]


class StubClient:
    """`DtmClient.register_xa_branch` only: records, or fails."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.registered: list[XaBranchInfo] = []

    def register_xa_branch(self, info: XaBranchInfo) -> None:
        if self.error is not None:
            raise self.error
        self.registered.append(info)


def info(gid: str, op: str) -> XaBranchInfo:
    query = {"gid": gid, "branch_id": "01", "op": op, "phase2_url": "http://x/p2"}
    return XaBranchInfo.from_query(query)


def test_branch_handler_prepares_registers_then_commits(db: Db) -> None:
    gid = db.gid()
    stub = StubClient()
    client = cast(DtmClient, stub)
    assert xa_branch(client, info(gid, "action"), db.connect, db.insert(1)) == 1
    assert [i.branch_id for i in stub.registered] == ["01"]
    assert db.prepared() == [f"{gid}-01"]
    assert all(c.closed for c in db.opened if db.name == "postgres")

    assert xa_branch(client, info(gid, "commit"), db.connect, db.insert(9)) is None
    assert xa_branch(client, info(gid, "commit"), db.connect, db.insert(9)) is None
    assert db.ids() == [1]


def test_branch_handler_rolls_back_when_registering_fails(db: Db) -> None:
    gid = db.gid()
    client = cast(DtmClient, StubClient(FailureError("transaction aborted")))
    with pytest.raises(FailureError, match="aborted"):
        xa_branch(client, info(gid, "action"), db.connect, db.insert(1))
    assert db.prepared() == []
    assert db.ids() == []


def test_branch_handler_rollback_op(db: Db) -> None:
    gid = db.gid()
    client = cast(DtmClient, StubClient())
    xa_branch(client, info(gid, "action"), db.connect, db.insert(1))
    xa_branch(client, info(gid, "rollback"), db.connect, db.insert(9))
    xa_branch(client, info(gid, "rollback"), db.connect, db.insert(9))
    assert db.prepared() == []
    assert db.ids() == []


def test_branch_handler_refuses_other_ops_and_actions_without_phase2_url(db: Db) -> None:
    client = cast(DtmClient, StubClient())
    with pytest.raises(ValueError, match="not an XA branch op"):
        xa_branch(client, info(db.gid(), "try"), db.connect, db.insert(1))
    bare = XaBranchInfo.from_query({"gid": db.gid(), "branch_id": "01", "op": "action"})
    with pytest.raises(ValueError, match="no phase2_url"):
        xa_branch(client, bare, db.connect, db.insert(1))
    assert db.opened == [], "refused before opening a connection"
