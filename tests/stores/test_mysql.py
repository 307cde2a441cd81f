"""What only the MySQL/MariaDB store promises: upstream's data, its schema, time zones, outages.

The contract suite (test_contract.py) runs on this store too; these tests use the machine's
MariaDB directly next to it, through plain PyMySQL connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pymysql
import pytest
import pytest_asyncio
from pymysql.constants import CLIENT

from dtm.protocol.consts import OP_ACTION, OP_COMPENSATE, PREPARED, SAGA, SUBMITTED, SUCCEED
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.stores import mysql as mysql_module
from dtm.server.stores.base import BranchUpdate, Progress, ScanFilter, StoreUnavailable
from dtm.server.stores.mysql import MysqlStore
from tests.stores import factory_mysql

SCHEMA = resources.files("dtm.server.stores").joinpath("sql", "mysql.sql").read_text()


def now() -> datetime:
    return datetime.now(UTC)


def near(moment: datetime | None, expected: datetime, slack: float = 1.5) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) <= slack


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    """The test's private database name (dropped by the factory before and after)."""
    factory_mysql.make(tmp_path)
    yield factory_mysql.database_name(tmp_path)


@pytest.fixture
def sql(db: str) -> Iterator[Any]:
    """A PyMySQL cursor on the server, multi-statements on, no database selected."""
    conn = factory_mysql.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    cur = conn.cursor()
    yield cur
    cur.close()
    conn.close()


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path, db: str) -> AsyncIterator[MysqlStore]:
    opened = MysqlStore(factory_mysql.config(tmp_path))
    await opened.open()
    await opened.migrate()
    yield opened
    await opened.close()


def trans_for(gid: str) -> TransGlobal:
    return TransGlobal(gid=gid, trans_type=SAGA, status=SUBMITTED, options='{"concurrent":false}')


def ops_for(gid: str) -> list[TransBranch]:
    return [
        TransBranch(gid=gid, url=f"http://busi/{op}", branch_id="01", op=op, status=PREPARED)
        for op in (OP_COMPENSATE, OP_ACTION)
    ]


def execute(cur: Any, statements: str, args: Any = None) -> None:
    """Run a multi-statement text and read every result."""
    cur.execute(statements, args)
    while cur.nextset():
        pass


# --- upstream's schema and data -------------------------------------------------------


def upstream_schema(cur: Any, db: str) -> None:
    """What upstream's `dtm` migration leaves: the database and its DDL, run as text."""
    execute(cur, f"CREATE DATABASE `{db}` DEFAULT CHARACTER SET utf8mb4; USE `{db}`; {SCHEMA}")


def upstream_saga(cur: Any, gid: str) -> None:
    """A one-step saga as upstream DTM writes it (gorm, local-time DATETIMEs, loc=Local):
    submitted, not due for 10 s, a compensate and an action row with the payload."""
    cur.execute(
        "INSERT INTO trans_global (create_time, update_time, gid, trans_type, status,"
        " query_prepared, protocol, finish_time, rollback_time, options, custom_data,"
        " next_cron_interval, next_cron_time, owner, ext_data, result, rollback_reason)"
        " VALUES (NOW() - INTERVAL 30 SECOND, NOW() - INTERVAL 30 SECOND, %s, 'saga',"
        " 'submitted', '', 'http', NULL, NULL, '{\"concurrent\":false}', '', 10,"
        " NOW() + INTERVAL 10 SECOND, '', '', '', '')",
        (gid,),
    )
    for op, url in (
        ("compensate", "http://busi/SagaBTransOutCom"),
        ("action", "http://busi/SagaBTransOut"),
    ):
        cur.execute(
            "INSERT INTO trans_branch_op (create_time, update_time, gid, url, bin_data,"
            " branch_id, op, status, finish_time, rollback_time)"
            " VALUES (NOW() - INTERVAL 30 SECOND, NOW() - INTERVAL 30 SECOND, %s, %s, %s,"
            " '01', %s, 'prepared', NULL, NULL)",
            (gid, url, b'{"amount":30}', op),
        )


async def test_takes_over_a_database_upstream_dtm_wrote(tmp_path: Path, db: str, sql: Any) -> None:
    upstream_schema(sql, db)
    upstream_saga(sql, "upstream-1")
    written = now()

    store = MysqlStore(factory_mysql.config(tmp_path))
    await store.open()
    try:
        await store.migrate()
        trans, ops = await store.load("upstream-1")
        assert trans is not None
        assert (trans.gid, trans.trans_type, trans.status, trans.protocol) == (
            "upstream-1",
            SAGA,
            SUBMITTED,
            "http",
        )
        assert trans.options == '{"concurrent":false}' and trans.next_cron_interval == 10
        assert near(trans.create_time, written - timedelta(seconds=30))
        assert near(trans.next_cron_time, written + timedelta(seconds=10))
        assert [(op.op, op.status, op.bin_data) for op in ops] == [
            (OP_COMPENSATE, PREPARED, b'{"amount":30}'),
            (OP_ACTION, PREPARED, b'{"amount":30}'),
        ]

        assert await store.lock_due(owner="me", lease=30, limit=10) == []
        # Time passes: upstream's row falls due.
        sql.execute(
            "UPDATE trans_global SET next_cron_time = NOW() - INTERVAL 1 SECOND WHERE gid = %s",
            ("upstream-1",),
        )
        [taken] = await store.lock_due(owner="me", lease=30, limit=10)
        assert taken.gid == "upstream-1" and taken.owner == "me"
        assert near(taken.next_cron_time, now() + timedelta(seconds=30))

        progress = Progress(
            branches=[BranchUpdate("01", OP_ACTION, SUCCEED)], status=SUCCEED, result="ok"
        )
        assert await store.save_progress(
            "upstream-1", progress, expect_status=SUBMITTED, owner="me"
        )
        trans, ops = await store.load("upstream-1")
        assert trans is not None and trans.status == SUCCEED and trans.result == "ok"
        assert near(trans.finish_time, now())
        assert [op.status for op in ops] == [PREPARED, SUCCEED]
        # Upstream reads the row back as it wrote it: local DATETIMEs of the session's zone.
        sql.execute(
            "SELECT ABS(TIMESTAMPDIFF(SECOND, finish_time, NOW())) FROM trans_global"
            " WHERE gid = %s",
            ("upstream-1",),
        )
        assert sql.fetchone()[0] <= 2
    finally:
        await store.close()


async def test_schema_is_upstreams(store: MysqlStore, db: str, sql: Any) -> None:
    sql.execute(
        "SELECT table_name, column_name, column_type, is_nullable FROM"
        " information_schema.columns WHERE table_schema = %s"
        " ORDER BY table_name, ordinal_position",
        (db,),
    )
    columns: dict[str, list[str]] = {}
    for table, column, _, _ in sql.fetchall():
        columns.setdefault(table, []).append(column)
    assert columns == {
        "kv": ["id", "cat", "k", "v", "version", "create_time", "update_time"],
        "trans_branch_op": [
            "id", "gid", "url", "data", "bin_data", "branch_id", "op", "status",
            "finish_time", "rollback_time", "create_time", "update_time",
        ],
        "trans_global": [
            "id", "gid", "trans_type", "status", "query_prepared", "protocol", "create_time",
            "update_time", "finish_time", "rollback_time", "options", "custom_data",
            "next_cron_interval", "next_cron_time", "owner", "ext_data", "result",
            "rollback_reason",
        ],
    }  # fmt: skip
    sql.execute(
        "SELECT table_name, index_name, non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index)"
        " FROM information_schema.statistics WHERE table_schema = %s"
        " GROUP BY table_name, index_name, non_unique ORDER BY table_name, index_name",
        (db,),
    )
    assert sorted(sql.fetchall()) == [
        ("kv", "PRIMARY", 0, "id"),
        ("kv", "uniq_k", 0, "cat,k"),
        ("trans_branch_op", "PRIMARY", 0, "id"),
        ("trans_branch_op", "gid_uniq", 0, "gid,branch_id,op"),
        ("trans_global", "PRIMARY", 0, "id"),
        ("trans_global", "gid", 0, "gid"),
        ("trans_global", "owner", 1, "owner"),
        ("trans_global", "status_next_cron_time", 1, "status,next_cron_time"),
    ]


# --- migrate ------------------------------------------------------------------------


async def test_migrate_twice_and_on_reopen_keeps_data(tmp_path: Path, db: str) -> None:
    store = MysqlStore(factory_mysql.config(tmp_path))
    await store.open()  # the database does not exist yet
    await store.migrate()
    assert await store.create(trans_for("g1"), ops_for("g1"), next_cron_delay=10)
    assert await store.create_kv("topics", "t1", "v1")
    await store.migrate()
    await store.close()

    again = MysqlStore(factory_mysql.config(tmp_path))
    await again.open()  # the database exists now
    try:
        await again.migrate()
        trans, ops = await again.load("g1")
        assert trans is not None and len(ops) == 2
        assert [kv.v for kv in await again.find_kv("topics", "t1")] == ["v1"]
    finally:
        await again.close()


async def test_calls_before_migrate_are_refused_not_crashed(tmp_path: Path, db: str) -> None:
    store = MysqlStore(factory_mysql.config(tmp_path))
    await store.open()
    try:
        await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.find("g1")
    finally:
        await store.close()


# --- purge ----------------------------------------------------------------------------


async def test_purge_finished_deletes_old_finished_rows_only(
    store: MysqlStore, db: str, sql: Any
) -> None:
    for gid in ("old-ok-1", "old-ok-2", "old-ok-3", "old-running", "new-ok"):
        assert await store.create(trans_for(gid), ops_for(gid), next_cron_delay=10)
    for gid in ("old-ok-1", "old-ok-2", "old-ok-3", "new-ok"):
        assert await store.save_progress(gid, Progress(status=SUCCEED), expect_status=SUBMITTED)
    sql.execute(
        f"UPDATE `{db}`.trans_global SET update_time = NOW() - INTERVAL 2 DAY,"
        " create_time = NOW() - INTERVAL 2 DAY WHERE gid LIKE %s",
        ("old-%",),
    )

    assert await store.purge_finished(older_than=86400, limit=2) == 2
    assert await store.purge_finished(older_than=86400, limit=2) == 1
    assert await store.purge_finished(older_than=86400, limit=2) == 0

    sql.execute(f"SELECT DISTINCT gid FROM `{db}`.trans_global ORDER BY gid")
    assert [row[0] for row in sql.fetchall()] == ["new-ok", "old-running"]
    sql.execute(f"SELECT gid, COUNT(*) FROM `{db}`.trans_branch_op GROUP BY gid ORDER BY gid")
    assert sql.fetchall() == (("new-ok", 2), ("old-running", 2))


# --- time ---------------------------------------------------------------------------


async def test_times_follow_the_session_time_zone(
    tmp_path: Path, db: str, sql: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server whose sessions run at +05:30: the rows hold local times, the store answers UTC.
    monkeypatch.setattr(
        mysql_module,
        "_SESSION_SETUP",
        "SET SESSION tx_isolation = 'READ-COMMITTED', time_zone = '+05:30'",
    )
    store = MysqlStore(factory_mysql.config(tmp_path))
    await store.open()
    try:
        await store.migrate()
        before = now()
        trans = trans_for("tz")
        assert await store.create(trans, ops_for("tz"), next_cron_delay=0)
        assert await store.create(trans_for("tz-later"), ops_for("tz-later"), next_cron_delay=60)

        assert near(trans.create_time, before)
        sql.execute(f"SELECT create_time FROM `{db}`.trans_global WHERE gid = 'tz'")
        local: datetime = sql.fetchone()[0]
        assert near(local.replace(tzinfo=UTC), before + timedelta(hours=5, minutes=30))
        page = await store.scan(
            position="", limit=10, where=ScanFilter(create_time_start=before - timedelta(seconds=2))
        )
        assert {item.gid for item in page.items} == {"tz", "tz-later"}

        taken = await store.lock_due(owner="me", lease=30, limit=10)
        assert [item.gid for item in taken] == ["tz"]
        assert near(taken[0].next_cron_time, before + timedelta(seconds=30))
    finally:
        await store.close()


async def test_a_lease_is_rounded_up_to_whole_seconds(store: MysqlStore) -> None:
    assert await store.create(trans_for("g1"), ops_for("g1"), next_cron_delay=0)
    before = now()
    [taken] = await store.lock_due(owner="a", lease=0.2, limit=10)

    assert taken.next_cron_time is not None
    assert taken.next_cron_time.microsecond == 0
    # Never earlier than the lease asked for: no second owner while it runs.
    assert taken.next_cron_time >= before.replace(microsecond=0) + timedelta(seconds=1)
    assert await store.lock_due(owner="b", lease=0.2, limit=10) == []


async def test_bin_data_keeps_any_bytes(store: MysqlStore) -> None:
    payload = bytes(range(256)) * 4
    ops = ops_for("g1")
    ops[0].bin_data = payload
    assert await store.create(trans_for("g1"), ops, next_cron_delay=10)
    _, loaded = await store.load("g1")
    assert loaded[0].bin_data == payload


# --- two servers ----------------------------------------------------------------------


async def test_two_instances_never_take_the_same_transaction(
    store: MysqlStore, tmp_path: Path
) -> None:
    gids = [f"g{i:03}" for i in range(60)]
    await asyncio.gather(
        *(store.create(trans_for(gid), ops_for(gid), next_cron_delay=0) for gid in gids)
    )
    other = MysqlStore(factory_mysql.config(tmp_path))
    await other.open()
    try:
        takes = await asyncio.gather(
            *(
                (store if i % 2 else other).lock_due(owner=f"o{i}", lease=60, limit=4)
                for i in range(20)
            )
        )
    finally:
        await other.close()
    taken = [trans.gid for batch in takes for trans in batch]
    assert sorted(taken) == gids


# --- outages --------------------------------------------------------------------------


def store_connections(cur: Any, db: str) -> list[int]:
    cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s", (db,))
    return [row[0] for row in cur.fetchall()]


def kill_all(cur: Any, db: str) -> int:
    ids = store_connections(cur, db)
    for ident in ids:
        # A connection may have gone away by itself meanwhile.
        with contextlib.suppress(pymysql.err.OperationalError):
            cur.execute("KILL CONNECTION %s", (ident,))
    return len(ids)


async def test_connections_killed_server_side_are_replaced(
    store: MysqlStore, db: str, sql: Any
) -> None:
    assert await store.create(trans_for("g1"), ops_for("g1"), next_cron_delay=10)
    await asyncio.gather(*(store.ping() for _ in range(4)))

    # A read right after the kill: retried on a fresh connection.
    assert kill_all(sql, db) >= 1
    assert (await store.find("g1")) is not None

    # A write right after the kill: done, or refused once (it may not be retried).
    assert kill_all(sql, db) >= 1
    try:
        created = await store.create(trans_for("g2"), ops_for("g2"), next_cron_delay=10)
    except StoreUnavailable:
        created = await store.create(trans_for("g2"), ops_for("g2"), next_cron_delay=10)
    assert created

    # After the client noticed (the server closed the socket): nothing is even refused.
    assert kill_all(sql, db) >= 1
    await asyncio.sleep(0.2)
    assert await store.save_progress("g2", Progress(result="r"), expect_status=SUBMITTED)
    trans = await store.find("g2")
    assert trans is not None and trans.result == "r"


async def test_connections_are_replaced_after_their_lifetime(
    store: MysqlStore, db: str, sql: Any
) -> None:
    await store.ping()
    first = set(store_connections(sql, db))
    store._lifetime = 0.05  # ConnMaxLifeTime is whole minutes; shorten it for the test
    await asyncio.sleep(0.1)
    await store.ping()
    await asyncio.sleep(0.05)
    assert first and not first & set(store_connections(sql, db))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_an_unreachable_server_is_store_unavailable(tmp_path: Path) -> None:
    store = MysqlStore(factory_mysql.config(tmp_path, Port=closed_port()))
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    assert raised.value.__cause__ is not None
    with pytest.raises(StoreUnavailable):
        await store.find("g1")
