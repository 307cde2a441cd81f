"""The PostgreSQL store: upstream's tables in `Store.Schema`, one statement per method.

Every method is a single SQL statement (CTEs carry the multi-table ones), so it is one round
trip and atomic by itself, with no explicit transaction. Values are always bound parameters;
asyncpg prepares each statement once per connection and keeps it in its statement cache.

Times come from the database's clock (`now()`), never from Python's. Columns are
`timestamp(0)`, whole seconds, which PostgreSQL would round to the nearest second; the store
rounds itself instead:

* stamps (`create_time`, `update_time`, ...) and times not in the future are truncated, so a
  transaction made due "now" is due at once (`next_cron_time <= now()`);
* times in the future (leases, retry times) are rounded *up*, so a lease never ends before
  the moment asked for and a transaction is never handed to a second owner while its lease
  runs. A due time may thus come up to a second late, never early.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg

from dtm.protocol.consts import FAILED, FINISHED, SUCCEED, UNFINISHED
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.config import StoreConfig
from dtm.server.stores.base import (
    Page,
    Progress,
    ScanFilter,
    Store,
    StoreUnavailable,
    pool_size,
)
from dtm.server.stores.rows import (
    BRANCH_COLUMNS,
    GLOBAL_COLUMNS,
    KV_COLUMNS,
    NEW_GLOBAL_COLUMNS,
    branch_from_row,
    find_kv_query,
    global_from_row,
    global_values,
    kv_from_row,
    next_position,
    parse_position,
    progress_columns,
    scan_kv_query,
    scan_query,
    stamp_branches,
)

__all__ = ["PostgresStore"]

# What an outage looks like from asyncpg: server errors (PostgresError; constraint conflicts
# never reach here, every insert says ON CONFLICT), a closed pool or connection
# (InterfaceError), a stale statement cache (InternalClientError), sockets (OSError covers
# ConnectionError) and timeouts.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)

# A schema name is interpolated into CREATE SCHEMA and search_path, so only plain
# identifiers are accepted; PostgreSQL folds them to lower case in both places alike.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")
# Serialises migrations of every instance (pg_advisory_xact_lock key; "dtm-py" in ASCII).
_MIGRATE_LOCK = 0x64746D2D7079

_NOW = "date_trunc('second', now())"
_SCHEMA_EXISTS = "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)"

# A row as asyncpg returns it, or a slice of one.
_Row = asyncpg.Record | tuple[Any, ...]


def _later(param: str) -> str:
    """SQL for now + `param` seconds in whole seconds: truncated, rounded up when ahead."""
    return (
        f"date_trunc('second', now() + make_interval(secs => {param})"
        f" + CASE WHEN {param} > 0 THEN interval '0.999999 second' ELSE interval '0' END)"
    )


def _quoted(statuses: Iterable[str]) -> str:
    return ", ".join(f"'{status}'" for status in sorted(statuses))


_UNFINISHED = _quoted(UNFINISHED)
_FINISHED = _quoted(FINISHED)

# Where a branch's columns start in a row of _LOAD.
_WIDTH = GLOBAL_COLUMNS.count(",") + 1

# New branch operations of one gid, in the caller's order (ids follow it), from parallel
# arrays; $1 is the gid, `g` the guarding CTE, `stamp` the time to write.
_BRANCH_ROWS = (
    " SELECT $1, u.url, u.bin_data, u.branch_id, u.op, u.status, {stamp}, {stamp}"
    " FROM g CROSS JOIN unnest(${p}::text[], ${q}::bytea[], ${r}::text[], ${s}::text[],"
    " ${t}::text[]) WITH ORDINALITY AS u(url, bin_data, branch_id, op, status, n)"
    " ORDER BY u.n ON CONFLICT (gid, branch_id, op) DO NOTHING RETURNING id, branch_id, op"
)
_INSERTED = (
    "ARRAY(SELECT id FROM b ORDER BY id), ARRAY(SELECT branch_id FROM b ORDER BY id),"
    " ARRAY(SELECT op FROM b ORDER BY id)"
)

_CREATE = (
    f"WITH g AS (INSERT INTO trans_global ({NEW_GLOBAL_COLUMNS}, create_time, update_time)"
    f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {_later('$9::float8')}, $10, $11, $12, $13,"
    f" {_NOW}, {_NOW}) ON CONFLICT (gid) DO NOTHING"
    " RETURNING id, create_time, next_cron_time),"
    " b AS (INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status,"
    " create_time, update_time)"
    + _BRANCH_ROWS.format(stamp="g.create_time", p=14, q=15, r=16, s=17, t=18)
    + f") SELECT g.id, g.create_time, g.next_cron_time, {_INSERTED} FROM g"
)

# FOR SHARE holds the status still until the inserts commit; a status changed meanwhile
# is re-read (READ COMMITTED rechecks the locked row) and the guard fails.
_ADD_BRANCHES = (
    "WITH g AS (SELECT gid FROM trans_global WHERE gid = $1 AND status = $2 FOR SHARE),"
    " b AS (INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status,"
    " create_time, update_time)"
    + _BRANCH_ROWS.format(stamp=_NOW, p=3, q=4, r=5, s=6, t=7)
    + f") SELECT EXISTS (SELECT FROM g), {_NOW}, {_INSERTED}"
)

# One guarded UPDATE of the global (NULL parameters leave columns as they are) and, only if
# it matched, the branch updates. The UPDATE also locks the row, so nothing changes the
# status between the guard and the branch writes.
_SAVE_PROGRESS = (
    "WITH g AS (UPDATE trans_global SET"
    " status = COALESCE($4::text, status),"
    f" finish_time = CASE WHEN $4 = '{SUCCEED}' THEN {_NOW} ELSE finish_time END,"
    f" rollback_time = CASE WHEN $4 = '{FAILED}' THEN {_NOW} ELSE rollback_time END,"
    " rollback_reason = COALESCE($5::text, rollback_reason),"
    " result = COALESCE($6::text, result),"
    " next_cron_interval = COALESCE($7::int, next_cron_interval),"
    " next_cron_time = CASE WHEN $8::float8 IS NULL THEN next_cron_time"
    f" ELSE {_later('$8')} END,"
    " owner = COALESCE($9::text, owner),"
    f" update_time = CASE WHEN $10::bool THEN {_NOW} ELSE update_time END"
    " WHERE gid = $1 AND status = $2 AND ($3::text IS NULL OR owner = $3) RETURNING gid),"
    f" b AS (UPDATE trans_branch_op AS o SET status = u.status, update_time = {_NOW},"
    f" finish_time = CASE WHEN u.status IN ({_FINISHED}) THEN {_NOW} ELSE o.finish_time END"
    " FROM g CROSS JOIN unnest($11::text[], $12::text[], $13::text[])"
    " AS u(branch_id, op, status)"
    " WHERE o.gid = g.gid AND o.branch_id = u.branch_id AND o.op = u.op)"
    " SELECT EXISTS (SELECT FROM g)"
)

# SKIP LOCKED: concurrent callers (other server instances) pass over rows another is
# taking; a row taken and committed meanwhile is re-read by FOR UPDATE and no longer due.
_LOCK_DUE = (
    "WITH due AS (SELECT id, next_cron_time FROM trans_global"
    f" WHERE status IN ({_UNFINISHED}) AND next_cron_time <= now()"
    " ORDER BY next_cron_time, id LIMIT $3 FOR UPDATE SKIP LOCKED),"
    " taken AS (UPDATE trans_global AS t"
    f" SET owner = $1, next_cron_time = {_later('$2::float8')}, update_time = {_NOW}"
    " FROM due WHERE t.id = due.id"
    f" RETURNING {', '.join('t.' + c for c in GLOBAL_COLUMNS.split(', '))},"
    " due.next_cron_time AS was_due)"
    f" SELECT {GLOBAL_COLUMNS} FROM taken ORDER BY was_due, id"
)

_RESET_CRON_TIME = (
    f"UPDATE trans_global SET next_cron_time = {_NOW}, update_time = {_NOW}"
    f" WHERE id IN (SELECT id FROM trans_global WHERE status IN ({_UNFINISHED})"
    " AND next_cron_time > now() + make_interval(secs => $1::float8)"
    " LIMIT $2 FOR UPDATE SKIP LOCKED)"
)

_RESET_NEXT_CRON_TIME = (
    f"UPDATE trans_global SET next_cron_time = {_NOW}, update_time = {_NOW}"
    f" WHERE gid = $1 AND status IN ({_UNFINISHED})"
)

_FIND = f"SELECT {GLOBAL_COLUMNS} FROM trans_global WHERE gid = $1"

# The global's columns ride on each of its branch rows: one read, one snapshot.
_LOAD = (
    f"SELECT {', '.join('g.' + c for c in GLOBAL_COLUMNS.split(', '))},"
    f" {', '.join('b.' + c for c in BRANCH_COLUMNS.split(', '))}"
    " FROM trans_global AS g LEFT JOIN trans_branch_op AS b ON b.gid = g.gid"
    " WHERE g.gid = $1 ORDER BY b.id"
)

_PURGE_FINISHED = (
    "WITH doomed AS (SELECT id FROM trans_global"
    f" WHERE status IN ({_FINISHED})"
    # Stamps are truncated: a row stamped before this whole second is older than asked.
    " AND update_time < date_trunc('second', now() - make_interval(secs => $1::float8))"
    " LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM trans_global AS t USING doomed WHERE t.id = doomed.id"
    " RETURNING t.gid),"
    " b AS (DELETE FROM trans_branch_op AS o USING gone WHERE o.gid = gone.gid)"
    " SELECT count(*) FROM gone"
)

_CREATE_KV = (
    "INSERT INTO kv (cat, k, v, version, create_time, update_time)"
    f" VALUES ($1, $2, $3, 1, {_NOW}, {_NOW}) ON CONFLICT (cat, k) DO NOTHING"
)
_UPDATE_KV = (
    f"UPDATE kv SET v = $3, version = version + 1, update_time = {_NOW}"
    " WHERE cat = $1 AND k = $2 AND version = $4"
)
_DELETE_KV = "DELETE FROM kv WHERE cat = $1 AND k = $2"


def _branch_arrays(branches: Sequence[TransBranch]) -> tuple[list[Any], ...]:
    return (
        [branch.url for branch in branches],
        [branch.bin_data for branch in branches],
        [branch.branch_id for branch in branches],
        [branch.op for branch in branches],
        [branch.status for branch in branches],
    )


def _inserted_ids(
    branches: Sequence[TransBranch], ids: Sequence[int], keys: Iterable[tuple[str, str]]
) -> list[int]:
    """The id inserted for each of the caller's branches, in their order; 0 for those left
    alone. `ids` and `keys` (branch_id, op) are what the insert returned, in its order."""
    inserted = dict(zip(keys, ids, strict=True))
    return [inserted.pop((branch.branch_id, branch.op), 0) for branch in branches]


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means the connection is gone, rather than one statement failing."""
    if isinstance(exc, asyncpg.PostgresError):
        # 08: connection exceptions; 57P: shutdown, crash, backend terminated, database
        # dropped, idle session timeout.
        return exc.sqlstate.startswith(("08", "57P"))
    return True


def _affected(status: str) -> int:
    """The row count of a command status such as "UPDATE 3" or "INSERT 0 1"."""
    return int(status.rsplit(" ", 1)[-1])


def _mark(n: int) -> str:
    """The placeholder of the n-th value of a statement."""
    return f"${n}"


def _utc(moment: datetime) -> datetime:
    """A naive time is taken to be UTC, as the store's own times are."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class PostgresStore(Store):
    """A `Store` in PostgreSQL, shared by any number of server instances.

    The pool holds at most `MaxOpenConns` connections, each closed after `ConnMaxLifeTime`
    minutes unused (asyncpg has no cap on a busy connection's age; `max_queries` recycles
    those) and replaced on the next call when the server dropped it. `timeout` bounds a
    connect and each statement; what exceeds it raises `StoreUnavailable`.
    """

    def __init__(
        self,
        conf: StoreConfig,
        *,
        timeout: float = 30.0,
        max_queries: int = 50_000,
        application_name: str = "dtm",
    ) -> None:
        if not _IDENTIFIER.match(conf.Schema):
            raise ValueError(f"Store.Schema must be a plain identifier, not {conf.Schema!r}")
        if conf.MaxOpenConns < 1:
            raise ValueError("Store.MaxOpenConns must be at least 1")
        self._conf = conf
        self._timeout = timeout
        self._max_queries = max_queries
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None

    @property
    def schema(self) -> str:
        """The schema the tables live in."""
        return self._conf.Schema

    async def open(self) -> None:
        if self._pool is not None:
            return
        conf = self._conf
        pool = asyncpg.create_pool(
            host=conf.Host or None,
            port=conf.Port or None,
            user=conf.User or None,
            password=conf.Password or None,
            database=conf.Db,
            # One connection made at once, so a wrong address fails `open`, not a request.
            min_size=1,
            max_size=pool_size(conf.MaxOpenConns),
            max_queries=self._max_queries,
            max_inactive_connection_lifetime=conf.ConnMaxLifeTime * 60.0,
            timeout=self._timeout,
            command_timeout=self._timeout,
            # Statements change no session state (no SET, LISTEN, cursors or session
            # locks), so the default reset (RESET ALL ..., one more round trip on every
            # release) has nothing to undo; an open transaction is still rolled back.
            reset=_no_reset,
            server_settings={
                # Upstream's connection string sets search_path the same way.
                "search_path": conf.Schema,
                "application_name": self._application_name,
                # date_trunc works in the session's zone; UTC keeps it exact to the second.
                "timezone": "UTC",
                # These statements are tiny; JIT compiling one costs more than running it.
                "jit": "off",
            },
        )
        try:
            await pool
        except _DRIVER_ERRORS as exc:
            pool.terminate()
            raise StoreUnavailable(f"postgres: cannot connect: {exc}") from exc
        self._pool = pool

    async def migrate(self) -> None:
        script = resources.files(__package__).joinpath("sql", "postgres.sql").read_text()
        pool = self._ready()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL client_min_messages = warning")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                # Only when missing: CREATE SCHEMA needs the CREATE privilege on the database
                # even with IF NOT EXISTS, which an operator may have given nobody.
                schema = self._conf.Schema
                if not await conn.fetchval(_SCHEMA_EXISTS, schema.lower()):
                    # Checked to be a plain identifier in __init__.
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                await conn.execute(script)
        except _DRIVER_ERRORS as exc:
            raise StoreUnavailable(f"postgres: migration failed: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                # Calls in flight finish first, within the statement timeout.
                await asyncio.wait_for(pool.close(), self._timeout)
            except _DRIVER_ERRORS:
                pool.terminate()

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("postgres: the store is not open")
        return self._pool

    # One statement each; every driver error becomes StoreUnavailable.

    async def _failed(self, exc: BaseException) -> StoreUnavailable:
        """The StoreUnavailable for a driver error. When a connection was lost, the server
        has likely dropped the pool's other connections too (restart, failover, terminated
        backends), and asyncpg may not have noticed yet: all are replaced on their next use,
        so the next call gets a live one instead of failing again."""
        if _connection_lost(exc) and self._pool is not None:
            await self._pool.expire_connections()
        return StoreUnavailable(f"postgres: {exc}")

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        pool = self._ready()
        try:
            return await pool.fetch(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise await self._failed(exc) from exc

    async def _fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        pool = self._ready()
        try:
            return await pool.fetchrow(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise await self._failed(exc) from exc

    async def _fetchval(self, sql: str, *args: object) -> Any:
        pool = self._ready()
        try:
            return await pool.fetchval(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise await self._failed(exc) from exc

    async def _execute(self, sql: str, *args: object) -> int:
        pool = self._ready()
        try:
            return _affected(await pool.execute(sql, *args))
        except _DRIVER_ERRORS as exc:
            raise await self._failed(exc) from exc

    async def ping(self) -> None:
        await self._fetchval("SELECT 1")

    # --- global transactions -------------------------------------------------------

    async def create(
        self, trans: TransGlobal, branches: Sequence[TransBranch], *, next_cron_delay: float
    ) -> bool:
        row = await self._fetchrow(
            _CREATE,
            *global_values(trans, float(next_cron_delay)),
            *_branch_arrays(branches),
        )
        if row is None:
            return False
        trans.id, trans.create_time, trans.next_cron_time = row[0], row[1], row[2]
        trans.update_time = row[1]
        ids = _inserted_ids(branches, row[3], zip(row[4], row[5], strict=True))
        stamp_branches(branches, ids, row[1])
        return True

    async def find(self, gid: str) -> TransGlobal | None:
        row = await self._fetchrow(_FIND, gid)
        return None if row is None else global_from_row(row)

    async def load(self, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
        rows = await self._fetch(_LOAD, gid)
        if not rows:
            return None, []
        branches = [branch_from_row(row[_WIDTH:]) for row in rows if row[_WIDTH] is not None]
        return global_from_row(rows[0]), branches

    async def add_branches(
        self, gid: str, branches: Sequence[TransBranch], *, expect_status: str
    ) -> bool:
        row = await self._fetchrow(_ADD_BRANCHES, gid, expect_status, *_branch_arrays(branches))
        if row is None or not row[0]:
            return False
        ids = _inserted_ids(branches, row[2], zip(row[3], row[4], strict=True))
        stamp_branches(branches, ids, row[1])
        return True

    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        # One update per operation; of repeated ones the last wins, as if applied in order.
        updates = {(u.branch_id, u.op): u.status for u in progress.branches}
        touches_global = bool(progress_columns(progress)) or progress.next_cron_delay is not None
        delay = progress.next_cron_delay
        matched: bool = await self._fetchval(
            _SAVE_PROGRESS,
            gid,
            expect_status,
            owner,
            progress.status,
            progress.rollback_reason,
            progress.result,
            progress.next_cron_interval,
            None if delay is None else float(delay),
            progress.owner,
            touches_global,
            [key[0] for key in updates],
            [key[1] for key in updates],
            list(updates.values()),
        )
        return matched

    async def lock_due(self, *, owner: str, lease: float, limit: int) -> list[TransGlobal]:
        rows = await self._fetch(_LOCK_DUE, owner, float(lease), limit)
        return [global_from_row(row) for row in rows]

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        count = await self._execute(_RESET_CRON_TIME, float(after), limit)
        return count, count == limit

    async def reset_next_cron_time(self, gid: str) -> bool:
        return await self._execute(_RESET_NEXT_CRON_TIME, gid) > 0

    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        sql, values = scan_query(
            GLOBAL_COLUMNS, parse_position(position), where, limit, mark=_mark, moment=_utc
        )
        items = [global_from_row(row) for row in await self._fetch(sql, *values)]
        return Page(items, next_position([trans.id for trans in items], limit))

    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        """Delete up to `limit` finished (succeed or failed) transactions, with their branch
        operations, last updated more than `older_than` seconds ago by the database's
        clock; unfinished ones are never touched. Returns how many were deleted.

        Upstream expires finished data only on Redis (`FinishedDataExpire`); call this
        periodically, e.g. with that setting, until it returns less than `limit`.
        """
        if older_than < 0 or limit < 1:
            raise ValueError("older_than must be >= 0 and limit >= 1")
        count: int = await self._fetchval(_PURGE_FINISHED, float(older_than), limit)
        return count

    # --- key-value pairs (topics) --------------------------------------------------

    async def find_kv(self, cat: str, key: str) -> list[KV]:
        sql, values = find_kv_query(KV_COLUMNS, cat, key, _mark)
        return [kv_from_row(row) for row in await self._fetch(sql, *values)]

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        sql, values = scan_kv_query(KV_COLUMNS, cat, parse_position(position), limit, _mark)
        items = [kv_from_row(row) for row in await self._fetch(sql, *values)]
        return items, next_position([kv.id for kv in items], limit)

    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        return await self._execute(_CREATE_KV, cat, key, value) > 0

    async def update_kv(self, cat: str, key: str, value: str, *, version: int) -> bool:
        return await self._execute(_UPDATE_KV, cat, key, value, version) > 0

    async def delete_kv(self, cat: str, key: str) -> bool:
        return await self._execute(_DELETE_KV, cat, key) > 0


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pool `reset` hook: nothing to undo (see `PostgresStore.open`)."""
