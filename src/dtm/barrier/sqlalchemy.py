"""The sub-transaction barrier on a SQLAlchemy `Connection` or ORM `Session`.

The semantics are `BranchBarrier.call`'s; what differs is who owns the transaction, which
SQLAlchemy already knows:

- the caller has one open (`session.in_transaction()` / `connection.in_transaction()`):
  the barrier works inside a savepoint (`begin_nested`) and never commits; on an exception
  only the savepoint is rolled back and the caller's transaction stays usable;
- none is open: the barrier begins one, commits it, or rolls it back on an exception.

The dialect comes from the engine (`sqlite`, `mysql`/`mariadb`, `postgresql`); the SQL is
the barrier's own (`dtm.barrier._dialect`) run through `text()` with bound parameters.

    from dtm.barrier import BranchBarrier
    from dtm.barrier import sqlalchemy as sa_barrier

    bb = BranchBarrier.from_query(request.query_params, table="dtm_barrier.barrier")
    sa_barrier.call(bb, session, lambda s: s.add(Order(...)))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, TypeVar

from sqlalchemy import CursorResult, Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from dtm.barrier._barrier import _MSG_BARRIER_ID, _ORIGIN_OP, BranchBarrier, TransactionStateError
from dtm.barrier._dialect import (
    BARRIER_COLUMNS,
    Dialect,
    begin,
    in_transaction,
    insert_barrier_sql,
    select_reason_sql,
    vendor_dialect,
)
from dtm.errors import DuplicateError, FailureError
from dtm.protocol.consts import CHECKBACK_BRANCH_ID, OP_MSG, OP_ROLLBACK

__all__ = ["call", "create_table", "query_prepared"]

logger = logging.getLogger(__name__)

Bind = Connection | Session
B = TypeVar("B", Connection, Session)
T = TypeVar("T")

_INSERT_MARKS: Final = tuple(f":{column}" for column in BARRIER_COLUMNS)
_SELECT_MARKS: Final = (":gid", ":branch_id", ":op", ":barrier_id")


def call(barrier: BranchBarrier, bind: B, fn: Callable[[B], T]) -> T | None:
    """Run `fn(bind)` at most once for `barrier`'s branch op, on a `Connection` or `Session`.

    Inside the caller's transaction the barrier rows and `fn` run in a savepoint and nothing
    is committed; otherwise the barrier owns (begins and commits) the transaction. On any
    exception the savepoint or transaction is rolled back and the exception re-raised, so a
    retry runs `fn` again. Returns `fn`'s result, or None when the barrier skipped it
    (repeat, hanging action, null compensation); op "msg" repeated raises DuplicateError.
    """
    if bind.in_transaction():
        # The driver's transaction must be open before the savepoint (see `_open`).
        dialect = _open(barrier, bind)
        with bind.begin_nested():
            return _run(barrier, bind, fn, dialect)
    with bind.begin():
        return _run(barrier, bind, fn, _open(barrier, bind))


def query_prepared(barrier: BranchBarrier, bind: Engine | Connection | Session) -> None:
    """A message's check-back (`BranchBarrier.query_prepared`) in a transaction of its own.

    Raises FailureError when the message's local transaction rolled back (and now never
    will commit); returns when it committed. Refuses a connection or session that has a
    transaction open (TransactionStateError), since this commits.
    """
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            query_prepared(barrier, conn)
        return
    if bind.in_transaction():
        raise TransactionStateError(
            f"{barrier}: query_prepared commits its own transaction; the bind has one open"
        )
    with bind.begin():
        dialect = _open(barrier, bind)
        table = dialect.table_name(barrier.table)
        key = {
            "gid": barrier.gid,
            "branch_id": CHECKBACK_BRANCH_ID,
            "op": OP_MSG,
            "barrier_id": _MSG_BARRIER_ID,
        }
        _insert(bind, dialect, table, barrier.trans_type, *key.values(), OP_ROLLBACK)
        reason = bind.execute(text(select_reason_sql(table, _SELECT_MARKS)), key).scalar()
    logger.debug("%s: query_prepared reason %r", barrier, reason)
    if reason == OP_ROLLBACK:
        raise FailureError(f"{barrier}: the message's local transaction rolled back")


def create_table(
    bind: Engine | Connection, *, dialect: str | None = None, table: str | None = None
) -> None:
    """Create the barrier table (and its schema) if missing, in a transaction of its own."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            create_table(conn, dialect=dialect, table=table)
        return
    if bind.in_transaction():
        raise TransactionStateError("create_table commits; the connection has a transaction open")
    found = vendor_dialect(bind.dialect.name, dialect)
    with bind.begin():
        for statement in found.ddl(table).split(";"):
            if statement.strip():
                bind.exec_driver_sql(statement)


def _open(barrier: BranchBarrier, bind: Bind) -> Dialect:
    """The barrier's dialect; makes sure the driver really has a transaction open.

    pysqlite opens SQLite's transaction only before a write, so a savepoint taken first
    would begin it and its release would commit it, behind the caller's back. An explicit
    BEGIN (the dialect's: IMMEDIATE on SQLite) on the driver connection prevents that;
    SQLAlchemy's commit or rollback still ends it.
    """
    conn = bind.connection() if isinstance(bind, Session) else bind
    dialect = vendor_dialect(conn.dialect.name, barrier.dialect)
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and in_transaction(dbapi) is False:
        begin(dbapi, dialect)
    return dialect


def _insert(bind: Bind, dialect: Dialect, table: str, *values: str) -> int:
    sql = text(insert_barrier_sql(dialect, table, _INSERT_MARKS))
    result = bind.execute(sql, dict(zip(BARRIER_COLUMNS, values, strict=True)))
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _run(barrier: BranchBarrier, bind: B, fn: Callable[[B], T], dialect: Dialect) -> T | None:
    """`BranchBarrier._run` over SQLAlchemy: insert the rows, run `fn` if they allow."""
    barrier.barrier_id += 1
    bid = f"{barrier.barrier_id:02d}"
    table = dialect.table_name(barrier.table)
    head = (barrier.trans_type, barrier.gid, barrier.branch_id)
    origin_op = _ORIGIN_OP.get(barrier.op)
    origin_added = 0
    if origin_op is not None:
        origin_added = _insert(bind, dialect, table, *head, origin_op, bid, barrier.op)
    current_added = _insert(bind, dialect, table, *head, barrier.op, bid, barrier.op)
    logger.debug("%s: origin added %d, current added %d", barrier, origin_added, current_added)
    if barrier.op == OP_MSG and current_added == 0:
        raise DuplicateError(f"{barrier}: the message's local transaction already ran")
    if origin_added > 0 or current_added == 0:
        logger.debug("%s: skipped (null compensation, repeat or hanging)", barrier)
        return None
    return fn(bind)
