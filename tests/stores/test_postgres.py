"""What only the PostgreSQL store has to show: upstream's layout and data, migrations, purging,
whole-second times, several instances on one database, and connections the server drops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from dtm.protocol.consts import (
    FAILED,
    OP_ACTION,
    OP_COMPENSATE,
    PREPARED,
    SAGA,
    SUBMITTED,
    SUCCEED,
)
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.config import StoreConfig
from dtm.server.stores.base import BranchUpdate, Progress, ScanFilter, StoreUnavailable
from dtm.server.stores.postgres import PostgresStore
from tests.stores import factory_postgres as factory


async def admin(schema: str) -> asyncpg.Connection:
    """A connection of our own to the test database, with the store's search_path."""
    return await asyncpg.connect(
        host=factory.HOST,
        port=factory.PORT,
        user=factory.USER,
        database=factory.DATABASE,
        server_settings={"search_path": schema},
    )


@pytest.fixture
def schema(tmp_path: Path) -> str:
    """The test's fresh, empty schema."""
    factory.prepare(tmp_path)
    return factory.schema_of(tmp_path)


# Function loop scope, like the tests, so the pool's futures live on the test's own loop.
@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path, schema: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(factory.config(tmp_path))
    await opened.open()
    await opened.migrate()
    yield opened
    await opened.close()


def saga(gid: str) -> tuple[TransGlobal, list[TransBranch]]:
    trans = TransGlobal(gid=gid, trans_type=SAGA, status=SUBMITTED, next_cron_interval=10)
    ops = [
        TransBranch(gid=gid, url=f"http://busi/{op}", branch_id="01", op=op, status=PREPARED)
        for op in (OP_COMPENSATE, OP_ACTION)
    ]
    return trans, ops


async def db_now(conn: asyncpg.Connection) -> datetime:
    moment: datetime = await conn.fetchval("SELECT now()")
    return moment


# --- upstream's layout and data ------------------------------------------------------


async def test_the_tables_are_upstreams(store: PostgresStore) -> None:
    conn = await admin(store.schema)
    try:
        columns = {
            (row["table_name"], row["column_name"]): (row["data_type"], row["precision"])
            for row in await conn.fetch(
                "SELECT table_name, column_name, data_type,"
                " coalesce(datetime_precision, character_maximum_length) AS precision"
                " FROM information_schema.columns WHERE table_schema = $1",
                store.schema,
            )
        }
        constraints = {
            row[0]
            for row in await conn.fetch(
                "SELECT conname FROM pg_constraint JOIN pg_namespace n ON n.oid = connamespace"
                " WHERE nspname = $1",
                store.schema,
            )
        }
        indexes = {
            row[0]
            for row in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1", store.schema
            )
        }
        sequences = {
            row[0]
            for row in await conn.fetch(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = $1", store.schema
            )
        }
    finally:
        await conn.close()

    assert columns[("trans_global", "id")] == ("bigint", None)
    assert columns[("trans_global", "gid")] == ("character varying", 128)
    assert columns[("trans_global", "next_cron_time")] == ("timestamp with time zone", 0)
    assert columns[("trans_global", "ext_data")] == ("text", None)
    assert columns[("trans_branch_op", "bin_data")] == ("bytea", None)
    assert columns[("trans_branch_op", "data")] == ("text", None)
    assert columns[("kv", "version")] == ("bigint", None)
    assert len([key for key in columns if key[0] == "trans_global"]) == 18
    assert len([key for key in columns if key[0] == "trans_branch_op"]) == 12
    assert len([key for key in columns if key[0] == "kv"]) == 7
    assert {"gid", "gid_branch_uniq", "uniq_k"} <= constraints
    assert {"owner", "status_next_cron_time", "gid", "gid_branch_uniq", "uniq_k"} <= indexes
    assert sequences == {"trans_global_seq", "trans_branch_op_seq", "kv_seq"}


async def upstream_rows(conn: asyncpg.Connection) -> None:
    """Rows as upstream DTM (gorm) writes them for a submitted two-step saga, and a row of
    an older version with NULLs where upstream's columns allow them."""
    written = datetime.now(UTC)  # Go's time.Now(): microseconds, rounded by timestamp(0)
    await conn.execute(
        "INSERT INTO trans_global (create_time, update_time, gid, trans_type, status,"
        " query_prepared, protocol, finish_time, rollback_time, result, rollback_reason,"
        " options, custom_data, next_cron_interval, next_cron_time, owner, ext_data)"
        " VALUES ($1, $1, 'up1', 'saga', 'submitted', '', 'http', NULL, NULL, '', '',"
        " '{\"concurrent\":false}', '', 10, $2, '', '') ON CONFLICT DO NOTHING",
        written,
        written + timedelta(seconds=10),
    )
    for branch_id in ("01", "02"):
        for op in (OP_COMPENSATE, OP_ACTION):
            await conn.execute(
                "INSERT INTO trans_branch_op (create_time, update_time, gid, url, bin_data,"
                " branch_id, op, status, finish_time, rollback_time)"
                " VALUES ($1, $1, 'up1', $2, $3, $4, $5, 'prepared', NULL, NULL)"
                " ON CONFLICT DO NOTHING",
                written,
                f"http://busi/saga/{op}",
                f'{{"amount":{branch_id}}}'.encode(),
                branch_id,
                op,
            )
    await conn.execute(
        "INSERT INTO trans_global (gid, trans_type, status, query_prepared, protocol,"
        " options, custom_data, result, rollback_reason)"
        " VALUES ('up2', 'msg', 'succeed', '', 'http', NULL, NULL, NULL, NULL)"
    )
    await conn.execute("INSERT INTO kv (cat, k, v) VALUES ('topics', 't1', NULL)")


async def test_takes_over_upstreams_data(tmp_path: Path, schema: str) -> None:
    conn = await admin(schema)
    try:
        script = resources.files("dtm.server.stores").joinpath("sql", "postgres.sql")
        await conn.execute(script.read_text())
        await upstream_rows(conn)
    finally:
        await conn.close()
    store = PostgresStore(factory.config(tmp_path))
    await store.open()
    try:
        await store.migrate()

        trans, ops = await store.load("up1")
        assert trans is not None
        assert (trans.status, trans.options, trans.owner) == (SUBMITTED, '{"concurrent":false}', "")
        assert trans.next_cron_interval == 10 and trans.finish_time is None
        assert [(op.branch_id, op.op) for op in ops] == [
            ("01", OP_COMPENSATE),
            ("01", OP_ACTION),
            ("02", OP_COMPENSATE),
            ("02", OP_ACTION),
        ]
        assert ops[1].bin_data == b'{"amount":01}' and ops[1].url == "http://busi/saga/action"
        old, none = await store.load("up2")
        assert old is not None and none == []
        assert (old.options, old.ext_data, old.next_cron_interval, old.create_time) == (
            "",
            "",
            0,
            None,
        )
        assert [(kv.k, kv.v, kv.version) for kv in await store.find_kv("topics", "")] == [
            ("t1", "", 1)
        ]

        assert await store.lock_due(owner="me", lease=30, limit=10) == []
        assert await store.reset_next_cron_time("up1")
        [taken] = await store.lock_due(owner="me", lease=30, limit=10)
        assert taken.gid == "up1" and taken.owner == "me"
        progress = Progress(
            branches=[
                BranchUpdate("01", OP_ACTION, SUCCEED),
                BranchUpdate("02", OP_ACTION, SUCCEED),
            ],
            status=SUCCEED,
        )
        assert await store.save_progress("up1", progress, expect_status=SUBMITTED, owner="me")

        trans, ops = await store.load("up1")
        assert trans is not None and trans.status == SUCCEED and trans.finish_time is not None
        assert [op.status for op in ops] == [PREPARED, SUCCEED, PREPARED, SUCCEED]
        # New rows continue upstream's sequences.
        new, new_ops = saga("new")
        assert await store.create(new, new_ops, next_cron_delay=10)
        assert new.id > taken.id and new_ops[0].id > ops[-1].id
    finally:
        await store.close()


async def test_migrate_again_keeps_the_data(tmp_path: Path, store: PostgresStore) -> None:
    trans, ops = saga("g1")
    assert await store.create(trans, ops, next_cron_delay=10)
    assert await store.create_kv("topics", "t1", "v1")

    await store.migrate()
    again = PostgresStore(factory.config(tmp_path))
    await again.open()
    try:
        await again.migrate()
        assert await again.load("g1") == (trans, ops)
        assert len(await again.find_kv("topics", "t1")) == 1
    finally:
        await again.close()


async def test_migrate_creates_a_missing_schema(tmp_path: Path, schema: str) -> None:
    other = f"{schema}_x"
    store = PostgresStore(factory.config(tmp_path, Schema=other))
    await store.open()
    try:
        await asyncio.gather(store.migrate(), store.migrate())
        trans, ops = saga("g1")
        assert await store.create(trans, ops, next_cron_delay=10)
    finally:
        await store.close()
        conn = await admin(schema)
        try:
            assert await conn.fetchval(f"SELECT count(*) FROM {other}.trans_branch_op") == 2
            await conn.execute(f"DROP SCHEMA {other} CASCADE")
        finally:
            await conn.close()


def test_the_schema_must_be_a_plain_identifier(tmp_path: Path) -> None:
    for bad in ("", "a b", 'x"; DROP TABLE kv; --', "1abc"):
        with pytest.raises(ValueError, match="Schema"):
            PostgresStore(factory.config(tmp_path, Schema=bad))


# --- purging -------------------------------------------------------------------------


async def test_purge_finished_deletes_old_finished_rows_only(store: PostgresStore) -> None:
    for gid in ("ok", "failed", "running", "recent", "kept"):
        trans, ops = saga(gid)
        assert await store.create(trans, ops, next_cron_delay=10)
    for gid, status in (("ok", SUCCEED), ("failed", FAILED), ("recent", SUCCEED)):
        assert await store.save_progress(gid, Progress(status=status), expect_status=SUBMITTED)
    conn = await admin(store.schema)
    try:
        await conn.execute(
            "UPDATE trans_global SET update_time = update_time - interval '2 hours'"
            " WHERE gid IN ('ok', 'failed', 'running')"
        )
        assert await store.purge_finished(older_than=3600, limit=1) == 1
        assert await store.purge_finished(older_than=3600, limit=10) == 1
        assert await store.purge_finished(older_than=3600, limit=10) == 0
        remaining = await conn.fetch("SELECT gid FROM trans_branch_op ORDER BY id")
    finally:
        await conn.close()

    assert await store.find("ok") is None and await store.find("failed") is None
    assert sorted({row[0] for row in remaining}) == ["kept", "recent", "running"]
    with pytest.raises(ValueError):
        await store.purge_finished(older_than=-1, limit=10)


# --- whole-second times --------------------------------------------------------------


async def test_lease_ends_are_rounded_up_and_due_times_down(store: PostgresStore) -> None:
    trans, ops = saga("g1")
    assert await store.create(trans, ops, next_cron_delay=0)
    conn = await admin(store.schema)
    try:
        before = await db_now(conn)
        [taken] = await store.lock_due(owner="a", lease=0.2, limit=10)
    finally:
        await conn.close()

    assert trans.create_time is not None and trans.create_time.microsecond == 0
    assert trans.next_cron_time == trans.create_time
    assert taken.next_cron_time is not None and taken.next_cron_time.microsecond == 0
    # Never shorter than asked, whatever fraction of a second the lock came at.
    assert taken.next_cron_time >= before + timedelta(seconds=0.2)
    assert await store.lock_due(owner="b", lease=0.2, limit=10) == []


async def test_two_instances_never_take_the_same_transaction(
    tmp_path: Path, store: PostgresStore
) -> None:
    for i in range(100):
        trans, ops = saga(f"g{i:03}")
        assert await store.create(trans, ops, next_cron_delay=0)
    other = PostgresStore(factory.config(tmp_path))
    await other.open()
    try:
        takes = await asyncio.gather(
            *(
                instance.lock_due(owner=f"{name}{i}", lease=60, limit=7)
                for i in range(10)
                for name, instance in (("a", store), ("b", other))
            )
        )
    finally:
        await other.close()

    gids = [trans.gid for taken in takes for trans in taken]
    assert sorted(gids) == [f"g{i:03}" for i in range(100)]


async def test_scan_with_naive_times_reads_them_as_utc(store: PostgresStore) -> None:
    trans, ops = saga("g1")
    assert await store.create(trans, ops, next_cron_delay=10)
    assert trans.create_time is not None
    naive = trans.create_time.astimezone(UTC).replace(tzinfo=None)

    page = await store.scan(position="", limit=10, where=ScanFilter(create_time_start=naive))
    assert [found.gid for found in page.items] == ["g1"]
    page = await store.scan(
        position="", limit=10, where=ScanFilter(create_time_end=naive - timedelta(seconds=1))
    )
    assert page.items == []


# --- connections ---------------------------------------------------------------------


async def terminate(conn: asyncpg.Connection, application_name: str) -> int:
    killed: int = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        application_name,
    )
    return killed


async def test_connections_terminated_by_the_server_are_replaced(
    tmp_path: Path, schema: str
) -> None:
    name = f"dtm-test-{uuid.uuid4().hex[:12]}"
    store = PostgresStore(factory.config(tmp_path), application_name=name)
    await store.open()
    await store.migrate()
    conn = await admin(schema)
    try:
        trans, ops = saga("g1")
        assert await store.create(trans, ops, next_cron_delay=10)
        for settle in (False, True):
            # Fill the pool: each of these holds a connection for a moment.
            await asyncio.gather(*(store.find("g1") for _ in range(factory.POOL_SIZE * 4)))
            assert await terminate(conn, name) == factory.POOL_SIZE
            if settle:  # the client has seen the sockets close before the next call
                await asyncio.sleep(0.2)

            try:
                await store.find("g1")
            except StoreUnavailable as exc:
                # Which one depends on what the client read first: the server's message,
                # the closed socket, or asyncpg's state machine refusing the operation.
                assert exc.__cause__ is not None
            found = await store.find("g1")
            assert found is not None and found.gid == "g1"
            assert await asyncio.gather(*(store.find("g1") for _ in range(8))) == [found] * 8
            progress = Progress(result=f"settle={settle}")
            assert await store.save_progress("g1", progress, expect_status=SUBMITTED)
    finally:
        await conn.close()
        await store.close()


async def test_a_store_nobody_answers_for_is_unavailable(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    store = PostgresStore(factory.config(tmp_path, Port=1), timeout=2)
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    assert isinstance(raised.value.__cause__, OSError)
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_a_wrong_database_is_unavailable(tmp_path: Path) -> None:
    conf = factory.config(tmp_path, Db=f"nope_{uuid.uuid4().hex[:8]}")
    store = PostgresStore(conf)
    with pytest.raises(StoreUnavailable) as raised:
        await store.open()
    assert isinstance(raised.value.__cause__, asyncpg.PostgresError)


def test_config_limits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MaxOpenConns"):
        PostgresStore(factory.config(tmp_path, MaxOpenConns=0))
    assert PostgresStore(StoreConfig(Driver="postgres")).schema == "public"
