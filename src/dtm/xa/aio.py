"""XA branches over asyncio drivers: asyncmy (MySQL/MariaDB) and asyncpg (PostgreSQL).

The same functions as `dtm.xa`, awaited, with the same statements and the same tolerance of
unknown xids in phase 2; `xa_branch` takes an `AsyncDtmClient` and an async `connect`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from dtm.barrier import TransactionStateError
from dtm.barrier.aio import DRIVER_DIALECT, in_transaction
from dtm.client import AsyncDtmClient, XaBranchInfo
from dtm.errors import OngoingError
from dtm.protocol.consts import OP_COMMIT, OP_ROLLBACK
from dtm.xa._sql import XaStatements, check_action, is_unknown_xid, recovered, statements, xa_id

__all__ = ["xa_branch", "xa_commit", "xa_local", "xa_rollback"]

logger = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")


class _Driver:
    """The few statements XA needs, over one asyncpg or asyncmy connection."""

    def __init__(self, conn: Any, dialect: str | None) -> None:
        self.conn = conn
        self.name = type(conn).__module__.partition(".")[0]
        if dialect is None:
            if self.name not in DRIVER_DIALECT:
                raise ValueError(
                    f"not an asyncpg or asyncmy connection: {type(conn).__qualname__} from "
                    f"{type(conn).__module__}; pass dialect= 'mysql' or 'postgres'"
                )
            dialect = DRIVER_DIALECT[self.name]
        self.dialect = dialect

    def statements(self, gid: str, branch_id: str) -> XaStatements:
        return statements(self.dialect, xa_id(gid, branch_id))

    async def refuse_open_transaction(self, what: str) -> None:
        if await in_transaction(self.conn):
            raise TransactionStateError(
                f"{what}: the connection has a transaction open; commit or roll it back "
                "first (on MySQL a session holding a prepared xid has one: use another one)"
            )

    async def execute(self, *sql: str) -> None:
        for statement in sql:
            if self.name == "asyncpg":
                await self.conn.execute(statement)
            else:
                async with self.conn.cursor() as cur:
                    await cur.execute(statement)

    async def fetchall(self, sql: str) -> Sequence[Sequence[Any]]:
        if self.name == "asyncpg":
            rows: Sequence[Sequence[Any]] = await self.conn.fetch(sql)
            return rows
        async with self.conn.cursor() as cur:
            await cur.execute(sql)
            rows = await cur.fetchall()
            return rows

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[None]:
        """asyncmy's autocommit on for the duration (MariaDB answers XAER_OUTSIDE to
        XA COMMIT without it); asyncpg has no such mode to change."""
        get_mode = getattr(self.conn, "get_autocommit", None)
        before = bool(get_mode()) if callable(get_mode) else True
        if not before:
            await self.conn.autocommit(True)
        try:
            yield
        finally:
            if not before:
                await self.conn.autocommit(False)


async def xa_local(
    conn: C,
    gid: str,
    branch_id: str,
    fn: Callable[[C], Awaitable[T]],
    *,
    dialect: str | None = None,
) -> T:
    """Run `await fn(conn)` in the branch's XA transaction and prepare it, as
    `dtm.xa.xa_local`; rolls back and re-raises on any exception, refuses a connection with
    a transaction open (TransactionStateError)."""
    driver = _Driver(conn, dialect)
    sql = driver.statements(gid, branch_id)
    await driver.refuse_open_transaction(f"xa_local of {gid}/{branch_id}")
    await driver.execute(*sql.start)
    try:
        result = await fn(conn)
        await driver.execute(*sql.prepare)
    except BaseException:
        await _abort(driver, sql)
        raise
    logger.debug("xa %s-%s prepared", gid, branch_id)
    return result


async def xa_commit(conn: Any, gid: str, branch_id: str, *, dialect: str | None = None) -> None:
    """Commit the branch's prepared transaction; an unknown xid is success."""
    await _phase2(_Driver(conn, dialect), gid, branch_id, OP_COMMIT)


async def xa_rollback(conn: Any, gid: str, branch_id: str, *, dialect: str | None = None) -> None:
    """Roll the branch's prepared transaction back; an unknown xid is success."""
    await _phase2(_Driver(conn, dialect), gid, branch_id, OP_ROLLBACK)


async def xa_branch(
    client: AsyncDtmClient,
    info: XaBranchInfo,
    connect: Callable[[], Awaitable[C]],
    fn: Callable[[C], Awaitable[T]],
    *,
    dialect: str | None = None,
) -> T | None:
    """Serve one call of an XA branch endpoint, as `dtm.xa.xa_branch`: op "action" prepares
    on a connection of its own (closed before registering), then registers, rolling back
    if that fails; "commit" / "rollback" run phase 2 on a new connection."""
    if info.op in (OP_COMMIT, OP_ROLLBACK):
        conn = await connect()
        try:
            await _phase2(_Driver(conn, dialect), info.gid, info.branch_id, info.op)
        finally:
            await _close(conn)
        return None
    check_action(info)
    conn = await connect()
    try:
        result = await xa_local(conn, info.gid, info.branch_id, fn, dialect=dialect)
    finally:
        # MySQL keeps a prepared xid bound to its session until the session disconnects.
        await _close(conn)
    try:
        await client.register_xa_branch(info)
    except BaseException:
        try:
            conn = await connect()
            try:
                await xa_rollback(conn, info.gid, info.branch_id, dialect=dialect)
            finally:
                await _close(conn)
        except Exception:
            logger.exception(
                "xa %s-%s: registering failed and so did rolling back; it stays prepared",
                info.gid,
                info.branch_id,
            )
        raise
    return result


async def _phase2(driver: _Driver, gid: str, branch_id: str, op: str) -> None:
    sql = driver.statements(gid, branch_id)
    xid = xa_id(gid, branch_id)
    await driver.refuse_open_transaction(f"xa {op} of {xid}")
    async with driver.autocommit():
        try:
            await driver.execute(sql.commit if op == OP_COMMIT else sql.rollback)
        except Exception as exc:
            if not is_unknown_xid(exc):
                raise
            if sql.recover is not None and recovered(await driver.fetchall(sql.recover), xid):
                raise OngoingError(
                    f"xa {op} of {xid}: prepared but still bound to the session that "
                    "prepared it; retry once that session has disconnected"
                ) from exc
            logger.debug("xa %s of %s: not prepared (done already, or never)", op, xid)


async def _abort(driver: _Driver, sql: XaStatements) -> None:
    """Undo a transaction that failed before it was prepared; errors are only logged, the
    caller re-raises the error that made it abort."""
    for statement in sql.abort:
        try:
            await driver.execute(statement)
        except Exception as exc:
            logger.debug("xa abort: %s failed: %r", statement, exc)


async def _close(conn: Any) -> None:
    """asyncmy's `ensure_closed` (says goodbye to the server), asyncpg's `close`."""
    ensure_closed = getattr(conn, "ensure_closed", None)
    result = ensure_closed() if callable(ensure_closed) else conn.close()
    if inspect.isawaitable(result):
        await result
