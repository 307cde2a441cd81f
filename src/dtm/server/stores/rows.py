"""Rows of upstream's three tables -> records, and upstream's paging by id: shared by the
SQL stores, which select the columns in this order.

NULLs occur in rows that upstream or an operator wrote; records hold "" and 0 for them.
Each store passes its own reading of a time column (`time`), since drivers differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from dtm.protocol.records import KV, TransBranch, TransGlobal


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


def next_position(ids: Sequence[int], limit: int) -> str:
    """Upstream's paging: the last id returned, or "" once a page comes back short."""
    return str(ids[-1]) if ids and len(ids) >= limit else ""


def parse_position(text: str) -> int | None:
    """The id a page starts below; ValueError for a position the store never gave out."""
    return int(text) if text else None
