"""The sub-transaction barrier inside Django's `transaction.atomic()`.

`call(barrier, fn, using=alias)` runs the barrier rows and `fn` in one `atomic` block on the
database `using` (the default one when not given). Django decides what that block is: the
transaction itself when none is open (committed when the block ends), a savepoint when the
caller is already inside `atomic` (nothing committed; the caller's outermost block does).
On an exception Django rolls the block back and the exception propagates.

    from dtm.barrier import BranchBarrier
    from dtm.barrier import django as dj_barrier

    bb = BranchBarrier.from_query(request.GET)
    dj_barrier.call(bb, lambda conn: Order.objects.create(...))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from dtm.barrier._barrier import _MSG_BARRIER_ID, BranchBarrier, _fetchone, _insert
from dtm.barrier._dialect import Dialect, select_reason_sql, vendor_dialect
from dtm.errors import FailureError
from dtm.protocol.consts import CHECKBACK_BRANCH_ID, OP_MSG, OP_ROLLBACK

__all__ = ["call", "create_table", "query_prepared"]

T = TypeVar("T")

# Django's cursors take `%s` markers whatever the database (its SQLite backend translates).
_MARK = "%s"


def call(
    barrier: BranchBarrier,
    fn: Callable[[BaseDatabaseWrapper], T],
    *,
    using: str | None = None,
) -> T | None:
    """Run `fn(connection)` at most once for `barrier`'s branch op, inside
    `transaction.atomic(using=using)`: a savepoint when the caller already is in `atomic`,
    never a commit behind its back. Returns `fn`'s result, or None when the barrier
    skipped it; op "msg" repeated raises DuplicateError."""
    alias = using or DEFAULT_DB_ALIAS
    conn = connections[alias]
    with transaction.atomic(using=alias):
        return barrier._run(conn, fn, _dialect(barrier, conn))


def query_prepared(barrier: BranchBarrier, *, using: str | None = None) -> None:
    """A message's check-back (`BranchBarrier.query_prepared`) on the database `using`.

    Raises FailureError when the message's local transaction rolled back; returns when it
    committed. Meant for the query_prepared view, outside any `atomic` block: inside one,
    the answer would only be final once that block commits.
    """
    alias = using or DEFAULT_DB_ALIAS
    conn = connections[alias]
    dialect = _dialect(barrier, conn)
    table = dialect.table_name(barrier.table)
    key = (barrier.gid, CHECKBACK_BRANCH_ID, OP_MSG, _MSG_BARRIER_ID)
    with transaction.atomic(using=alias):
        _insert(conn, dialect, table, barrier.trans_type, *key, OP_ROLLBACK)
        row = _fetchone(conn, select_reason_sql(table, [_MARK] * len(key)), key)
    if row is not None and row[0] == OP_ROLLBACK:
        raise FailureError(f"{barrier}: the message's local transaction rolled back")


def create_table(
    *, using: str | None = None, dialect: str | None = None, table: str | None = None
) -> None:
    """Create the barrier table (and its schema) if missing on the database `using`."""
    alias = using or DEFAULT_DB_ALIAS
    conn = connections[alias]
    found = vendor_dialect(conn.vendor, dialect)
    with transaction.atomic(using=alias), conn.cursor() as cur:
        for statement in found.ddl(table).split(";"):
            if statement.strip():
                cur.execute(statement)


def _dialect(barrier: BranchBarrier, conn: BaseDatabaseWrapper) -> Dialect:
    return dataclasses.replace(vendor_dialect(conn.vendor, barrier.dialect), placeholder=_MARK)
