"""The sub-transaction barrier over asyncio drivers: asyncpg and asyncmy connections.

Same semantics and SQL as the DB-API barrier (`dtm.barrier.BranchBarrier`): the dialect's
insert-ignore and DDL are reused, only the I/O differs. asyncpg numbers its parameters
(`$1`), asyncmy takes the dialect's `%s`. `AsyncBranchBarrier` wraps a `BranchBarrier`, so
the barrier-id counter is shared with any sync or Redis barrier calls of the same request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from dtm.barrier._barrier import (
    _MSG_BARRIER_ID,
    _ORIGIN_OP,
    _SAVEPOINT,
    _VALUES_HEAD,
    BranchBarrier,
    TransactionStateError,
)
from dtm.barrier._dialect import Dialect, get_dialect
from dtm.errors import FailureError
from dtm.protocol.consts import CHECKBACK_BRANCH_ID, OP_MSG, OP_ROLLBACK

__all__ = ["DRIVER_DIALECT", "AsyncBranchBarrier", "create_table", "in_transaction"]

logger = logging.getLogger(__name__)

C = TypeVar("C")
T = TypeVar("T")

# MySQL's SERVER_STATUS_IN_TRANS flag, reported in every OK/EOF packet.
_MYSQL_IN_TRANS: Final = 1


DRIVER_DIALECT: Final = {"asyncpg": "postgres", "asyncmy": "mysql"}
"""The dialect of each async driver, by the top-level module of its connection class."""


async def in_transaction(conn: Any) -> bool:
    """Whether an asyncpg or asyncmy connection has a transaction open."""
    if type(conn).__module__.startswith("asyncpg"):
        return bool(conn.is_in_transaction())
    # asyncmy keeps the last non-zero server status: a status of 0 (autocommit off, no
    # transaction) never replaces it, so IN_TRANS may be stale after a commit. Its absence
    # is always true; its presence is checked with a no-op statement, whose own result
    # carries the status as the server sent it.
    if not (conn.server_status or 0) & _MYSQL_IN_TRANS:
        return False
    async with conn.cursor() as cur:
        await cur.execute("do 0")
    return bool((conn._result.server_status or 0) & _MYSQL_IN_TRANS)


class _Driver:
    """The few async operations the barrier needs, over one connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.name = type(conn).__module__.partition(".")[0]
        if self.name not in DRIVER_DIALECT:
            raise ValueError(
                f"not an asyncpg or asyncmy connection: {type(conn).__qualname__} "
                f"from {type(conn).__module__}"
            )
        self.dialect: Dialect = get_dialect(DRIVER_DIALECT[self.name])

    def marks(self, n: int) -> list[str]:
        if self.name == "asyncpg":
            return [f"${i}" for i in range(1, n + 1)]
        return [self.dialect.placeholder] * n

    async def in_transaction(self) -> bool:
        return await in_transaction(self.conn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        if self.name == "asyncpg":
            status: str = await self.conn.execute(sql, *params)
            last = status.rpartition(" ")[2]
            return int(last) if last.isdigit() else 0
        async with self.conn.cursor() as cur:
            return int(await cur.execute(sql, tuple(params) or None))

    async def fetchone(self, sql: str, params: Sequence[Any]) -> Any:
        if self.name == "asyncpg":
            return await self.conn.fetchrow(sql, *params)
        async with self.conn.cursor() as cur:
            await cur.execute(sql, tuple(params))
            return await cur.fetchone()

    async def begin(self) -> None:
        await self.execute(self.dialect.begin)

    async def commit(self) -> None:
        await self.execute("commit")

    async def rollback(self) -> None:
        await self.execute("rollback")

    async def insert(self, table: str, *values: str) -> int:
        """Insert one barrier row unless its key exists; the rows inserted (0 or 1)."""
        marks = ", ".join(self.marks(len(values)))
        sql = self.dialect.insert_ignore.format(
            table=table, values=f"{_VALUES_HEAD} values ({marks})"
        )
        return await self.execute(sql, values)


@dataclass(slots=True)
class AsyncBranchBarrier:
    """`BranchBarrier` for asyncpg and asyncmy connections; methods as the sync one's.

    Build it from a branch call's query (`AsyncBranchBarrier.from_query(...)`) or around
    a `BranchBarrier`. `fn` is an async function of the connection.
    """

    barrier: BranchBarrier

    @classmethod
    def from_query(
        cls, query: Mapping[str, str | Sequence[str]], *, table: str | None = None
    ) -> AsyncBranchBarrier:
        """From a branch call's query parameters: trans_type, gid, branch_id and op."""
        return cls(BranchBarrier.from_query(query, table=table))

    def __str__(self) -> str:
        return str(self.barrier)

    async def call(self, conn: C, fn: Callable[[C], Awaitable[T]]) -> T | None:
        """Run `await fn(conn)` at most once for this branch op, in a transaction this owns.

        As `BranchBarrier.call`: rolls back and re-raises on any exception, refuses a
        connection with a transaction open (TransactionStateError), DuplicateError for a
        repeated op "msg". Returns `fn`'s result, or None when `fn` was skipped.
        """
        driver = _Driver(conn)
        if await driver.in_transaction():
            raise TransactionStateError(
                f"{self}: the connection has a transaction open; call commits its own "
                "transaction, use call_in_transaction inside yours"
            )
        await driver.begin()
        try:
            result = await self._run(driver, conn, fn)
        except BaseException:
            await driver.rollback()
            raise
        await driver.commit()
        return result

    async def call_in_transaction(self, conn: C, fn: Callable[[C], Awaitable[T]]) -> T | None:
        """Like `call`, inside the caller's transaction, which it never commits.

        Works in a SAVEPOINT, rolled back on an exception (which propagates) so the
        caller's transaction stays usable. Begins a transaction if none is open and leaves
        it open for the caller.
        """
        driver = _Driver(conn)
        if not await driver.in_transaction():
            await driver.begin()
        await driver.execute(f"savepoint {_SAVEPOINT}")
        try:
            result = await self._run(driver, conn, fn)
        except BaseException:
            await driver.execute(f"rollback to savepoint {_SAVEPOINT}")
            await driver.execute(f"release savepoint {_SAVEPOINT}")
            raise
        await driver.execute(f"release savepoint {_SAVEPOINT}")
        return result

    async def query_prepared(self, conn: Any) -> None:
        """A message's check-back, as `BranchBarrier.query_prepared`: returns if the local
        transaction committed, else FailureError (and it now never will)."""
        b = self.barrier
        driver = _Driver(conn)
        table = driver.dialect.table_name(b.table)
        if await driver.in_transaction():
            raise TransactionStateError(
                f"{self}: query_prepared commits its own transaction; the connection has one open"
            )
        await driver.begin()
        try:
            await driver.insert(
                table,
                b.trans_type,
                b.gid,
                CHECKBACK_BRANCH_ID,
                OP_MSG,
                _MSG_BARRIER_ID,
                OP_ROLLBACK,
            )
            m = driver.marks(4)
            row = await driver.fetchone(
                f"select reason from {table} "
                f"where gid={m[0]} and branch_id={m[1]} and op={m[2]} and barrier_id={m[3]}",
                (b.gid, CHECKBACK_BRANCH_ID, OP_MSG, _MSG_BARRIER_ID),
            )
        except BaseException:
            await driver.rollback()
            raise
        await driver.commit()
        reason = row[0] if row else None
        logger.debug("%s: query_prepared reason %r", self, reason)
        if reason == OP_ROLLBACK:
            raise FailureError(f"{self}: the message's local transaction rolled back")

    async def _run(self, driver: _Driver, conn: C, fn: Callable[[C], Awaitable[T]]) -> T | None:
        b = self.barrier
        b.barrier_id += 1
        bid = f"{b.barrier_id:02d}"
        table = driver.dialect.table_name(b.table)
        origin_op = _ORIGIN_OP.get(b.op)
        origin_added = 0
        if origin_op is not None:
            origin_added = await driver.insert(
                table, b.trans_type, b.gid, b.branch_id, origin_op, bid, b.op
            )
        current_added = await driver.insert(
            table, b.trans_type, b.gid, b.branch_id, b.op, bid, b.op
        )
        logger.debug("%s: origin added %d, current added %d", self, origin_added, current_added)
        skip = b._skip_reason(origin_added, current_added)
        if skip:
            logger.debug("%s: %s, skipped", self, skip)
            return None
        return await fn(conn)


async def create_table(conn: Any, *, table: str | None = None) -> None:
    """Create the barrier table (and its schema) if missing, in a transaction of its own."""
    driver = _Driver(conn)
    if await driver.in_transaction():
        raise TransactionStateError("create_table commits; the connection has a transaction open")
    await driver.begin()
    try:
        for statement in driver.dialect.ddl(table).split(";"):
            if statement.strip():
                await driver.execute(statement)
    except BaseException:
        await driver.rollback()
        raise
    await driver.commit()
