"""The barrier's semantics against real sqlite3, MariaDB (PyMySQL) and PostgreSQL (psycopg)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import dtm
from dtm.barrier import BranchBarrier, TransactionStateError, ddl
from dtm.errors import DuplicateError, FailureError
from tests.barrier.conftest import Backend

Fn = Callable[[Any], str]


def new_gid() -> str:
    return f"gid-{uuid.uuid4().hex}"


def barrier(backend: Backend, gid: str, op: str, trans_type: str = "saga") -> BranchBarrier:
    return BranchBarrier.from_query(
        {"trans_type": trans_type, "gid": gid, "branch_id": "01", "op": op}, table=backend.table
    )


class Business:
    """Business functions that change `busi` and log their op; counts their runs."""

    def __init__(self, backend: Backend, *, hold: float = 0.0) -> None:
        self.backend = backend
        self.hold = hold
        self.runs: list[str] = []
        self._lock = threading.Lock()

    def op(self, op: str, delta: int) -> Fn:
        def fn(conn: Any) -> str:
            with self._lock:
                self.runs.append(op)
            cur = conn.cursor()
            cur.execute(
                self.backend.sql(
                    f"update {self.backend.busi} set amount = amount + ? where id = 1"
                ),
                (delta,),
            )
            cur.execute(self.backend.sql(f"insert into {self.backend.log} (op) values (?)"), (op,))
            if self.hold:
                time.sleep(self.hold)  # hold the barrier row's lock while a racer waits
            return op

        return fn

    def failing(self, op: str) -> Fn:
        def fn(conn: Any) -> str:
            self.op(op, 10)(conn)
            raise RuntimeError("business failed")

        return fn


def test_action_runs_once_when_called_twice(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) == "action"
    assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) is None
    assert busi.runs == ["action"]
    assert backend.amount() == 10


def test_barrier_ids_count_per_instance(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    first = barrier(backend, gid, "action")
    first.call(conn, busi.op("a1", 1))
    first.call(conn, busi.op("a2", 2))
    retry = barrier(backend, gid, "action")
    retry.call(conn, busi.op("a1", 1))
    retry.call(conn, busi.op("a2", 2))
    assert busi.runs == ["a1", "a2"]
    assert backend.amount() == 3


def test_null_compensation_then_hanging_action(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    assert barrier(backend, gid, "compensate").call(conn, busi.op("compensate", -10)) is None
    assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) is None
    assert busi.runs == []
    assert backend.amount() == 0


def test_tcc_cancel_before_try_is_null(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    assert barrier(backend, gid, "cancel", "tcc").call(conn, busi.op("cancel", -10)) is None
    assert barrier(backend, gid, "try", "tcc").call(conn, busi.op("try", 10)) is None
    assert busi.runs == []


def test_compensation_after_action_runs_once(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    barrier(backend, gid, "action").call(conn, busi.op("action", 10))
    barrier(backend, gid, "compensate").call(conn, busi.op("compensate", -10))
    barrier(backend, gid, "compensate").call(conn, busi.op("compensate", -10))
    assert busi.runs == ["action", "compensate"]
    assert backend.amount() == 0
    assert backend.ops() == ["action", "compensate"]


def test_business_exception_rolls_back_and_retry_runs(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    with pytest.raises(RuntimeError, match="business failed"):
        barrier(backend, gid, "action").call(conn, busi.failing("action"))
    assert backend.barrier_rows() == 0
    assert backend.amount() == 0
    assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) == "action"
    assert backend.amount() == 10


def test_call_refuses_an_open_transaction(backend: Backend) -> None:
    busi = Business(backend)
    conn = backend.connect()
    cur = conn.cursor()
    cur.execute(backend.sql(f"insert into {backend.log} (op) values (?)"), ("caller",))
    with pytest.raises(TransactionStateError):
        barrier(backend, new_gid(), "action").call(conn, busi.op("action", 10))
    conn.rollback()
    assert backend.ops() == []
    assert busi.runs == []


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_caller_managed_transaction_decides(backend: Backend, outcome: str) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    cur = conn.cursor()
    cur.execute(backend.sql(f"insert into {backend.log} (op) values (?)"), ("caller",))
    result = barrier(backend, gid, "action").call_in_transaction(conn, busi.op("action", 10))
    assert result == "action"
    # Nothing is committed behind the caller's back: another connection sees nothing yet.
    assert backend.barrier_rows() == 0
    assert backend.ops() == []
    getattr(conn, outcome)()
    if outcome == "commit":
        assert backend.ops() == ["caller", "action"]
        assert backend.barrier_rows() == 1
        assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) is None
        assert busi.runs == ["action"]
    else:
        assert backend.ops() == []
        assert backend.barrier_rows() == 0
        assert barrier(backend, gid, "action").call(conn, busi.op("action", 10)) == "action"
        assert busi.runs == ["action", "action"]


def test_caller_managed_exception_rolls_back_to_the_savepoint(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    cur = conn.cursor()
    cur.execute(backend.sql(f"insert into {backend.log} (op) values (?)"), ("caller",))
    with pytest.raises(RuntimeError, match="business failed"):
        barrier(backend, gid, "action").call_in_transaction(conn, busi.failing("action"))
    # The caller's transaction is still usable and keeps its own work only.
    cur = conn.cursor()
    cur.execute(backend.sql(f"insert into {backend.log} (op) values (?)"), ("after",))
    conn.commit()
    assert backend.ops() == ["caller", "after"]
    assert backend.barrier_rows() == 0
    assert backend.amount() == 0


def test_caller_managed_without_open_transaction_leaves_it_open(backend: Backend) -> None:
    busi = Business(backend)
    conn = backend.connect()
    barrier(backend, new_gid(), "action").call_in_transaction(conn, busi.op("action", 10))
    assert backend.barrier_rows() == 0
    conn.commit()
    assert backend.barrier_rows() == 1
    assert backend.amount() == 10


def test_msg_repeat_is_duplicate(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    assert barrier(backend, gid, "msg", "msg").call(conn, busi.op("msg", 10)) == "msg"
    with pytest.raises(DuplicateError):
        barrier(backend, gid, "msg", "msg").call(conn, busi.op("msg", 10))
    assert busi.runs == ["msg"]


def _msg_barrier(backend: Backend, gid: str) -> BranchBarrier:
    # A message's check-back and its local transaction use branch "00", op "msg".
    return BranchBarrier("msg", gid, "00", "msg", table=backend.table)


def test_query_prepared_after_local_commit_succeeds(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    _msg_barrier(backend, gid).call(conn, busi.op("msg", 10))
    _msg_barrier(backend, gid).query_prepared(conn)
    _msg_barrier(backend, gid).query_prepared(conn)


def test_query_prepared_without_local_commit_fails_it_for_good(backend: Backend) -> None:
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    with pytest.raises(FailureError):
        _msg_barrier(backend, gid).query_prepared(conn)
    # The late local transaction now finds the rollback row and is refused.
    with pytest.raises(DuplicateError):
        _msg_barrier(backend, gid).call(conn, busi.op("msg", 10))
    with pytest.raises(FailureError):
        _msg_barrier(backend, gid).query_prepared(conn)
    assert busi.runs == []
    assert backend.amount() == 0


def _race(backend: Backend, calls: list[tuple[BranchBarrier, Fn]]) -> list[BaseException]:
    """Run each call on its own connection and thread, all released at once."""
    start = threading.Barrier(len(calls))
    errors: list[BaseException] = []
    conns = [backend.connect() for _ in calls]

    def worker(conn: Any, bb: BranchBarrier, fn: Fn) -> None:
        start.wait()
        try:
            bb.call(conn, fn)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(conn, bb, fn))
        for conn, (bb, fn) in zip(conns, calls, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_same_branch_twice_at_once_runs_once(backend: Backend) -> None:
    for _ in range(5):
        busi = Business(backend, hold=0.05)
        gid = new_gid()
        # One BranchBarrier per request, as a server builds them: two deliveries of one call.
        calls = [(barrier(backend, gid, "action"), busi.op("action", 1)) for _ in range(2)]
        errors = _race(backend, calls)
        assert errors == []
        assert busi.runs == ["action"]
    assert backend.amount() == 5


def test_compensation_racing_its_action_stays_consistent(backend: Backend) -> None:
    seen = set()
    for i in range(12):
        busi = Business(backend)
        gid = new_gid()
        before = len(backend.ops())
        calls = [
            (barrier(backend, gid, "action"), busi.op("action", 10)),
            (barrier(backend, gid, "compensate"), busi.op("compensate", -10)),
        ]
        errors = _race(backend, calls if i % 2 else calls[::-1])
        assert errors == []
        ops = backend.ops()[before:]
        # Either the action was applied then compensated, or the compensation was null
        # and the late action skipped; never one without the other.
        assert ops in ([], ["action", "compensate"])
        assert sorted(busi.runs) == sorted(ops)
        assert backend.amount() == 0
        seen.add(tuple(ops))
    assert seen


def test_ddl_and_exports() -> None:
    assert "drop" not in ddl("mysql")
    assert "create database if not exists dtm_barrier" in ddl("mysql")
    assert "create schema if not exists dtm_barrier" in ddl("postgres")
    assert "create table if not exists barrier" in ddl("sqlite")
    assert "create table if not exists s.t" in ddl("postgres", table="s.t")
    with pytest.raises(ValueError, match="invalid barrier table name"):
        ddl("mysql", table="x; drop table y")
    with pytest.raises(ValueError, match="unknown barrier dialect"):
        ddl("oracle")
    assert dtm.BranchBarrier is BranchBarrier


def test_invalid_trans_info_and_unknown_driver() -> None:
    with pytest.raises(ValueError, match="invalid barrier trans info"):
        BranchBarrier.from_query({"gid": "g", "branch_id": "01", "op": "action"})
    bb = BranchBarrier.from_query(
        {"trans_type": ["saga"], "gid": ["g"], "branch_id": ["01"], "op": ["action"]}
    )
    assert (bb.trans_type, bb.op) == ("saga", "action")
    with pytest.raises(ValueError, match="pass dialect="):
        bb.call(object(), lambda conn: None)  # type: ignore[type-var]


def test_autocommit_connections(backend: Backend) -> None:
    """A connection in the driver's autocommit mode still gets one transaction per call."""
    busi = Business(backend)
    gid = new_gid()
    conn = backend.connect()
    if backend.name == "sqlite":
        conn.isolation_level = None
    elif backend.name == "mysql":
        conn.autocommit(True)
    else:
        conn.autocommit = True
    with pytest.raises(RuntimeError, match="business failed"):
        barrier(backend, gid, "action").call(conn, busi.failing("action"))
    assert backend.barrier_rows() == 0
    assert backend.amount() == 0
    barrier(backend, gid, "action").call(conn, busi.op("action", 10))
    barrier(backend, gid, "action").call(conn, busi.op("action", 10))
    assert backend.amount() == 10
    barrier(backend, gid, "compensate").call_in_transaction(conn, busi.op("compensate", -10))
    assert backend.amount() == 10  # the savepoint's transaction waits for the caller
    conn.commit()
    assert backend.amount() == 0
