"""What the blocking and asyncio XA managers share: the xid, each database's statements, and
how each driver reports an xid the database does not know.

The xid is upstream's `<gid>-<branch_id>`, so a prepared transaction left behind reads the
same in `XA RECOVER` / `pg_prepared_xacts` whichever SDK prepared it. It is written into the
SQL text (neither database takes it as a bound parameter): as a hex literal for MySQL, which
no SQL mode reinterprets, and as an `E''` string for PostgreSQL, whose escapes do not depend
on `standard_conforming_strings`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dtm.client import XaBranchInfo
from dtm.protocol import consts

__all__ = ["XaStatements", "check_action", "is_unknown_xid", "recovered", "statements", "xa_id"]

# MySQL's gtrid is at most 64 bytes; PostgreSQL's identifier "less than 200 bytes".
_MYSQL_XID_MAX: Final = 64
_POSTGRES_XID_MAX: Final = 199

# What COMMIT/ROLLBACK of an xid nobody prepared (or already finished) raises.
_MYSQL_XAER_NOTA: Final = 1397
_POSTGRES_UNDEFINED_OBJECT: Final = "42704"


def xa_id(gid: str, branch_id: str) -> str:
    """The xid of a branch's local transaction: `<gid>-<branch_id>`, as upstream."""
    return f"{gid}-{branch_id}"


def check_action(info: XaBranchInfo) -> None:
    """Refuse an op other than "action", and an action without `phase2_url`: its branch
    would be registered with nowhere to send commit or rollback, and stay prepared."""
    if info.op != consts.OP_ACTION:
        raise ValueError(f"not an XA branch op: {info.op!r}")
    if not info.phase2_url:
        raise ValueError(f"XA branch {info.gid}/{info.branch_id}: the call has no phase2_url")


@dataclass(frozen=True, slots=True)
class XaStatements:
    """The statements driving one xid on one database."""

    start: tuple[str, ...]
    """Open the local transaction."""
    prepare: tuple[str, ...]
    """End and prepare it: its changes survive, locked, until commit or rollback."""
    abort: tuple[str, ...]
    """Undo it before it was prepared; each is tried even when an earlier one fails."""
    commit: str
    rollback: str
    recover: str | None
    """MySQL only: lists the prepared xids, whichever session holds them."""


def statements(dialect: str, xid: str) -> XaStatements:
    """The statements for `xid` on "mysql" or "postgres"; ValueError for an xid the
    database cannot take (too long, or a NUL byte)."""
    raw = xid.encode()
    if "\0" in xid:
        raise ValueError(f"an xid cannot hold a NUL character: {xid!r}")
    if dialect == "mysql":
        if len(raw) > _MYSQL_XID_MAX:
            raise ValueError(
                f"xid {xid!r} is {len(raw)} bytes; MySQL takes at most {_MYSQL_XID_MAX}: "
                "use a shorter gid"
            )
        lit = f"X'{raw.hex()}'"
        return XaStatements(
            start=(f"xa start {lit}",),
            prepare=(f"xa end {lit}", f"xa prepare {lit}"),
            abort=(f"xa end {lit}", f"xa rollback {lit}"),
            commit=f"xa commit {lit}",
            rollback=f"xa rollback {lit}",
            recover="xa recover",
        )
    if dialect == "postgres":
        if len(raw) > _POSTGRES_XID_MAX:
            raise ValueError(
                f"xid {xid!r} is {len(raw)} bytes; PostgreSQL takes fewer than 200: "
                "use a shorter gid"
            )
        lit = "E'" + xid.replace("\\", "\\\\").replace("'", "''") + "'"
        return XaStatements(
            start=("begin",),
            prepare=(f"prepare transaction {lit}",),
            abort=("rollback",),
            commit=f"commit prepared {lit}",
            rollback=f"rollback prepared {lit}",
            recover=None,
        )
    raise ValueError(f"no XA for database {dialect!r}: one of 'mysql', 'postgres'")


def is_unknown_xid(exc: BaseException) -> bool:
    """Whether `exc` says the xid is not prepared: MySQL's XAER_NOTA (PyMySQL, asyncmy) or
    PostgreSQL's undefined_object (psycopg, asyncpg)."""
    if getattr(exc, "sqlstate", None) == _POSTGRES_UNDEFINED_OBJECT:
        return True
    return bool(exc.args) and exc.args[0] == _MYSQL_XAER_NOTA


def recovered(rows: Iterable[Sequence[Any]], xid: str) -> bool:
    """Whether `XA RECOVER`'s rows (formatID, gtrid_length, bqual_length, data) list `xid`."""
    raw = xid.encode()
    for row in rows:
        data = row[3]
        if (data.encode() if isinstance(data, str) else bytes(data)) == raw:
            return True
    return False
