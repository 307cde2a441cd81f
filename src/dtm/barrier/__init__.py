"""The sub-transaction barrier: exactly-once branch ops over the business's own database.

DTM may call a branch op twice (retries), call a compensation whose action never arrived
(null compensation), or deliver an action after its compensation (hanging). The barrier
inserts a row per (gid, branch_id, op, barrier_id) into a table in the same database, in
the same local transaction as the business change, and skips the business function when
the row says it must not run. Semantics are upstream's (client/dtmcli/barrier.go).

Two ways to run a branch op, for the two ways code holds a transaction:

- `BranchBarrier.call(conn, fn)`: the barrier owns the transaction. It begins one, runs
  `fn(conn)` if allowed, commits; rolls back and re-raises on an exception. It refuses a
  connection that already has a transaction open rather than commit it.
- `BranchBarrier.call_in_transaction(conn, fn)`: the caller owns the transaction. The
  barrier works inside a SAVEPOINT and never commits; the caller's commit or rollback
  decides.

Drivers: sqlite3, PyMySQL and psycopg 3 connections are recognised by their module; other
DB-API drivers work with `dialect=` given. Create the table with `create_table(conn)` or
take the SQL from `ddl(dialect)`.
"""

from __future__ import annotations

from dtm.barrier._barrier import (
    BranchBarrier,
    Connection,
    TransactionStateError,
    create_table,
    ddl,
)
from dtm.barrier._dialect import DIALECTS, Dialect, detect_dialect

__all__ = [
    "DIALECTS",
    "BranchBarrier",
    "Connection",
    "Dialect",
    "TransactionStateError",
    "create_table",
    "ddl",
    "detect_dialect",
]
