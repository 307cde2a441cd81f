"""What differs between the databases the barrier supports: SQL text and transaction probing.

A `Dialect` holds only SQL differences (placeholders, insert-ignore, the DDL file). How to
tell whether a connection is inside a transaction, and how to begin one, depends on the
driver rather than the database, so those live in the `_driver_*` functions below, keyed by
the top-level module of the connection's class (`sqlite3`, `pymysql`, `psycopg`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

__all__ = [
    "BARRIER_COLUMNS",
    "DIALECTS",
    "Dialect",
    "begin",
    "detect_dialect",
    "get_dialect",
    "in_transaction",
    "insert_barrier_sql",
    "select_reason_sql",
    "vendor_dialect",
]

# Identifiers cannot be bound as parameters, so a table name is checked against this before
# it is put into SQL text: one or two plain identifiers, `table` or `schema.table`.
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL a barrier needs for one database."""

    name: str
    """"sqlite", "mysql" or "postgres"."""
    placeholder: str
    """The driver's parameter marker: "?" (qmark) or "%s" (format)."""
    default_table: str
    """Upstream's `dtm_barrier.barrier`; SQLite has no schemas, so `barrier` there."""
    insert_ignore: str
    """INSERT that skips a row whose unique key exists; `{table}` and `{values}` filled in."""
    create_schema: str | None
    """Statement creating the schema of a `schema.table` name, `{schema}` filled in."""
    begin: str
    """Statement opening a transaction the barrier owns."""

    def table_name(self, table: str | None) -> str:
        """`table`, or the default, after checking it is a plain (qualified) identifier."""
        name = table or self.default_table
        if not _TABLE_NAME.fullmatch(name):
            raise ValueError(f"invalid barrier table name {name!r}: expected [schema.]table")
        return name

    def ddl(self, table: str | None = None) -> str:
        """The statements creating the barrier table, `;`-separated, all idempotent."""
        name = self.table_name(table)
        text = resources.files("dtm.barrier").joinpath("sql", f"{self.name}.sql").read_text()
        body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
        statements = [body.strip().format(table=name)]
        schema, _, rest = name.rpartition(".")
        if schema and rest and self.create_schema is not None:
            statements.insert(0, self.create_schema.format(schema=schema))
        return ";\n".join(statements) + ";\n"


SQLITE: Final = Dialect(
    name="sqlite",
    placeholder="?",
    default_table="barrier",
    insert_ignore="insert or ignore into {table} {values}",
    create_schema=None,
    # IMMEDIATE takes the write lock at once: two writers never both hold read locks and
    # then deadlock upgrading them, they queue on the busy timeout instead.
    begin="begin immediate",
)
MYSQL: Final = Dialect(
    name="mysql",
    placeholder="%s",
    default_table="dtm_barrier.barrier",
    insert_ignore="insert ignore into {table} {values}",
    create_schema="create database if not exists {schema}",
    begin="begin",
)
POSTGRES: Final = Dialect(
    name="postgres",
    placeholder="%s",
    default_table="dtm_barrier.barrier",
    # A column list, not upstream's `on constraint uniq_barrier`: it matches any unique
    # index on those columns, whatever its name.
    insert_ignore=(
        "insert into {table} {values} on conflict (gid, branch_id, op, barrier_id) do nothing"
    ),
    create_schema="create schema if not exists {schema}",
    begin="begin",
)

DIALECTS: Final = {d.name: d for d in (SQLITE, MYSQL, POSTGRES)}

_DRIVER_DIALECT: Final = {"sqlite3": "sqlite", "pymysql": "mysql", "psycopg": "postgres"}


def get_dialect(name: str) -> Dialect:
    """The dialect called `name`: "sqlite", "mysql" or "postgres"."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unknown barrier dialect {name!r}: one of {sorted(DIALECTS)}") from None


def _driver(conn: Any) -> str:
    return type(conn).__module__.partition(".")[0]


def detect_dialect(conn: Any, dialect: str | None = None) -> Dialect:
    """`dialect` if given, else the dialect of the driver that made `conn`."""
    if dialect is not None:
        return get_dialect(dialect)
    driver = _driver(conn)
    if driver not in _DRIVER_DIALECT:
        raise ValueError(
            f"cannot tell the barrier dialect of a {type(conn).__module__} connection: "
            f"pass dialect= one of {sorted(DIALECTS)}"
        )
    return DIALECTS[_DRIVER_DIALECT[driver]]


# MySQL's SERVER_STATUS_IN_TRANS flag, reported in every OK/EOF packet.
_MYSQL_IN_TRANS: Final = 1


def in_transaction(conn: Any) -> bool | None:
    """Whether `conn` has a transaction open; None when its driver cannot say."""
    driver = _driver(conn)
    if driver == "sqlite3":
        return bool(conn.in_transaction)
    if driver == "pymysql":
        return bool((conn.server_status or 0) & _MYSQL_IN_TRANS)
    if driver == "psycopg":
        # TransactionStatus.IDLE is 0; anything else (active, in a block, failed) is open.
        return int(conn.info.transaction_status) != 0
    return None


def begin(conn: Any, dialect: Dialect) -> None:
    """Open a transaction on `conn`, which has none open."""
    if _driver(conn) == "psycopg" and not conn.autocommit:
        # psycopg sends its own BEGIN before the next statement; a second one would only
        # draw a "transaction already in progress" warning.
        return
    cur = conn.cursor()
    try:
        cur.execute(dialect.begin)
    finally:
        cur.close()


# The names SQLAlchemy dialects (`engine.dialect.name`) and Django backends
# (`connection.vendor`) give the databases the barrier supports.
_VENDOR_DIALECT: Final = {
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgres",
    "postgres": "postgres",
}


def vendor_dialect(vendor: str, dialect: str | None = None) -> Dialect:
    """`dialect` if given, else the dialect of a SQLAlchemy dialect or Django vendor name."""
    if dialect is not None:
        return get_dialect(dialect)
    if vendor not in _VENDOR_DIALECT:
        raise ValueError(
            f"no barrier dialect for database {vendor!r}: pass dialect= one of {sorted(DIALECTS)}"
        )
    return DIALECTS[_VENDOR_DIALECT[vendor]]


BARRIER_COLUMNS: Final = ("trans_type", "gid", "branch_id", "op", "barrier_id", "reason")
"""The columns of one barrier row, in the order `insert_barrier_sql` takes their markers."""


def insert_barrier_sql(dialect: Dialect, table: str, marks: Sequence[str]) -> str:
    """The dialect's insert-ignore of one barrier row, with `marks` as the parameter markers
    of `BARRIER_COLUMNS` (e.g. `:gid` for SQLAlchemy's `text()`). `table` must be checked."""
    if len(marks) != len(BARRIER_COLUMNS):
        raise ValueError(f"a barrier row has {len(BARRIER_COLUMNS)} columns")
    values = f"({', '.join(BARRIER_COLUMNS)}) values ({', '.join(marks)})"
    return dialect.insert_ignore.format(table=table, values=values)


def select_reason_sql(table: str, marks: Sequence[str]) -> str:
    """The query of one barrier row's reason; `marks` are the markers of gid, branch_id, op
    and barrier_id. `table` must be checked."""
    gid, branch_id, op, barrier_id = marks
    return (
        f"select reason from {table} "
        f"where gid={gid} and branch_id={branch_id} and op={op} and barrier_id={barrier_id}"
    )
