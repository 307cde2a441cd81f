"""Redis-only behaviour of the Redis store, beside the shared contract suite."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis import exceptions as rexc

from dtm.protocol.consts import FAILED, MSG, PREPARED, SAGA, SUBMITTED, SUCCEED, TCC
from dtm.server.stores import redis as redis_store
from dtm.server.stores.base import Progress, ScanFilter, StoreUnavailable
from dtm.server.stores.redis import RedisStore
from tests.stores import factory_redis
from tests.stores.test_contract import create, new_trans, saga_ops

FINISHED_EXPIRE = 300


@pytest_asyncio.fixture(loop_scope="function")
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host=factory_redis.HOST, port=factory_redis.PORT)
    yield client
    await client.aclose()


async def open_store(tmp: Path, **conf: object) -> RedisStore:
    factory_redis.make(tmp)  # clears the prefix the first time
    store = RedisStore(factory_redis.config(tmp, **conf))
    await store.open()
    return store


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[RedisStore]:
    opened = await open_store(tmp_path, FinishedDataExpire=FINISHED_EXPIRE)
    yield opened
    await opened.close()


def micros(moment: datetime | None) -> int:
    assert moment is not None
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# --- keys -----------------------------------------------------------------------------


async def test_gids_that_prefix_each_other_have_their_own_branch_keys(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    # What each loads is the contract suite's test of the same name; here, the keys.
    gids = ["X", "X0", "X_", "X_b_X"]
    for number, gid in enumerate(gids):
        assert await store.create(new_trans(gid), saga_ops(gid, f"0{number}"), next_cron_delay=0)
    keys = {key.decode() async for key in raw.scan_iter(match=store.prefix + "*")}
    assert {f"{store.prefix}_b_{gid}" for gid in gids} <= keys


async def test_scripts_write_times_as_python_reads_them(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    lib = redis_store._lua("load").split("-- load:")[0]
    moments = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2024, 12, 31, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2100, 3, 1, tzinfo=UTC),
        # Microseconds stay exact in a Lua number (a double) until 2255.
        datetime(2255, 6, 5, 23, 47, 34, 740991, tzinfo=UTC),
        *(
            datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=d, microseconds=d * 7)
            for d in range(0, 3000, 37)
        ),
    ]
    for moment in moments:
        text = await raw.eval(lib + "return iso(tonumber(ARGV[1]))", 0, str(micros(moment)))
        assert text.decode() == redis_store._iso(moment)
        assert redis_store._time(micros(moment)) == moment


async def test_due_times_live_in_the_index(store: RedisStore, raw: aioredis.Redis) -> None:
    trans = await create(store, "g1", delay=600)
    index = f"{store.prefix}_u"
    assert await raw.zscore(index, "g1") == micros(trans.next_cron_time)

    assert await store.reset_next_cron_time("g1")

    found = await store.find("g1")
    assert found is not None
    assert await raw.zscore(index, "g1") == micros(found.next_cron_time)
    assert found.next_cron_time == found.update_time
    progress = Progress(next_cron_delay=30)
    assert await store.save_progress("g1", progress, expect_status=SUBMITTED)
    found = await store.find("g1")
    assert found is not None
    assert await raw.zscore(index, "g1") == micros(found.next_cron_time)


# --- expiry ---------------------------------------------------------------------------


async def test_only_finished_transactions_expire(store: RedisStore, raw: aioredis.Redis) -> None:
    for gid in ("ok", "failed", "running"):
        await create(store, gid, delay=0)
    assert await store.save_progress("ok", Progress(status=SUCCEED), expect_status=SUBMITTED)
    assert await store.save_progress("failed", Progress(status=FAILED), expect_status=SUBMITTED)
    more = saga_ops("failed", "02")
    assert await store.add_branches("failed", more, expect_status=FAILED)

    done = new_trans("born-done", status=SUCCEED)
    assert await store.create(done, saga_ops("born-done", "01"), next_cron_delay=0)

    p = store.prefix
    for gid in ("ok", "failed", "born-done"):
        for key in (f"{p}_g_{gid}", f"{p}_b_{gid}"):
            assert FINISHED_EXPIRE - 5 <= await raw.ttl(key) <= FINISHED_EXPIRE
        assert await raw.zscore(f"{p}_u", gid) is None
    for key in (f"{p}_g_running", f"{p}_b_running", f"{p}_u", f"{p}_all", f"{p}_ids"):
        assert await raw.ttl(key) == -1
    assert [trans.gid for trans in await store.lock_due(owner="me", lease=9, limit=9)] == [
        "running"
    ]


async def test_purge_removes_the_entries_of_expired_transactions(
    tmp_path: Path, raw: aioredis.Redis
) -> None:
    store = await open_store(tmp_path, FinishedDataExpire=1)
    try:
        await create(store, "gone")
        await create(store, "kept")
        assert await store.save_progress("gone", Progress(status=SUCCEED), expect_status=SUBMITTED)
        await asyncio.sleep(1.2)

        assert await store.load("gone") == (None, [])
        page = await store.scan(position="", limit=10, where=ScanFilter())
        assert [trans.gid for trans in page.items] == ["kept"]
        assert await raw.zscore(f"{store.prefix}_all", "gone") is not None

        assert await store.purge_finished(older_than=1, limit=10) == 1
        assert await raw.zscore(f"{store.prefix}_all", "gone") is None
        assert await raw.zscore(f"{store.prefix}_f", "gone") is None
        assert await store.purge_finished(older_than=0, limit=10) == 0

        # The gid is free again, and the new transaction is nobody's leftover.
        await create(store, "gone")
        assert await store.purge_finished(older_than=0, limit=10) == 0
        trans, ops = await store.load("gone")
        assert trans is not None and len(ops) == 2
        assert await raw.ttl(f"{store.prefix}_g_gone") == -1
    finally:
        await store.close()


# --- indexes: topics and scan -----------------------------------------------------------


async def test_many_topics_are_all_found_and_paged(store: RedisStore) -> None:
    keys = [f"topic-{i}" for i in range(500)]
    await asyncio.gather(*(store.create_kv("topics", key, "[]") for key in keys))
    assert await store.create_kv("topics_x", "topic-1", "other")
    assert await store.create_kv("topic", "s_topic-1", "other")

    found = await store.find_kv("topics", "")
    assert sorted(kv.k for kv in found) == sorted(keys)
    assert [kv.v for kv in await store.find_kv("topics", "topic-1")] == ["[]"]
    assert len(await store.find_kv("", "topic-1")) == 2
    assert len(await store.find_kv("", "")) == 502

    paged: list[int] = []
    position = ""
    while True:
        kvs, position = await store.scan_kv("topics", position=position, limit=37)
        paged.extend(kv.id for kv in kvs)
        if not position:
            break
    assert paged == sorted((kv.id for kv in found), reverse=True)

    for key in keys:
        assert await store.delete_kv("topics", key)
    assert await store.find_kv("topics", "") == []
    assert await store.scan_kv("topics", position="", limit=10) == ([], "")
    assert len(await store.find_kv("", "")) == 2


async def test_scan_pages_newest_first_with_filters(store: RedisStore) -> None:
    kinds = [(SAGA, SUBMITTED), (TCC, PREPARED), (MSG, PREPARED)]
    for i in range(30):
        trans_type, status = kinds[i % 3]
        await create(store, f"g{i:02}", trans_type=trans_type, status=status)

    async def pages(where: ScanFilter, limit: int) -> list[list[str]]:
        """Every page to the end; each one full but the last."""
        result: list[list[str]] = []
        position = ""
        while True:
            page = await store.scan(position=position, limit=limit, where=where)
            result.append([trans.gid for trans in page.items])
            position = page.next_position
            if not position:
                assert all(len(items) == limit for items in result[:-1])
                return result

    def joined(pages: list[list[str]]) -> list[str]:
        return [gid for page in pages for gid in page]

    newest_first = [f"g{i:02}" for i in reversed(range(30))]
    tcc = [gid for gid in newest_first if int(gid[1:]) % 3 == 1]
    prepared = [gid for gid in newest_first if int(gid[1:]) % 3 != 0]
    assert joined(await pages(ScanFilter(trans_type=TCC), 4)) == tcc
    assert joined(await pages(ScanFilter(status=PREPARED), 7)) == prepared
    assert await pages(ScanFilter(status=FAILED), 5) == [[]]
    assert joined(await pages(ScanFilter(), 8)) == newest_first


async def test_scan_with_a_rare_filter_returns_short_pages_that_go_on(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(store, "wanted", trans_type=TCC)
    for i in range(20):
        await create(store, f"other{i}")
    monkeypatch.setattr(redis_store, "SCAN_BUDGET", 5)

    page = await store.scan(position="", limit=2, where=ScanFilter(trans_type=TCC))
    assert page.items == [] and page.next_position != ""
    found: list[str] = []
    calls = 1
    while page.next_position:
        page = await store.scan(
            position=page.next_position, limit=2, where=ScanFilter(trans_type=TCC)
        )
        found.extend(trans.gid for trans in page.items)
        calls += 1
    assert found == ["wanted"]
    assert calls == 4  # 21 entries, 7 examined per call


# --- connections and concurrency ----------------------------------------------------------


async def test_a_killed_connection_is_survived(store: RedisStore, raw: aioredis.Redis) -> None:
    await asyncio.gather(*(create(store, f"g{i}") for i in range(20)))
    clients = [client for client in await raw.client_list() if client["name"] == store.client_name]
    assert clients
    for client in clients:
        await raw.client_kill_filter(_id=client["id"])

    try:
        await store.find("g1")
    except StoreUnavailable as exc:
        assert exc.__cause__ is not None
    assert await store.find("g1") is not None
    # Every other pooled connection the server closed is replaced when it is next taken.
    found = await asyncio.gather(*(store.find(f"g{i}") for i in range(20)))
    assert [trans.gid for trans in found if trans is not None] == [f"g{i}" for i in range(20)]
    assert await store.save_progress("g1", Progress(result="r"), expect_status=SUBMITTED)


async def test_an_unreachable_server_raises_store_unavailable(tmp_path: Path) -> None:
    store = RedisStore(factory_redis.config(tmp_path, Port=1))
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert caught.value.__cause__ is not None
    with pytest.raises(StoreUnavailable):
        await store.find("g1")
    await store.close()


async def test_scripts_the_server_forgot_are_loaded_again(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    await raw.script_flush()

    created = await asyncio.gather(*(create(store, f"g{i}") for i in range(10)))

    assert all(trans.id for trans in created)
    assert await store.find("g9") is not None


class PrivateRedis:
    """A redis-server of this test's own on a free port, that it can stop and restart."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp), "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_restarted_server_is_used_again(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    store = RedisStore(factory_redis.config(tmp_path, Port=private_redis.port))
    await store.open()
    try:
        await create(store, "before")
        private_redis.stop()
        with pytest.raises(StoreUnavailable) as caught:
            await store.find("before")
        assert isinstance(caught.value.__cause__, rexc.ConnectionError | OSError)
        private_redis.start()  # empty: it keeps nothing, scripts included

        with contextlib.suppress(StoreUnavailable):
            await store.find("before")  # may meet a connection to the old server
        assert await store.find("before") is None
        await create(store, "after")
        assert [trans.gid for trans in await store.lock_due(owner="me", lease=9, limit=9)] == []
    finally:
        await store.close()


async def test_a_server_that_does_not_answer_times_out(
    tmp_path: Path, private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "COMMAND_TIMEOUT", 0.3)
    store = RedisStore(factory_redis.config(tmp_path, Port=private_redis.port))
    await store.open()
    blocker = aioredis.Redis(port=private_redis.port)
    try:
        await create(store, "g1")
        sleeping = asyncio.ensure_future(blocker.execute_command("DEBUG", "SLEEP", "1"))
        await asyncio.sleep(0.1)

        with pytest.raises(StoreUnavailable) as caught:
            await store.find("g1")
        assert isinstance(caught.value.__cause__, rexc.TimeoutError | TimeoutError)

        await sleeping
        assert await store.find("g1") is not None
    finally:
        await blocker.aclose()
        await store.close()


async def test_two_stores_never_lock_the_same_transaction(tmp_path: Path) -> None:
    first = await open_store(tmp_path)
    second = await open_store(tmp_path)
    try:
        gids = [f"g{i:03}" for i in range(300)]
        await asyncio.gather(*(create(first, gid, delay=0) for gid in gids))

        takes = await asyncio.gather(
            *(
                (first if i % 2 else second).lock_due(owner=f"o{i}", lease=60, limit=7)
                for i in range(60)
            )
        )

        taken = [trans.gid for batch in takes for trans in batch]
        assert sorted(taken) == gids
        for i, batch in enumerate(takes):
            for trans in batch:
                stored = await second.find(trans.gid)
                assert stored is not None and stored.owner == f"o{i}"
    finally:
        await first.close()
        await second.close()
