"""The sub-transaction barrier over a DB-API 2 connection (upstream's dtmcli/barrier.go)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from dtm.barrier._dialect import Dialect, begin, detect_dialect, in_transaction
from dtm.errors import DuplicateError, FailureError
from dtm.protocol.consts import (
    CHECKBACK_BRANCH_ID,
    OP_ACTION,
    OP_CANCEL,
    OP_COMPENSATE,
    OP_MSG,
    OP_ROLLBACK,
    OP_TRY,
)
from dtm.protocol.grpc_calls import Metadata, read_metadata

__all__ = ["BranchBarrier", "Connection", "TransactionStateError", "create_table", "ddl"]

logger = logging.getLogger(__name__)

# The op a compensation undoes; its row is inserted with reason = the compensation's op, so
# a compensation arriving first blocks the late action (null compensation + hanging).
_ORIGIN_OP: Final = {OP_CANCEL: OP_TRY, OP_COMPENSATE: OP_ACTION, OP_ROLLBACK: OP_ACTION}

# A message's check-back looks at the barrier the first msg branch call inserts.
_MSG_BARRIER_ID: Final = "01"

_SAVEPOINT: Final = "dtm_barrier"


class Connection(Protocol):
    """The part of a DB-API 2 connection the barrier uses."""

    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


C = TypeVar("C", bound=Connection)
T = TypeVar("T")


class TransactionStateError(RuntimeError):
    """The connection's transaction state does not fit the call.

    `BranchBarrier.call` found a transaction already open, which it would have to commit
    behind its owner's back: use `call_in_transaction` there instead.
    """


@dataclass(slots=True)
class BranchBarrier:
    """The barrier of one branch call: makes it idempotent and safe from null compensation
    and hanging, by inserting rows into a barrier table in the business's own transaction.

    Build it from the query parameters DTM sends with each branch call
    (`BranchBarrier.from_query(request.query_params)`), then run the business code through
    `call` (the barrier owns the transaction) or `call_in_transaction` (the caller does).
    One instance serves one request; each call takes the next barrier id ("01", "02", ...),
    so the n-th barrier call of a branch matches the n-th of its retries.

    `dialect` ("sqlite", "mysql", "postgres") is detected from the connection's driver
    (sqlite3, PyMySQL, psycopg 3) when not given; `table` defaults to upstream's
    `dtm_barrier.barrier` (`barrier` on SQLite).
    """

    trans_type: str
    gid: str
    branch_id: str
    op: str
    dialect: str | None = field(default=None, kw_only=True)
    table: str | None = field(default=None, kw_only=True)
    barrier_id: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        if not (self.trans_type and self.gid and self.branch_id and self.op):
            raise ValueError(f"invalid barrier trans info: {self}")

    @classmethod
    def from_query(
        cls,
        query: Mapping[str, str | Sequence[str]],
        *,
        dialect: str | None = None,
        table: str | None = None,
    ) -> BranchBarrier:
        """From a branch call's query parameters: trans_type, gid, branch_id and op.

        Values may be strings or lists of strings (as `urllib.parse.parse_qs` gives).
        """

        def get(key: str) -> str:
            value = query.get(key, "")
            if isinstance(value, str):
                return value
            return value[0] if value else ""

        return cls(
            get("trans_type"),
            get("gid"),
            get("branch_id"),
            get("op"),
            dialect=dialect,
            table=table,
        )

    @classmethod
    def from_grpc(
        cls, metadata: Metadata, *, dialect: str | None = None, table: str | None = None
    ) -> BranchBarrier:
        """From a gRPC branch call's metadata (`context.invocation_metadata()`): its
        `dtm-trans_type`, `dtm-gid`, `dtm-branch_id` and `dtm-op`, as upstream's
        BarrierFromGrpc."""
        return cls.from_query(read_metadata(metadata), dialect=dialect, table=table)

    def __str__(self) -> str:
        return f"barrier {self.trans_type} {self.gid} {self.branch_id} {self.op}"

    def call(self, conn: C, fn: Callable[[C], T]) -> T | None:
        """Run `fn(conn)` at most once for this branch op, in one transaction this owns.

        Begins a transaction, inserts the barrier rows, runs `fn` unless the barrier says
        the call is a repeat, a hanging action or a null compensation, and commits. On any
        exception (from `fn` too) it rolls back and re-raises, so no barrier row is kept
        and a retry runs `fn` again. Returns `fn`'s result, or None when `fn` was skipped.

        Raises TransactionStateError if `conn` already has a transaction open: committing it
        would commit someone else's work; use `call_in_transaction` there. For op "msg"
        (a message's do_and_submit) a repeat raises DuplicateError, as upstream.
        """
        dialect = detect_dialect(conn, self.dialect)
        if in_transaction(conn):
            raise TransactionStateError(
                f"{self}: the connection has a transaction open; BranchBarrier.call commits "
                "its own transaction, use call_in_transaction inside yours"
            )
        begin(conn, dialect)
        try:
            result = self._run(conn, fn, dialect)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return result

    def call_in_transaction(self, conn: C, fn: Callable[[C], T]) -> T | None:
        """Like `call`, inside the caller's transaction, which it never commits.

        The barrier rows and `fn` run inside a SAVEPOINT: on an exception the savepoint is
        rolled back (the barrier rows go with it, so a retry runs `fn` again), the
        caller's transaction stays usable and the exception propagates. The caller's own
        commit or rollback then decides whether the barrier rows and `fn`'s writes stay.
        If `conn` has no transaction open, one is begun and left open for the caller.
        """
        dialect = detect_dialect(conn, self.dialect)
        if not in_transaction(conn):
            begin(conn, dialect)
        _execute(conn, f"savepoint {_SAVEPOINT}")
        try:
            result = self._run(conn, fn, dialect)
        except BaseException:
            _execute(conn, f"rollback to savepoint {_SAVEPOINT}")
            _execute(conn, f"release savepoint {_SAVEPOINT}")
            raise
        _execute(conn, f"release savepoint {_SAVEPOINT}")
        return result

    def query_prepared(self, conn: Connection) -> None:
        """A message's check-back: did its local transaction commit?

        Inserts the "rollback" row for the msg barrier ("00", "msg", "01"), unless the
        local transaction inserted it first, then reads its reason: "rollback" means the
        local transaction never committed and now never will (FailureError); otherwise it
        committed and this returns. Runs in its own transaction, like `call`.
        """
        dialect = detect_dialect(conn, self.dialect)
        table = dialect.table_name(self.table)
        if in_transaction(conn):
            raise TransactionStateError(
                f"{self}: query_prepared commits its own transaction; the connection has one open"
            )
        begin(conn, dialect)
        try:
            _insert(
                conn,
                dialect,
                table,
                self.trans_type,
                self.gid,
                CHECKBACK_BRANCH_ID,
                OP_MSG,
                _MSG_BARRIER_ID,
                OP_ROLLBACK,
            )
            mark = dialect.placeholder
            row = _fetchone(
                conn,
                f"select reason from {table} "
                f"where gid={mark} and branch_id={mark} and op={mark} and barrier_id={mark}",
                (self.gid, CHECKBACK_BRANCH_ID, OP_MSG, _MSG_BARRIER_ID),
            )
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        reason = row[0] if row else None
        logger.debug("%s: query_prepared reason %r", self, reason)
        if reason == OP_ROLLBACK:
            raise FailureError(f"{self}: the message's local transaction rolled back")

    def _run(self, conn: C, fn: Callable[[C], T], dialect: Dialect) -> T | None:
        """Insert the barrier rows and run `fn` if they allow, inside an open transaction."""
        self.barrier_id += 1
        bid = f"{self.barrier_id:02d}"
        table = dialect.table_name(self.table)
        origin_op = _ORIGIN_OP.get(self.op)
        origin_added = 0
        if origin_op is not None:
            origin_added = _insert(
                conn,
                dialect,
                table,
                self.trans_type,
                self.gid,
                self.branch_id,
                origin_op,
                bid,
                self.op,
            )
        current_added = _insert(
            conn,
            dialect,
            table,
            self.trans_type,
            self.gid,
            self.branch_id,
            self.op,
            bid,
            self.op,
        )
        logger.debug("%s: origin added %d, current added %d", self, origin_added, current_added)
        skip = self._skip_reason(origin_added, current_added)
        if skip:
            logger.debug("%s: %s, skipped", self, skip)
            return None
        return fn(conn)

    def _skip_reason(self, origin_added: int, current_added: int) -> str | None:
        """Why the business code must not run, given how many barrier rows the call just
        inserted for the origin op and for its own; None when it runs. DuplicateError for a
        repeated op "msg"."""
        if self.op == OP_MSG and current_added == 0:
            raise DuplicateError(f"{self}: the message's local transaction already ran")
        if origin_added > 0:
            return "null compensation"
        if current_added == 0:
            return "repeated or hanging request"
        return None


def _execute(conn: Connection, sql: str, params: Sequence[Any] | None = None) -> int:
    cur = conn.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        return int(cur.rowcount)
    finally:
        cur.close()


def _fetchone(conn: Connection, sql: str, params: Sequence[Any]) -> Any:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchone()
    finally:
        cur.close()


def _insert(conn: Connection, dialect: Dialect, table: str, *values: str) -> int:
    """Insert one barrier row unless its key exists; the number of rows inserted (0 or 1)."""
    marks = ", ".join([dialect.placeholder] * len(values))
    sql = dialect.insert_ignore.format(table=table, values=f"{_VALUES_HEAD} values ({marks})")
    return _execute(conn, sql, values)


_VALUES_HEAD: Final = "(trans_type, gid, branch_id, op, barrier_id, reason)"


def ddl(dialect: str, *, table: str | None = None) -> str:
    """The SQL creating the barrier table (and its schema) for `dialect`; idempotent."""
    return detect_dialect(None, dialect).ddl(table)


def create_table(conn: Connection, *, dialect: str | None = None, table: str | None = None) -> None:
    """Create the barrier table (and its schema) if missing, in a transaction of its own.

    Like `BranchBarrier.call`, refuses a connection with a transaction open rather than
    commit it. MySQL commits DDL implicitly anyway.
    """
    found = detect_dialect(conn, dialect)
    if in_transaction(conn):
        raise TransactionStateError("create_table commits; the connection has a transaction open")
    begin(conn, found)
    try:
        for statement in found.ddl(table).split(";"):
            if statement.strip():
                _execute(conn, statement)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
