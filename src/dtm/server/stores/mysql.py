"""The MySQL/MariaDB store: upstream DTM's database and tables, through an asyncmy pool.

Each method sends one batch of statements (asyncmy always enables multi-statements) that
begins with `SET @now6 := NOW(6), @now := NOW()` where it needs the time, so every
stamp of one call is the database's clock at one instant, and ends with COMMIT where it
writes more than one row: one round trip, one transaction. Values are always bound
parameters (escaped by the driver); only names fixed in this module are formatted in.
`lock_due` and `purge_finished` take two round trips: they lock rows, then change them.

Times. Upstream writes DATETIME (second precision) in local time; so does this store, with
the session's time zone. Every DATETIME is read as `UNIX_TIMESTAMP(column)`, which the
server converts from the session's zone (daylight saving included), and turned into an
aware UTC datetime; a time filter goes in as `FROM_UNIXTIME(seconds)`. Due times are
`now + delay` computed from `UNIX_TIMESTAMP(NOW(6))`, rounded *up* to the second for a
positive delay (a lease may end late, never early: a transaction due when
`next_cron_time <= NOW()` is never handed to a second owner while its lease runs) and down
for a zero or negative one (due now means due now).

Connections. The pool connects without a database when `Store.Db` does not exist yet, so
`migrate` can create it; once it exists the pool's connections select it. Sessions run in
READ COMMITTED: no gap locks, so concurrent inserts do not deadlock, and `FOR UPDATE SKIP
LOCKED` skips exactly the rows another instance holds. A connection that fails in any way
is closed, never returned to the pool; reads are retried once when a pooled connection
turns out to be dead (e.g. killed server-side), writes never (they may have committed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, NamedTuple

import asyncmy
from asyncmy.constants import CLIENT, CR, ER

from dtm.protocol.consts import ABORTING, FAILED, PREPARED, SUBMITTED, SUCCEED
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

__all__ = ["MysqlStore"]

# A store that cannot connect answers within this many seconds (upstream's driver: 10).
_CONNECT_TIMEOUT = 5
# Every pooled session: see the module docstring.
_SESSION_SETUP = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
# The attribute a connection carries its birth (monotonic seconds) in, for ConnMaxLifeTime.
_BORN = "_dtm_born"

_DRIVER_ERRORS = (asyncmy.errors.MySQLError, OSError, EOFError)
# Errors of a connection that was lost, not of a statement.
_LOST = frozenset({CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST, CR.CR_SERVER_LOST_EXTENDED, 1927})

_CLOCK = "SET @now6 := NOW(6), @now := NOW()"

_GLOBAL_COLUMNS = (
    "id, gid, trans_type, status, query_prepared, protocol, UNIX_TIMESTAMP(create_time),"
    " UNIX_TIMESTAMP(update_time), UNIX_TIMESTAMP(finish_time),"
    " UNIX_TIMESTAMP(rollback_time), options, custom_data, next_cron_interval,"
    " UNIX_TIMESTAMP(next_cron_time) AS due, owner, ext_data, result, rollback_reason"
)
_BRANCH_COLUMNS = (
    "id, gid, url, bin_data, branch_id, op, status, UNIX_TIMESTAMP(create_time),"
    " UNIX_TIMESTAMP(update_time), UNIX_TIMESTAMP(finish_time), UNIX_TIMESTAMP(rollback_time)"
)
_KV_COLUMNS = "id, cat, k, v, version, UNIX_TIMESTAMP(create_time), UNIX_TIMESTAMP(update_time)"
_UNFINISHED = f"'{ABORTING}', '{PREPARED}', '{SUBMITTED}'"
_FINISHED = f"'{FAILED}', '{SUCCEED}'"

_INSERT_GLOBAL = (
    f"INSERT INTO trans_global ({NEW_GLOBAL_COLUMNS}, create_time, update_time)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, {due}, %s, %s, %s, %s, @now, @now)"
)
# `id = id` leaves an existing operation as it was; its insert id is then 0.
_INSERT_BRANCH = (
    "INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status, create_time,"
    " update_time) VALUES (%s, %s, %s, %s, %s, %s, @now, @now) ON DUPLICATE KEY UPDATE id = id"
)
_INSERT_BRANCH_IF_OK = (
    "INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status, create_time,"
    " update_time) SELECT %s, %s, %s, %s, %s, %s, @now, @now FROM DUAL WHERE @ok > 0"
    " ON DUPLICATE KEY UPDATE id = id"
)
_UPDATE_BRANCH = (
    "UPDATE trans_branch_op SET status = %s, update_time = @now{finish}"
    " WHERE gid = %s AND branch_id = %s AND op = %s AND @ok > 0"
)
# One part per unfinished status: each reads the (status, next_cron_time) index in order and
# locks only the rows it returns; one range over three statuses would sort and lock them all.
_LOCK_DUE = " UNION ALL ".join(
    f"(SELECT {_GLOBAL_COLUMNS} FROM trans_global WHERE status = '{status}'"
    " AND next_cron_time <= @now ORDER BY next_cron_time, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    for status in (ABORTING, PREPARED, SUBMITTED)
)


class _Result(NamedTuple):
    """What one statement of a batch answered."""

    rowcount: int
    lastrowid: int
    rows: tuple[Any, ...]


class _Duplicate(Exception):
    """Statement number `index` of a batch hit a unique key."""

    def __init__(self, index: int) -> None:
        super().__init__(f"duplicate key in statement {index}")
        self.index = index


class _LostConnection(StoreUnavailable):
    """A pooled connection turned out to be dead; a read may try again on another."""


def _errno(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _time(value: Any) -> datetime | None:
    """The aware UTC time of a UNIX_TIMESTAMP() value, None for NULL."""
    if value is None:
        return None
    return datetime.fromtimestamp(value if isinstance(value, int) else float(value), UTC)


def _mark(_n: int) -> str:
    """The placeholder of a statement's values, whatever their place."""
    return "%s"


def _later(delay: float) -> str:
    """SQL for now + `delay` seconds as a DATETIME; its one parameter is `_seconds(delay)`."""
    rounding = "CEIL" if delay > 0 else "FLOOR"
    return f"FROM_UNIXTIME({rounding}(UNIX_TIMESTAMP(@now6) + %s))"


def _seconds(delay: float) -> Decimal:
    """A delay as an exact decimal literal (a float would be a DOUBLE in SQL)."""
    return Decimal(f"{delay:.6f}")


def _unix(moment: datetime) -> Decimal:
    """Seconds since the epoch of a time (naive = UTC), within FROM_UNIXTIME's range."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Decimal(f"{min(max(moment.timestamp(), 0.0), 4294967295.0):.6f}")


def _quote_name(name: str) -> str:
    if not name or len(name) > 64:
        raise ValueError(f"not a MySQL database name: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def _branch_values(gid: str, branch: TransBranch) -> tuple[object, ...]:
    return (gid, branch.url, branch.bin_data, branch.branch_id, branch.op, branch.status)


class _Session:
    """One pooled connection, lent for the statements of one call."""

    __slots__ = ("conn", "reused")

    def __init__(self, conn: asyncmy.Connection, *, reused: bool) -> None:
        self.conn = conn
        self.reused = reused

    async def run(self, sql: str, args: Sequence[object] | None = None) -> list[_Result]:
        """Send one batch of statements; what each answered, in order.

        The server stops at the first failing statement; a unique-key violation is raised
        as `_Duplicate` with that statement's number, anything else as the driver raised it.
        """
        cur = self.conn.cursor()
        results: list[_Result] = []
        try:
            await cur.execute(sql, args)
            while True:
                rows = tuple(await cur.fetchall()) if cur.description else ()
                rowcount: Any = cur.rowcount  # typed `object` by asyncmy's stubs
                results.append(_Result(int(rowcount), int(cur.lastrowid or 0), rows))
                if not await cur.nextset():
                    return results
        except asyncmy.errors.IntegrityError as exc:
            if _errno(exc) == ER.DUP_ENTRY:
                raise _Duplicate(len(results)) from exc
            raise


class MysqlStore(Store):
    """A `Store` in a MySQL (8.0+) or MariaDB (10.6+) database, shared by many servers.

    Configured by upstream's `Store` keys: Host, Port, User, Password, Db, MaxOpenConns
    (pool size), ConnMaxLifeTime (minutes a connection is used before it is replaced; 0 =
    no limit). asyncmy's pool keeps every idle connection, so MaxIdleConns is not applied.
    """

    def __init__(self, conf: StoreConfig) -> None:
        self._conf = conf
        self._db = _quote_name(conf.Db)
        self._max_open = pool_size(conf.MaxOpenConns)
        self._lifetime = conf.ConnMaxLifeTime * 60.0
        self._pool: asyncmy.Pool | None = None
        self._pool_has_db = False

    # --- connections ----------------------------------------------------------------

    async def _create_pool(self, *, with_db: bool) -> asyncmy.Pool:
        conf = self._conf
        options: dict[str, Any] = {
            "host": conf.Host or "127.0.0.1",
            "port": conf.Port or 3306,
            "user": conf.User,
            "password": conf.Password,
            "charset": "utf8mb4",
            "autocommit": True,
            # Affected rows of an UPDATE count the rows matched, not only those changed: a
            # guarded write whose values happen to equal the stored ones still succeeded.
            "client_flag": CLIENT.FOUND_ROWS,
            # bin_data goes in as _binary'...', never read as utf8mb4 text.
            "binary_prefix": True,
            "connect_timeout": _CONNECT_TIMEOUT,
            "init_command": _SESSION_SETUP,
        }
        if with_db:
            options["db"] = conf.Db
        recycle = int(self._lifetime) if self._lifetime > 0 else -1
        # minsize=1: creating the pool connects once, so an unreachable server fails here.
        pool: asyncmy.Pool = await asyncmy.create_pool(
            minsize=1, maxsize=self._max_open, pool_recycle=recycle, **options
        )
        return pool

    async def _acquire(self, pool: asyncmy.Pool) -> tuple[asyncmy.Connection, bool]:
        """A connection younger than ConnMaxLifeTime, and whether it served before."""
        while True:
            conn: asyncmy.Connection = await pool.acquire()
            now = time.monotonic()
            born: float | None = getattr(conn, _BORN, None)
            if born is None:
                setattr(conn, _BORN, now)
                return conn, False
            if self._lifetime <= 0 or now - born < self._lifetime:
                return conn, True
            conn.close()
            pool.release(conn)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        """A connection for one call; driver errors leave as StoreUnavailable.

        A connection that saw any error (or a cancellation) is closed, so nothing half-done
        (an open transaction, unread results) goes back to the pool.
        """
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("mysql store is not open")
        try:
            conn, reused = await self._acquire(pool)
        except (*_DRIVER_ERRORS, RuntimeError) as exc:
            raise StoreUnavailable(f"mysql: cannot connect: {exc}") from exc
        healthy = False
        try:
            yield _Session(conn, reused=reused)
            healthy = True
        except (*_DRIVER_ERRORS, _Duplicate) as exc:
            lost = (
                isinstance(exc, OSError | EOFError | asyncmy.errors.InterfaceError)
                or _errno(exc) in _LOST
            )
            if reused and lost:
                raise _LostConnection(f"mysql: connection lost: {exc}") from exc
            raise StoreUnavailable(f"mysql: {exc}") from exc
        finally:
            if not healthy:
                conn.close()
            pool.release(conn)

    async def _write(self, sql: str, args: Sequence[object] | None = None) -> list[_Result]:
        async with self._session() as session:
            return await session.run(sql, args)

    async def _read(self, sql: str, args: Sequence[object] | None = None) -> list[_Result]:
        try:
            return await self._write(sql, args)
        except _LostConnection:
            # Nothing was written; the pool has dropped the dead connection.
            return await self._write(sql, args)

    # --- life cycle -----------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await self._create_pool(with_db=True)
            self._pool_has_db = True
        except asyncmy.errors.OperationalError as exc:
            if _errno(exc) != ER.BAD_DB_ERROR:
                raise StoreUnavailable(f"mysql: cannot connect: {exc}") from exc
        except (*_DRIVER_ERRORS, RuntimeError) as exc:
            raise StoreUnavailable(f"mysql: cannot connect: {exc}") from exc
        if self._pool is None:
            # The database does not exist yet: connect without it, so migrate can create it.
            try:
                self._pool = await self._create_pool(with_db=False)
            except (*_DRIVER_ERRORS, RuntimeError) as exc:
                raise StoreUnavailable(f"mysql: cannot connect: {exc}") from exc
            self._pool_has_db = False

    async def migrate(self) -> None:
        schema = resources.files(__package__).joinpath("sql", "mysql.sql").read_text()
        # Notes ("database exists", "table exists") would be logged by asyncmy as warnings.
        await self._write(
            "SET @dtm_sql_notes := @@sql_notes; SET sql_notes = 0;"
            f" CREATE DATABASE IF NOT EXISTS {self._db} DEFAULT CHARACTER SET utf8mb4;"
            f" USE {self._db}; {schema} SET sql_notes = @dtm_sql_notes"
        )
        if not self._pool_has_db and self._pool is not None:
            old = self._pool
            try:
                self._pool = await self._create_pool(with_db=True)
            except (*_DRIVER_ERRORS, RuntimeError) as exc:
                raise StoreUnavailable(f"mysql: cannot connect: {exc}") from exc
            self._pool_has_db = True
            old.close()
            await old.wait_closed()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Waits for connections still lent out: their calls finish first.
            pool.close()
            await pool.wait_closed()

    async def ping(self) -> None:
        await self._read("SELECT 1")

    # --- global transactions --------------------------------------------------------

    async def create(
        self, trans: TransGlobal, branches: Sequence[TransBranch], *, next_cron_delay: float
    ) -> bool:
        statements = [
            _CLOCK,
            "START TRANSACTION",
            _INSERT_GLOBAL.format(due=_later(next_cron_delay)),
            *([_INSERT_BRANCH] * len(branches)),
            "SELECT UNIX_TIMESTAMP(create_time), UNIX_TIMESTAMP(next_cron_time)"
            " FROM trans_global WHERE gid = %s",
            "COMMIT",
        ]
        args = global_values(trans, _seconds(next_cron_delay))
        for branch in branches:
            args.extend(_branch_values(trans.gid, branch))
        args.append(trans.gid)
        async with self._session() as session:
            try:
                results = await session.run("; ".join(statements), args)
            except _Duplicate as exc:
                if exc.index != 2:
                    raise
                # The server stopped at the INSERT: the transaction is open and empty.
                await session.run("ROLLBACK")
                return False
        inserted = results[2]
        [(created, due)] = results[-2].rows
        trans.id = inserted.lastrowid
        trans.create_time = trans.update_time = _time(created)
        trans.next_cron_time = _time(due)
        ids = [result.lastrowid for result in results[3 : 3 + len(branches)]]
        stamp_branches(branches, ids, trans.create_time)
        return True

    async def find(self, gid: str) -> TransGlobal | None:
        [result] = await self._read(
            f"SELECT {_GLOBAL_COLUMNS} FROM trans_global WHERE gid = %s", (gid,)
        )
        return global_from_row(result.rows[0], _time) if result.rows else None

    async def load(self, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
        # One snapshot for both reads, so a write between them cannot tear the answer.
        results = await self._read(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;"
            " START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;"
            f" SELECT {_GLOBAL_COLUMNS} FROM trans_global WHERE gid = %s;"
            f" SELECT {_BRANCH_COLUMNS} FROM trans_branch_op WHERE gid = %s ORDER BY id;"
            " COMMIT",
            (gid, gid),
        )
        found, branches = results[2].rows, results[3].rows
        if not found:
            return None, []
        return global_from_row(found[0], _time), [branch_from_row(row, _time) for row in branches]

    async def add_branches(
        self, gid: str, branches: Sequence[TransBranch], *, expect_status: str
    ) -> bool:
        # The no-op UPDATE locks the global row (as upstream's SELECT ... FOR UPDATE does)
        # and is the guard: the inserts run only when it matched.
        statements = [
            _CLOCK,
            "START TRANSACTION",
            "UPDATE trans_global SET status = status WHERE gid = %s AND status = %s",
            "SET @ok := ROW_COUNT()",
            *([_INSERT_BRANCH_IF_OK] * len(branches)),
            "SELECT UNIX_TIMESTAMP(@now)",
            "COMMIT",
        ]
        args: list[object] = [gid, expect_status]
        for branch in branches:
            args.extend(_branch_values(gid, branch))
        results = await self._write("; ".join(statements), args)
        if not results[2].rowcount:
            return False
        [(now,)] = results[-2].rows
        ids = [result.lastrowid for result in results[4 : 4 + len(branches)]]
        stamp_branches(branches, ids, _time(now))
        return True

    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        # Column names come from this method only; every value is a bound parameter.
        changes = progress_columns(progress)
        sets = [f"{column} = %s" for column in changes]
        args: list[object] = list(changes.values())
        if progress.status == SUCCEED:
            sets.append("finish_time = @now")
        elif progress.status == FAILED:
            sets.append("rollback_time = @now")
        if progress.next_cron_delay is not None:
            sets.append(f"next_cron_time = {_later(progress.next_cron_delay)}")
            args.append(_seconds(progress.next_cron_delay))
        if sets:
            sets.append("update_time = @now")
        else:
            # Nothing for the global: lock it and check the guard, leave update_time alone.
            sets.append("status = status")
        args.extend((gid, expect_status))
        where = "gid = %s AND status = %s"
        if owner is not None:
            where += " AND owner = %s"
            args.append(owner)
        update = f"UPDATE trans_global SET {', '.join(sets)} WHERE {where}"
        if not progress.branches:
            # A single statement is a transaction of its own.
            results = await self._write(f"{_CLOCK}; {update}", args)
            return results[1].rowcount > 0
        statements = [_CLOCK, "START TRANSACTION", update, "SET @ok := ROW_COUNT()"]
        for branch in progress.branches:
            final = branch.status in (SUCCEED, FAILED)
            statements.append(_UPDATE_BRANCH.format(finish=", finish_time = @now" if final else ""))
            args.extend((branch.status, gid, branch.branch_id, branch.op))
        statements.append("COMMIT")
        results = await self._write("; ".join(statements), args)
        return results[2].rowcount > 0

    async def lock_due(self, *, owner: str, lease: float, limit: int) -> list[TransGlobal]:
        if limit <= 0:
            return []
        async with self._session() as session:
            results = await session.run(
                f"{_CLOCK}; SET @due := {_later(lease)}; START TRANSACTION;"
                " SELECT UNIX_TIMESTAMP(@now), UNIX_TIMESTAMP(@due);"
                f" {_LOCK_DUE} ORDER BY due, id LIMIT %s",
                (_seconds(lease), limit, limit, limit, limit),
            )
            [(now, due)] = results[3].rows
            rows = results[4].rows
            if not rows:
                await session.run("COMMIT")
                return []
            ids = [row[0] for row in rows]
            await session.run(
                "UPDATE trans_global SET owner = %s, next_cron_time = @due, update_time = @now"
                f" WHERE id IN ({', '.join(['%s'] * len(ids))}); COMMIT",
                (owner, *ids),
            )
        taken = [global_from_row(row, _time) for row in rows]
        for trans in taken:
            trans.owner = owner
            trans.next_cron_time = _time(due)
            trans.update_time = _time(now)
        return taken

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        [result] = await self._write(
            "UPDATE trans_global SET next_cron_time = NOW(), update_time = NOW()"
            f" WHERE status IN ({_UNFINISHED})"
            " AND next_cron_time > FROM_UNIXTIME(UNIX_TIMESTAMP(NOW(6)) + %s) LIMIT %s",
            (_seconds(after), limit),
        )
        return result.rowcount, result.rowcount == limit

    async def reset_next_cron_time(self, gid: str) -> bool:
        [result] = await self._write(
            "UPDATE trans_global SET next_cron_time = NOW(), update_time = NOW()"
            f" WHERE gid = %s AND status IN ({_UNFINISHED})",
            (gid,),
        )
        return result.rowcount > 0

    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        """Delete up to `limit` finished transactions (and their branch operations) last
        updated more than `older_than` seconds ago, by the database's clock; how many.

        Rows another caller holds are skipped, so two servers purge side by side.
        """
        if limit <= 0:
            return 0
        async with self._session() as session:
            results = await session.run(
                "START TRANSACTION;"
                f" SELECT id, gid FROM trans_global WHERE status IN ({_FINISHED})"
                " AND COALESCE(update_time, create_time)"
                " < FROM_UNIXTIME(UNIX_TIMESTAMP(NOW(6)) - %s)"
                " LIMIT %s FOR UPDATE SKIP LOCKED",
                (_seconds(older_than), limit),
            )
            rows = results[1].rows
            if not rows:
                await session.run("COMMIT")
                return 0
            marks = ", ".join(["%s"] * len(rows))
            await session.run(
                f"DELETE FROM trans_branch_op WHERE gid IN ({marks});"
                f" DELETE FROM trans_global WHERE id IN ({marks}); COMMIT",
                [row[1] for row in rows] + [row[0] for row in rows],
            )
        return len(rows)

    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        sql, args = scan_query(
            _GLOBAL_COLUMNS,
            parse_position(position),
            where,
            limit,
            mark=_mark,
            moment=_unix,
            moment_mark="FROM_UNIXTIME({})",
        )
        [result] = await self._read(sql, args)
        items = [global_from_row(row, _time) for row in result.rows]
        return Page(items, next_position([trans.id for trans in items], limit))

    # --- key-value pairs ------------------------------------------------------------

    async def find_kv(self, cat: str, key: str) -> list[KV]:
        sql, values = find_kv_query(_KV_COLUMNS, cat, key, _mark)
        [result] = await self._read(sql, values or None)
        return [kv_from_row(row, _time) for row in result.rows]

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        sql, args = scan_kv_query(_KV_COLUMNS, cat, parse_position(position), limit, _mark)
        [result] = await self._read(sql, args)
        items = [kv_from_row(row, _time) for row in result.rows]
        return items, next_position([kv.id for kv in items], limit)

    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        async with self._session() as session:
            try:
                await session.run(
                    "INSERT INTO kv (cat, k, v, version, create_time, update_time)"
                    " VALUES (%s, %s, %s, 1, NOW(), NOW())",
                    (cat, key, value),
                )
            except _Duplicate:
                return False
        return True

    async def update_kv(self, cat: str, key: str, value: str, *, version: int) -> bool:
        [result] = await self._write(
            "UPDATE kv SET v = %s, version = version + 1, update_time = NOW()"
            " WHERE cat = %s AND k = %s AND version = %s",
            (value, cat, key, version),
        )
        return result.rowcount > 0

    async def delete_kv(self, cat: str, key: str) -> bool:
        [result] = await self._write("DELETE FROM kv WHERE cat = %s AND k = %s", (cat, key))
        return result.rowcount > 0
