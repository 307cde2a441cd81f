"""Rows of upstream's three tables -> records, the queries of the listings, and upstream's
paging by id: shared by the SQL stores, which select the columns in the order of
`GLOBAL_COLUMNS`, `BRANCH_COLUMNS` and `KV_COLUMNS` (MySQL reads the times through
UNIX_TIMESTAMP(), in the same order). `progress_columns`, `stamp_branches` and
`next_position` serve the Redis store too.

NULLs occur in rows that upstream or an operator wrote; records hold "" and 0 for them.
Each store passes its own reading of a time column (`time`), since drivers differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.stores.base import Progress, ScanFilter

GLOBAL_COLUMNS = (
    "id, gid, trans_type, status, query_prepared, protocol, create_time, update_time,"
    " finish_time, rollback_time, options, custom_data, next_cron_interval, next_cron_time,"
    " owner, ext_data, result, rollback_reason"
)
BRANCH_COLUMNS = (
    "id, gid, url, bin_data, branch_id, op, status, create_time, update_time, finish_time,"
    " rollback_time"
)
KV_COLUMNS = "id, cat, k, v, version, create_time, update_time"
# The columns of a new global that `global_values` gives, in its order; each store adds
# create_time and update_time from its own clock.
NEW_GLOBAL_COLUMNS = (
    "gid, trans_type, status, query_prepared, protocol, options, custom_data,"
    " next_cron_interval, next_cron_time, owner, ext_data, result, rollback_reason"
)


class Row(Protocol):
    """What every driver's row gives: columns by position."""

    def __getitem__(self, index: int, /) -> Any: ...


TimeOf = Callable[[Any], datetime | None]


def _same(value: Any) -> datetime | None:
    return value  # type: ignore[no-any-return]


def global_from_row(row: Row, time: TimeOf = _same) -> TransGlobal:
    """id, gid, trans_type, status, query_prepared, protocol, create_time, update_time,
    finish_time, rollback_time, options, custom_data, next_cron_interval, next_cron_time,
    owner, ext_data, result, rollback_reason."""
    return TransGlobal(
        id=row[0],
        gid=row[1],
        trans_type=row[2],
        status=row[3],
        query_prepared=row[4] or "",
        protocol=row[5] or "",
        create_time=time(row[6]),
        update_time=time(row[7]),
        finish_time=time(row[8]),
        rollback_time=time(row[9]),
        options=row[10] or "",
        custom_data=row[11] or "",
        next_cron_interval=row[12] or 0,
        next_cron_time=time(row[13]),
        owner=row[14] or "",
        ext_data=row[15] or "",
        result=row[16] or "",
        rollback_reason=row[17] or "",
    )


def branch_from_row(row: Row, time: TimeOf = _same) -> TransBranch:
    """id, gid, url, bin_data, branch_id, op, status, create_time, update_time,
    finish_time, rollback_time."""
    return TransBranch(
        id=row[0],
        gid=row[1],
        url=row[2] or "",
        bin_data=bytes(row[3] or b""),
        branch_id=row[4],
        op=row[5],
        status=row[6],
        create_time=time(row[7]),
        update_time=time(row[8]),
        finish_time=time(row[9]),
        rollback_time=time(row[10]),
    )


def kv_from_row(row: Row, time: TimeOf = _same) -> KV:
    """id, cat, k, v, version, create_time, update_time."""
    return KV(
        id=row[0],
        cat=row[1],
        k=row[2],
        v=row[3] or "",
        version=1 if row[4] is None else row[4],  # the column's default
        create_time=time(row[5]),
        update_time=time(row[6]),
    )


def global_values(trans: TransGlobal, next_cron_time: object) -> list[object]:
    """The values of `NEW_GLOBAL_COLUMNS` for `trans`; `next_cron_time` is what the store
    binds for that column (MySQL and PostgreSQL: the delay their SQL adds to the clock)."""
    return [
        trans.gid,
        trans.trans_type,
        trans.status,
        trans.query_prepared,
        trans.protocol,
        trans.options,
        trans.custom_data,
        trans.next_cron_interval,
        next_cron_time,
        trans.owner,
        trans.ext_data,
        trans.result,
        trans.rollback_reason,
    ]


def stamp_branches(
    branches: Sequence[TransBranch], ids: Sequence[int], now: datetime | None
) -> None:
    """Give the caller's objects what the store wrote for them: `ids` in their order, 0 for
    an operation that was already stored (left as it is)."""
    for branch, branch_id in zip(branches, ids, strict=True):
        if branch_id:
            branch.id = branch_id
            branch.create_time = branch.update_time = now


def progress_columns(progress: Progress) -> dict[str, str | int]:
    """The global's columns that `progress` sets to a value it holds (those not None), by
    name; the times it changes are each store's to write."""
    return {
        column: value
        for column, value in (
            ("status", progress.status),
            ("rollback_reason", progress.rollback_reason),
            ("result", progress.result),
            ("next_cron_interval", progress.next_cron_interval),
            ("owner", progress.owner),
        )
        if value is not None
    }


def find_kv_query(
    columns: str, cat: str, key: str, mark: Callable[[int], str]
) -> tuple[str, list[str]]:
    """The SELECT of `find_kv` ("" matches any category or key) and its values; `mark(n)`
    is the driver's placeholder for the n-th value."""
    conditions: list[str] = []
    values: list[str] = []
    for column, value in (("cat", cat), ("k", key)):
        if value:
            values.append(value)
            conditions.append(f"{column} = {mark(len(values))}")
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    return f"SELECT {columns} FROM kv{where} ORDER BY id", values


def scan_query(
    columns: str,
    before: int | None,
    where: ScanFilter,
    limit: int,
    *,
    mark: Callable[[int], str],
    moment: Callable[[datetime], object],
    moment_mark: str = "{}",
) -> tuple[str, list[object]]:
    """The SELECT of `scan` (newest first, ids below `before` when given) and its values;
    `mark` as in `find_kv_query`, `moment(t)` the value bound for a time filter and
    `moment_mark` the SQL around its placeholder."""
    conditions: list[str] = []
    values: list[object] = []
    for condition, value, template in (
        ("id <", before, "{}"),
        ("status =", where.status, "{}"),
        ("trans_type =", where.trans_type, "{}"),
        ("create_time >=", where.create_time_start, moment_mark),
        ("create_time <=", where.create_time_end, moment_mark),
    ):
        if value is not None:
            values.append(moment(value) if isinstance(value, datetime) else value)
            conditions.append(f"{condition} {template.format(mark(len(values)))}")
    filters = " WHERE " + " AND ".join(conditions) if conditions else ""
    values.append(limit)
    sql = f"SELECT {columns} FROM trans_global{filters} ORDER BY id DESC LIMIT {mark(len(values))}"
    return sql, values


def scan_kv_query(
    columns: str, cat: str, before: int | None, limit: int, mark: Callable[[int], str]
) -> tuple[str, list[object]]:
    """The SELECT of `scan_kv` (a category's pairs, newest first, ids below `before` when
    given) and its values; `mark` as in `find_kv_query`."""
    values: list[object] = [cat]
    filters = f"cat = {mark(1)}"
    if before is not None:
        values.append(before)
        filters += f" AND id < {mark(2)}"
    values.append(limit)
    sql = f"SELECT {columns} FROM kv WHERE {filters} ORDER BY id DESC LIMIT {mark(len(values))}"
    return sql, values


def next_position(ids: Sequence[int], limit: int) -> str:
    """Upstream's paging: the last id returned, or "" once a page comes back short."""
    return str(ids[-1]) if ids and len(ids) >= limit else ""


def parse_position(text: str) -> int | None:
    """The id a page starts below; ValueError for a position the store never gave out."""
    return int(text) if text else None
