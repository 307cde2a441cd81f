"""The Redis store's cluster mode (`RedisBuckets` > 1 over a Redis Cluster), beside the
contract suite, which runs in this mode too (`factory_redis_cluster`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.cluster

from dtm.protocol.consts import PREPARED, SAGA, SUBMITTED, SUCCEED, TCC
from dtm.server.stores import redis as redis_store
from dtm.server.stores.base import Progress, ScanFilter
from dtm.server.stores.redis import RedisStore
from tests.stores import factory_redis, factory_redis_cluster
from tests.stores.test_contract import create


@pytest.fixture
def raw() -> Iterator[redis.cluster.RedisCluster]:
    nodes = [
        redis.cluster.ClusterNode("127.0.0.1", int(entry.rpartition(":")[2]))
        for entry in factory_redis_cluster.cluster().hosts.split(",")
    ]
    client = redis.cluster.RedisCluster(startup_nodes=nodes)
    yield client
    client.close()


async def open_store(tmp: Path, **conf: object) -> RedisStore:
    store = RedisStore(factory_redis_cluster.config(tmp, **conf))
    await store.open()
    return store


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[RedisStore]:
    opened = await open_store(tmp_path)
    yield opened
    await opened.close()


async def test_transactions_of_one_prefix_spread_over_slots_and_nodes(
    store: RedisStore, raw: redis.cluster.RedisCluster
) -> None:
    gids = [f"spread-{i}" for i in range(40)]
    for gid in gids:
        await create(store, gid)

    keys = [f"{store._g(gid)}" for gid in gids]
    assert all(raw.exists(key) for key in keys)
    assert all(not key.startswith(store.prefix) for key in keys)
    slots = {raw.keyslot(key) for key in keys}
    nodes = {raw.get_node_from_key(key).name for key in keys}
    assert len(slots) > 1 and len(nodes) > 1
    # Each bucket keeps a transaction's keys and its indexes in one slot.
    for gid in gids:
        bucket = store._bucket(gid)
        assert {
            raw.keyslot(key)
            for key in (store._g(gid), store._b(gid), bucket.unfinished, bucket.all)
        } == {raw.keyslot(bucket.prefix)}
    assert len(set(store.key_prefixes)) == factory_redis_cluster.BUCKETS


async def test_ids_are_unique_over_buckets_and_follow_creation(store: RedisStore) -> None:
    made = [await create(store, f"id-{i}") for i in range(30)]
    ids = [trans.id for trans in made]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    branch_ids = []
    for trans in made:
        _, ops = await store.load(trans.gid)
        branch_ids.extend(op.id for op in ops)
    assert len(set(branch_ids)) == len(branch_ids)


async def test_two_stores_never_lock_the_same_transaction(tmp_path: Path) -> None:
    first = await open_store(tmp_path)
    second = await open_store(tmp_path)
    try:
        gids = {f"due-{i}" for i in range(60)}
        for gid in sorted(gids):
            await create(first, gid, delay=0)
        seen: list[str] = []
        while True:
            takes = await asyncio.gather(
                first.lock_due(owner="first", lease=60, limit=7),
                second.lock_due(owner="second", lease=60, limit=7),
                first.lock_due(owner="first", lease=60, limit=5),
            )
            got = [trans.gid for taken in takes for trans in taken]
            if not got:
                break
            seen.extend(got)
        assert sorted(seen) == sorted(gids)
        for gid in gids:
            trans = await first.find(gid)
            assert trans is not None and trans.owner in {"first", "second"}
    finally:
        await first.close()
        await second.close()


async def test_cron_calls_cover_every_bucket(store: RedisStore) -> None:
    for i in range(20):
        await create(store, f"far-{i}", delay=600)
    assert await store.reset_cron_time(after=60, limit=7) == (7, True)
    assert await store.reset_cron_time(after=60, limit=100) == (13, False)
    taken = await store.lock_due(owner="me", lease=60, limit=100)
    assert len(taken) == 20

    for i in range(20):
        await create(store, f"done-{i}")
        assert await store.save_progress(
            f"done-{i}", Progress(status=SUCCEED), expect_status=SUBMITTED
        )
    await asyncio.sleep(0.01)
    assert await store.purge_finished(older_than=0, limit=5) == 5
    assert await store.purge_finished(older_than=0, limit=100) == 15
    assert await store.purge_finished(older_than=0, limit=100) == 0


async def page_all(store: RedisStore, where: ScanFilter, limit: int) -> list[str]:
    gids: list[str] = []
    position = ""
    for _ in range(1000):
        page = await store.scan(position=position, limit=limit, where=where)
        assert len(page.items) <= limit
        gids.extend(trans.gid for trans in page.items)
        position = page.next_position
        if not position:
            return gids
    raise AssertionError("scan did not end")


@pytest.mark.parametrize("budget", [redis_store.SCAN_BUDGET, 1])
async def test_scan_pages_through_all_buckets_with_filters(
    store: RedisStore, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "SCAN_BUDGET", budget)
    made = []
    for i in range(30):
        kind = TCC if i % 3 == 0 else SAGA
        made.append(
            await create(
                store, f"scan-{i}", trans_type=kind, status=PREPARED if i % 2 else SUBMITTED
            )
        )
    newest_first = [trans.gid for trans in sorted(made, key=lambda t: t.id, reverse=True)]

    assert await page_all(store, ScanFilter(), 4) == newest_first
    assert await page_all(store, ScanFilter(), 30) == newest_first
    prepared = [gid for gid in newest_first if int(gid.split("-")[1]) % 2]
    assert await page_all(store, ScanFilter(status=PREPARED), 3) == prepared
    tcc_prepared = [gid for gid in prepared if int(gid.split("-")[1]) % 3 == 0]
    assert await page_all(store, ScanFilter(status=PREPARED, trans_type=TCC), 2) == tcc_prepared
    assert await page_all(store, ScanFilter(status="none"), 5) == []


async def test_scripts_come_back_after_a_script_flush(
    store: RedisStore, raw: redis.cluster.RedisCluster
) -> None:
    await create(store, "before")
    for node in raw.get_primaries():
        raw.execute_command("SCRIPT", "FLUSH", target_nodes=node)
        exists = raw.execute_command("SCRIPT", "EXISTS", store._shas["create"], target_nodes=node)
        assert not any(exists)
    await create(store, "after")
    trans, ops = await store.load("after")
    assert trans is not None and len(ops) == 2
    await store.ping()


def test_cluster_hosts_need_ports(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host:port"):
        RedisStore(factory_redis_cluster.config(tmp_path, Host="127.0.0.1:7000,127.0.0.1"))
    with pytest.raises(ValueError, match="RedisBuckets"):
        RedisStore(factory_redis_cluster.config(tmp_path, RedisBuckets=0))


async def test_buckets_on_one_server(tmp_path: Path) -> None:
    factory_redis.make(tmp_path)  # clears the prefix's keys the first time
    store = RedisStore(factory_redis.config(tmp_path, RedisBuckets=4))
    await store.open()
    try:
        made = [await create(store, f"one-{i}", delay=0) for i in range(12)]
        newest_first = [trans.gid for trans in reversed(made)]
        assert await page_all(store, ScanFilter(), 5) == newest_first
        taken = await store.lock_due(owner="me", lease=60, limit=100)
        assert [trans.gid for trans in taken] == [trans.gid for trans in made]
    finally:
        await store.close()
        with redis.Redis(host=factory_redis.HOST, port=factory_redis.PORT) as client:
            for prefix in store.key_prefixes:
                keys = list(client.scan_iter(match=prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
