"""The embedded store: one SQLite file in WAL mode, upstream's tables.

All writes go through one writer thread that commits them in groups, all reads through one
reader thread (see `sqlite_worker`). WAL lets the reader answer while the writer commits.
Each job below runs on one of those threads, inside its batch's transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from importlib import resources

from dtm.protocol.consts import FAILED, SUCCEED, UNFINISHED
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.stores.base import Page, Progress, ScanFilter, Store
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
from dtm.server.stores.sqlite_worker import Tx, Worker, format_time, parse_time

__all__ = ["SqliteStore"]

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
# How long a connection waits for a lock another process holds (e.g. a CLI migration).
_BUSY_TIMEOUT_MS = 5000

_UNFINISHED = ", ".join(f"'{status}'" for status in sorted(UNFINISHED))

_INSERT_GLOBAL = (
    f"INSERT INTO trans_global ({NEW_GLOBAL_COLUMNS}, create_time, update_time)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gid) DO NOTHING"
)
_INSERT_BRANCH = (
    "INSERT INTO trans_branch_op (gid, url, bin_data, branch_id, op, status, create_time,"
    " update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (gid, branch_id, op) DO NOTHING"
)
_UPDATE_BRANCH = (
    "UPDATE trans_branch_op SET status = ?, update_time = ?"
    " WHERE gid = ? AND branch_id = ? AND op = ?"
)
_FINISH_BRANCH = (
    "UPDATE trans_branch_op SET status = ?, update_time = ?, finish_time = ?"
    " WHERE gid = ? AND branch_id = ? AND op = ?"
)


def _mark(_n: int) -> str:
    """The placeholder of a statement's values, whatever their place."""
    return "?"


# --- jobs: each runs on a worker thread, inside its batch's transaction ---------------


def _insert_branches(tx: Tx, gid: str, branches: Sequence[TransBranch]) -> list[int]:
    """Insert the operations not yet stored; the new ids, 0 for those left as they were."""
    ids: list[int] = []
    execute = tx.cur.execute
    for branch in branches:
        cursor = execute(
            _INSERT_BRANCH,
            (
                gid,
                branch.url,
                branch.bin_data,
                branch.branch_id,
                branch.op,
                branch.status,
                tx.stamp,
                tx.stamp,
            ),
        )
        ids.append((cursor.lastrowid or 0) if cursor.rowcount else 0)
    return ids


def _create(
    tx: Tx, trans: TransGlobal, branches: Sequence[TransBranch], delay: float
) -> tuple[datetime, datetime, int, list[int]] | None:
    due = tx.later(delay)
    values = (*global_values(trans, format_time(due)), tx.stamp, tx.stamp)
    cursor = tx.cur.execute(_INSERT_GLOBAL, values)
    if not cursor.rowcount:
        return None
    return tx.now, due, cursor.lastrowid or 0, _insert_branches(tx, trans.gid, branches)


def _add_branches(
    tx: Tx, gid: str, branches: Sequence[TransBranch], expect_status: str
) -> tuple[datetime, list[int]] | None:
    # BEGIN IMMEDIATE holds the write lock, so the status cannot change before the inserts.
    guard = tx.cur.execute(
        "SELECT 1 FROM trans_global WHERE gid = ? AND status = ?", (gid, expect_status)
    ).fetchone()
    if guard is None:
        return None
    return tx.now, _insert_branches(tx, gid, branches)


def _save_progress(
    tx: Tx, gid: str, progress: Progress, expect_status: str, owner: str | None
) -> bool:
    # Column names come from this function only; every value is a bound parameter.
    changes = progress_columns(progress)
    sets = [f"{column} = ?" for column in changes]
    values: list[object] = list(changes.values())
    if progress.status == SUCCEED:
        sets.append("finish_time = ?")
        values.append(tx.stamp)
    elif progress.status == FAILED:
        sets.append("rollback_time = ?")
        values.append(tx.stamp)
    if progress.next_cron_delay is not None:
        sets.append("next_cron_time = ?")
        values.append(format_time(tx.later(progress.next_cron_delay)))
    where = "gid = ? AND status = ?" + ("" if owner is None else " AND owner = ?")
    guard: tuple[object, ...] = (
        (gid, expect_status) if owner is None else (gid, expect_status, owner)
    )
    cur = tx.cur
    if sets:
        sets.append("update_time = ?")
        values.append(tx.stamp)
        sql = f"UPDATE trans_global SET {', '.join(sets)} WHERE {where}"
        if not cur.execute(sql, (*values, *guard)).rowcount:
            return False
    elif cur.execute(f"SELECT 1 FROM trans_global WHERE {where}", guard).fetchone() is None:
        return False
    for update in progress.branches:
        if update.status in (SUCCEED, FAILED):
            cur.execute(
                _FINISH_BRANCH,
                (update.status, tx.stamp, tx.stamp, gid, update.branch_id, update.op),
            )
        else:
            cur.execute(_UPDATE_BRANCH, (update.status, tx.stamp, gid, update.branch_id, update.op))
    return True


def _lock_due(tx: Tx, owner: str, lease: float, limit: int) -> list[TransGlobal]:
    rows = tx.cur.execute(
        f"SELECT {GLOBAL_COLUMNS} FROM trans_global"
        f" WHERE status IN ({_UNFINISHED}) AND next_cron_time <= ?"
        " ORDER BY next_cron_time, id LIMIT ?",
        (tx.stamp, limit),
    ).fetchall()
    if not rows:
        return []
    until = tx.later(lease)
    until_text = format_time(until)
    tx.cur.executemany(
        "UPDATE trans_global SET owner = ?, next_cron_time = ?, update_time = ? WHERE id = ?",
        [(owner, until_text, tx.stamp, row[0]) for row in rows],
    )
    taken = [global_from_row(row, parse_time) for row in rows]
    for trans in taken:
        trans.owner = owner
        trans.next_cron_time = until
        trans.update_time = tx.now
    return taken


def _reset_cron_time(tx: Tx, after: float, limit: int) -> tuple[int, bool]:
    cursor = tx.cur.execute(
        "UPDATE trans_global SET next_cron_time = ?, update_time = ? WHERE id IN ("
        f" SELECT id FROM trans_global WHERE status IN ({_UNFINISHED})"
        " AND next_cron_time > ? LIMIT ?)",
        (tx.stamp, tx.stamp, format_time(tx.later(after)), limit),
    )
    return cursor.rowcount, cursor.rowcount == limit


def _reset_next_cron_time(tx: Tx, gid: str) -> bool:
    cursor = tx.cur.execute(
        "UPDATE trans_global SET next_cron_time = ?, update_time = ?"
        f" WHERE gid = ? AND status IN ({_UNFINISHED})",
        (tx.stamp, tx.stamp, gid),
    )
    return cursor.rowcount > 0


def _purge_finished(tx: Tx, older_than: float, limit: int) -> int:
    cutoff = format_time(tx.later(-older_than))
    gids = [
        (row[0],)
        for row in tx.cur.execute(
            "SELECT gid FROM trans_global WHERE status IN (?, ?) AND update_time < ? LIMIT ?",
            (SUCCEED, FAILED, cutoff, limit),
        ).fetchall()
    ]
    tx.cur.executemany("DELETE FROM trans_branch_op WHERE gid = ?", gids)
    tx.cur.executemany("DELETE FROM trans_global WHERE gid = ?", gids)
    return len(gids)


def _find(tx: Tx, gid: str) -> TransGlobal | None:
    row = tx.cur.execute(
        f"SELECT {GLOBAL_COLUMNS} FROM trans_global WHERE gid = ?", (gid,)
    ).fetchone()
    return None if row is None else global_from_row(row, parse_time)


def _load(tx: Tx, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
    trans = _find(tx, gid)
    if trans is None:
        return None, []
    rows = tx.cur.execute(
        f"SELECT {BRANCH_COLUMNS} FROM trans_branch_op WHERE gid = ? ORDER BY id", (gid,)
    ).fetchall()
    return trans, [branch_from_row(row, parse_time) for row in rows]


def _scan(tx: Tx, before: int | None, limit: int, where: ScanFilter) -> list[TransGlobal]:
    sql, values = scan_query(GLOBAL_COLUMNS, before, where, limit, mark=_mark, moment=format_time)
    return [global_from_row(row, parse_time) for row in tx.cur.execute(sql, values).fetchall()]


def _find_kv(tx: Tx, cat: str, key: str) -> list[KV]:
    sql, values = find_kv_query(KV_COLUMNS, cat, key, _mark)
    return [kv_from_row(row, parse_time) for row in tx.cur.execute(sql, values).fetchall()]


def _scan_kv(tx: Tx, cat: str, before: int | None, limit: int) -> list[KV]:
    sql, values = scan_kv_query(KV_COLUMNS, cat, before, limit, _mark)
    return [kv_from_row(row, parse_time) for row in tx.cur.execute(sql, values).fetchall()]


def _create_kv(tx: Tx, cat: str, key: str, value: str) -> bool:
    cursor = tx.cur.execute(
        "INSERT INTO kv (cat, k, v, version, create_time, update_time)"
        " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (cat, k) DO NOTHING",
        (cat, key, value, tx.stamp, tx.stamp),
    )
    return cursor.rowcount > 0


def _update_kv(tx: Tx, cat: str, key: str, value: str, version: int) -> bool:
    cursor = tx.cur.execute(
        "UPDATE kv SET v = ?, version = version + 1, update_time = ?"
        " WHERE cat = ? AND k = ? AND version = ?",
        (value, tx.stamp, cat, key, version),
    )
    return cursor.rowcount > 0


def _delete_kv(tx: Tx, cat: str, key: str) -> bool:
    return tx.cur.execute("DELETE FROM kv WHERE cat = ? AND k = ?", (cat, key)).rowcount > 0


def _ping(tx: Tx) -> None:
    tx.cur.execute("SELECT 1").fetchone()


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """Set WAL mode, waiting out another process doing the same: that pragma fails with
    "database is locked" at once instead of calling the busy handler."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteStore(Store):
    """A `Store` in one SQLite file, for a single server process.

    `synchronous` is SQLite's pragma: FULL (default) makes every acknowledged write survive
    power loss; NORMAL only a process crash, for a much cheaper commit. `max_batch` caps
    how many writes (or reads) share one transaction.
    """

    def __init__(self, path: str, *, synchronous: str = "FULL", max_batch: int = 256) -> None:
        synchronous = synchronous.upper()
        # Checked because a pragma value cannot be a bound parameter.
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._path = path
        self._synchronous = synchronous
        self._writer = Worker(
            "dtm-sqlite-writer", self._connect_writer, write=True, max_batch=max_batch
        )
        self._reader = Worker(
            "dtm-sqlite-reader", self._connect_reader, write=False, max_batch=max_batch
        )

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the workers issue BEGIN/COMMIT themselves, one per batch.
        conn = sqlite3.connect(self._path, isolation_level=None, cached_statements=256)
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            # WAL: readers keep reading while the writer commits, and a commit appends to
            # one file instead of rewriting pages twice. The mode is stored in the file.
            _switch_to_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            schema = resources.files(__package__).joinpath("sql", "sqlite.sql").read_text()
            conn.executescript(schema)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        # A read connection that can never write, whatever a future job tries.
        conn.execute("PRAGMA query_only = ON")
        return conn

    def batch_stats(self) -> tuple[int, int]:
        """(batches, jobs) the writer has run: jobs / batches is the group-commit size."""
        return self._writer.batches, self._writer.jobs

    async def open(self) -> None:
        # The writer first: it creates the schema and switches the file to WAL.
        await self._writer.start()
        try:
            await self._reader.start()
        except BaseException:
            await self._writer.stop()
            raise

    async def migrate(self) -> None:
        """Nothing to do: the embedded store creates its schema when it opens."""

    async def close(self) -> None:
        await asyncio.gather(self._writer.stop(), self._reader.stop())

    async def ping(self) -> None:
        await asyncio.gather(self._reader.submit(_ping), self._writer.submit(_ping))

    async def create(
        self, trans: TransGlobal, branches: Sequence[TransBranch], *, next_cron_delay: float
    ) -> bool:
        created = await self._writer.submit(_create, trans, branches, next_cron_delay)
        if created is None:
            return False
        now, due, trans.id, ids = created
        trans.create_time = trans.update_time = now
        trans.next_cron_time = due
        stamp_branches(branches, ids, now)
        return True

    async def find(self, gid: str) -> TransGlobal | None:
        return await self._reader.submit(_find, gid)

    async def load(self, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
        return await self._reader.submit(_load, gid)

    async def add_branches(
        self, gid: str, branches: Sequence[TransBranch], *, expect_status: str
    ) -> bool:
        added = await self._writer.submit(_add_branches, gid, branches, expect_status)
        if added is None:
            return False
        now, ids = added
        stamp_branches(branches, ids, now)
        return True

    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        return await self._writer.submit(_save_progress, gid, progress, expect_status, owner)

    async def lock_due(self, *, owner: str, lease: float, limit: int) -> list[TransGlobal]:
        return await self._writer.submit(_lock_due, owner, lease, limit)

    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        return await self._writer.submit(_reset_cron_time, after, limit)

    async def reset_next_cron_time(self, gid: str) -> bool:
        return await self._writer.submit(_reset_next_cron_time, gid)

    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        return await self._writer.submit(_purge_finished, older_than, limit)

    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        items = await self._reader.submit(_scan, parse_position(position), limit, where)
        return Page(items, next_position([trans.id for trans in items], limit))

    async def find_kv(self, cat: str, key: str) -> list[KV]:
        return await self._reader.submit(_find_kv, cat, key)

    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        items = await self._reader.submit(_scan_kv, cat, parse_position(position), limit)
        return items, next_position([kv.id for kv in items], limit)

    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        return await self._writer.submit(_create_kv, cat, key, value)

    async def update_kv(self, cat: str, key: str, value: str, *, version: int) -> bool:
        return await self._writer.submit(_update_kv, cat, key, value, version)

    async def delete_kv(self, cat: str, key: str) -> bool:
        return await self._writer.submit(_delete_kv, cat, key)
