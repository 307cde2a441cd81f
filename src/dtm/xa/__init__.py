"""XA branches: the local side of an XA global transaction, as upstream's XaLocalTransaction.

A branch runs its change inside a database transaction named after the branch (the xid
`<gid>-<branch_id>`) and leaves it *prepared*; the server later tells it to commit or roll
back. These functions drive that over a DB-API connection: PyMySQL (MySQL/MariaDB
`XA START ... XA PREPARE`) or psycopg 3 (PostgreSQL `BEGIN ... PREPARE TRANSACTION`, which
needs `max_prepared_transactions` > 0). `dtm.xa.aio` does the same over asyncmy and asyncpg.

    @app.post("/api/TransOutXa")
    def trans_out() -> Response:
        info = XaBranchInfo.from_query(request.args)
        xa_branch(client, info, connect, lambda c: c.cursor().execute(...))

On MySQL/MariaDB a prepared transaction stays bound to the session that prepared it until
that session disconnects: the session can run nothing else, and another session's
`XA COMMIT` is told the xid is unknown. So `xa_branch` opens a connection of its own for
each call (`connect`) and closes it before registering the branch, as upstream does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from dtm.barrier import TransactionStateError
from dtm.barrier._dialect import detect_dialect, in_transaction
from dtm.client import DtmClient, XaBranchInfo
from dtm.errors import OngoingError
from dtm.protocol.consts import OP_COMMIT, OP_ROLLBACK
from dtm.xa._sql import XaStatements, check_action, is_unknown_xid, recovered, statements, xa_id

__all__ = [
    "TransactionStateError",
    "xa_branch",
    "xa_commit",
    "xa_id",
    "xa_local",
    "xa_rollback",
]

logger = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")


class _Closeable(Protocol):
    """A connection `xa_branch` opens, and closes when done with it."""

    def close(self) -> None: ...


K = TypeVar("K", bound=_Closeable)


def xa_local(
    conn: C, gid: str, branch_id: str, fn: Callable[[C], T], *, dialect: str | None = None
) -> T:
    """Run `fn(conn)` in the branch's XA transaction and prepare it; `fn`'s result.

    `fn` must neither commit nor roll back. Any exception (from `fn` or the prepare) rolls
    the transaction back and propagates. Refuses, with TransactionStateError, a connection
    with a transaction open: the XA transaction must hold all of the branch's work and
    nothing else. `dialect` ("mysql", "postgres") overrides the detection from the
    connection's driver. On MySQL, close `conn` afterwards (see the module's docstring).
    """
    sql = _statements(conn, gid, branch_id, dialect)
    _refuse_open_transaction(conn, f"xa_local of {gid}/{branch_id}")
    # psycopg would send a BEGIN of its own before ours; with autocommit on it sends none,
    # and the explicit BEGIN ... PREPARE TRANSACTION is the whole transaction.
    with _autocommit(conn, only_psycopg=True):
        _execute(conn, *sql.start)
        try:
            result = fn(conn)
            _execute(conn, *sql.prepare)
        except BaseException:
            _abort(conn, sql)
            raise
    logger.debug("xa %s-%s prepared", gid, branch_id)
    return result


def xa_commit(conn: Any, gid: str, branch_id: str, *, dialect: str | None = None) -> None:
    """Commit the branch's prepared transaction; done already (or never prepared) is success,
    since the server may send a commit twice. On MySQL, OngoingError while the session that
    prepared it is still connected: the database cannot tell that xid from an unknown one."""
    _phase2(conn, gid, branch_id, OP_COMMIT, dialect)


def xa_rollback(conn: Any, gid: str, branch_id: str, *, dialect: str | None = None) -> None:
    """Roll the branch's prepared transaction back; an xid the database does not know
    (already rolled back, or never prepared) is success."""
    _phase2(conn, gid, branch_id, OP_ROLLBACK, dialect)


def xa_branch(
    client: DtmClient,
    info: XaBranchInfo,
    connect: Callable[[], K],
    fn: Callable[[K], T],
    *,
    dialect: str | None = None,
) -> T | None:
    """Serve one call of an XA branch endpoint: the whole of upstream's XaLocalTransaction.

    Op "action": `xa_local` on a new connection from `connect`, closed once prepared, then
    register the branch with the server (only a prepared branch is ever registered, so the
    server never commits a branch that could not prepare); if registering fails, the
    prepared transaction is rolled back and the error propagates. Returns `fn`'s result.
    Ops "commit" and "rollback" (the server's calls to `phase2_url`): `xa_commit` /
    `xa_rollback` on a new connection; returns None.
    """
    if info.op in (OP_COMMIT, OP_ROLLBACK):
        with contextlib.closing(connect()) as conn:
            _phase2(conn, info.gid, info.branch_id, info.op, dialect)
        return None
    check_action(info)
    with contextlib.closing(connect()) as conn:
        result = xa_local(conn, info.gid, info.branch_id, fn, dialect=dialect)
    try:
        client.register_xa_branch(info)
    except BaseException:
        try:
            with contextlib.closing(connect()) as conn:
                xa_rollback(conn, info.gid, info.branch_id, dialect=dialect)
        except Exception:
            logger.exception(
                "xa %s-%s: registering failed and so did rolling back; it stays prepared",
                info.gid,
                info.branch_id,
            )
        raise
    return result


def _statements(conn: Any, gid: str, branch_id: str, dialect: str | None) -> XaStatements:
    return statements(detect_dialect(conn, dialect).name, xa_id(gid, branch_id))


def _refuse_open_transaction(conn: Any, what: str) -> None:
    if in_transaction(conn):
        raise TransactionStateError(
            f"{what}: the connection has a transaction open; commit or roll it back first "
            "(on MySQL a session holding a prepared xid has one: use another connection)"
        )


def _phase2(conn: Any, gid: str, branch_id: str, op: str, dialect: str | None) -> None:
    sql = _statements(conn, gid, branch_id, dialect)
    xid = xa_id(gid, branch_id)
    _refuse_open_transaction(conn, f"xa {op} of {xid}")
    # MariaDB answers XAER_OUTSIDE to XA COMMIT with autocommit off, PostgreSQL refuses
    # COMMIT PREPARED inside the transaction psycopg would open.
    with _autocommit(conn, only_psycopg=False):
        try:
            _execute(conn, sql.commit if op == OP_COMMIT else sql.rollback)
        except Exception as exc:
            if not is_unknown_xid(exc):
                raise
            if sql.recover is not None and recovered(_fetchall(conn, sql.recover), xid):
                raise OngoingError(
                    f"xa {op} of {xid}: prepared but still bound to the session that "
                    "prepared it; retry once that session has disconnected"
                ) from exc
            logger.debug("xa %s of %s: not prepared (done already, or never)", op, xid)


def _abort(conn: Any, sql: XaStatements) -> None:
    """Undo a transaction that failed before it was prepared; the caller re-raises its error,
    so errors here (an XA END already done, a lost connection) are only logged."""
    for statement in sql.abort:
        try:
            _execute(conn, statement)
        except Exception as exc:
            logger.debug("xa abort: %s failed: %r", statement, exc)


@contextlib.contextmanager
def _autocommit(conn: Any, *, only_psycopg: bool) -> Iterator[None]:
    """Autocommit on for the duration, then as it was (checked idle by the caller)."""
    get_mode = getattr(conn, "get_autocommit", None)
    if callable(get_mode) and not only_psycopg:  # PyMySQL and mysqlclient: a method pair
        before = bool(get_mode())
        if not before:
            conn.autocommit(True)
        try:
            yield
        finally:
            if not before:
                conn.autocommit(False)
        return
    if isinstance(getattr(conn, "autocommit", None), bool):  # psycopg: a property
        before = conn.autocommit
        conn.autocommit = True
        try:
            yield
        finally:
            conn.autocommit = before
        return
    yield


def _execute(conn: Any, *sql: str) -> None:
    cur = conn.cursor()
    try:
        for statement in sql:
            cur.execute(statement)
    finally:
        cur.close()


def _fetchall(conn: Any, sql: str) -> Sequence[Sequence[Any]]:
    cur = conn.cursor()
    try:
        cur.execute(sql)
        rows: Sequence[Sequence[Any]] = cur.fetchall()
        return rows
    finally:
        cur.close()
