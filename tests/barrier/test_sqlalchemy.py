"""The barrier on SQLAlchemy `Connection` and `Session`, over real SQLite, MariaDB and
PostgreSQL (the `backend` fixture's private tables, reached through SQLAlchemy engines)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from dtm.barrier import BranchBarrier
from dtm.barrier import sqlalchemy as sa_barrier
from dtm.errors import DuplicateError, FailureError
from tests.barrier.conftest import Backend

_URLS = {"sqlite": "sqlite://", "mysql": "mysql+pymysql://", "postgres": "postgresql+psycopg://"}


@pytest.fixture
def engine(backend: Backend) -> Iterator[Engine]:
    eng = create_engine(_URLS[backend.name], creator=backend.connect_fn)
    yield eng
    eng.dispose()


def bb(backend: Backend, gid: str, op: str = "action", **kw: Any) -> BranchBarrier:
    return BranchBarrier("saga", gid, "01", op, table=backend.table, **kw)


def new_gid() -> str:
    return f"gid-{uuid.uuid4().hex}"


def deposit(backend: Backend, delta: int = 10) -> Callable[[Any], str]:
    def fn(bind: Any) -> str:
        bind.execute(
            text(f"update {backend.busi} set amount = amount + :d where id = 1"), {"d": delta}
        )
        return "done"

    return fn


def failing(backend: Backend) -> Callable[[Any], str]:
    def fn(bind: Any) -> str:
        deposit(backend)(bind)
        raise RuntimeError("business failed")

    return fn


def test_connection_without_transaction_is_owned_and_committed(
    backend: Backend, engine: Engine
) -> None:
    gid = new_gid()
    with engine.connect() as conn:
        assert sa_barrier.call(bb(backend, gid), conn, deposit(backend)) == "done"
        assert not conn.in_transaction()
        assert sa_barrier.call(bb(backend, gid), conn, deposit(backend)) is None
    assert backend.amount() == 10
    assert backend.barrier_rows() == 1


def test_owned_transaction_rolled_back_on_error(backend: Backend, engine: Engine) -> None:
    gid = new_gid()
    with Session(engine) as session:
        with pytest.raises(RuntimeError):
            sa_barrier.call(bb(backend, gid), session, failing(backend))
        assert not session.in_transaction()
        assert sa_barrier.call(bb(backend, gid), session, deposit(backend)) == "done"
    assert backend.amount() == 10


def test_caller_managed_session_is_not_committed(backend: Backend, engine: Engine) -> None:
    gid = new_gid()
    with Session(engine) as session:
        session.execute(text("select 1"))  # the session autobegins: the caller's transaction
        assert session.in_transaction()
        assert sa_barrier.call(bb(backend, gid), session, deposit(backend)) == "done"
        assert session.in_transaction()
        assert backend.amount() == 0  # nothing committed behind the caller's back
        session.rollback()
    assert backend.amount() == 0
    assert backend.barrier_rows() == 0
    with Session(engine) as session, session.begin():
        session.execute(text("select 1"))
        sa_barrier.call(bb(backend, gid), session, deposit(backend))
    assert backend.amount() == 10
    assert backend.barrier_rows() == 1


def test_nested_savepoint_rolled_back_on_error(backend: Backend, engine: Engine) -> None:
    gid = new_gid()
    with Session(engine) as session:
        session.begin()
        deposit(backend, 1)(session)  # the caller's own work survives the failed branch
        with pytest.raises(RuntimeError):
            sa_barrier.call(bb(backend, gid), session, failing(backend))
        assert session.in_transaction()
        assert sa_barrier.call(bb(backend, gid), session, deposit(backend, 100)) == "done"
        session.commit()
    assert backend.amount() == 101
    assert backend.barrier_rows() == 1


def test_connection_in_callers_transaction_uses_a_savepoint(
    backend: Backend, engine: Engine
) -> None:
    gid = new_gid()
    with engine.connect() as conn:
        with conn.begin():
            sa_barrier.call(bb(backend, gid, "compensate"), conn, deposit(backend))
            assert backend.amount() == 0
        # The compensation came first: null compensation, and the late action is skipped.
        assert sa_barrier.call(bb(backend, gid, "action"), conn, deposit(backend)) is None
    assert backend.amount() == 0
    assert backend.barrier_rows() == 2


def test_query_prepared(backend: Backend, engine: Engine) -> None:
    committed, lost = new_gid(), new_gid()
    msg = BranchBarrier("msg", committed, "00", "msg", table=backend.table)
    with Session(engine) as session:
        sa_barrier.call(msg, session, deposit(backend))
    sa_barrier.query_prepared(msg, engine)
    lost_msg = BranchBarrier("msg", lost, "00", "msg", table=backend.table)
    with engine.connect() as conn:
        with pytest.raises(FailureError):
            sa_barrier.query_prepared(lost_msg, conn)
        with pytest.raises(DuplicateError):
            sa_barrier.call(lost_msg, conn, deposit(backend))
    assert backend.amount() == 10


def test_create_table_is_idempotent(backend: Backend, engine: Engine) -> None:
    sa_barrier.create_table(engine, table=backend.table)
    with engine.connect() as conn:
        sa_barrier.create_table(conn, table=backend.table)
