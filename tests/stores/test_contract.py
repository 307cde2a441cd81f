"""The `Store` contract (stores/base.py), run against every backend in conftest.FACTORIES."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from dtm.protocol.consts import (
    ABORTING,
    FAILED,
    MSG,
    OP_ACTION,
    OP_COMPENSATE,
    PREPARED,
    SAGA,
    SUBMITTED,
    SUCCEED,
    TCC,
)
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.stores.base import (
    BranchUpdate,
    Progress,
    ScanFilter,
    Store,
    StoreUnavailable,
)
from tests.stores.conftest import StoreFactory

# Stores with coarser clocks (MySQL DATETIME, Redis seconds) still land within this, also
# those that round lease ends up to the next whole second (plus the call's latency).
SLACK = timedelta(seconds=1.5)
LEASE = 0.2


def new_trans(gid: str, *, status: str = SUBMITTED, trans_type: str = SAGA) -> TransGlobal:
    return TransGlobal(
        gid=gid,
        trans_type=trans_type,
        status=status,
        protocol="http",
        options='{"timeout_to_fail":0}',
        custom_data="custom",
        next_cron_interval=10,
        ext_data="ext",
    )


def saga_ops(gid: str, *branch_ids: str) -> list[TransBranch]:
    """A compensate and an action operation per branch id, as a saga registers them."""
    return [
        TransBranch(
            gid=gid,
            url=f"http://busi/{op}/{branch_id}",
            bin_data=f'{{"step":"{branch_id}"}}'.encode(),
            branch_id=branch_id,
            op=op,
            status=PREPARED,
        )
        for branch_id in branch_ids
        for op in (OP_COMPENSATE, OP_ACTION)
    ]


def now() -> datetime:
    return datetime.now(UTC)


def assert_near(moment: datetime | None, expected: datetime) -> None:
    assert moment is not None
    assert moment.utcoffset() == timedelta(0)
    assert abs(moment - expected) <= SLACK


async def create(store: Store, gid: str, *, delay: float = 10, **kwargs: str) -> TransGlobal:
    trans = new_trans(gid, **kwargs)
    assert await store.create(trans, saga_ops(gid, "01"), next_cron_delay=delay)
    return trans


# --- create, find, load --------------------------------------------------------------


async def test_create_stores_everything_and_fills_the_objects(store: Store) -> None:
    trans, ops = new_trans("g1"), saga_ops("g1", "01", "02")
    before = now()

    assert await store.create(trans, ops, next_cron_delay=30)

    assert trans.id > 0
    assert_near(trans.create_time, before)
    assert trans.update_time == trans.create_time
    assert trans.create_time is not None
    assert_near(trans.next_cron_time, trans.create_time + timedelta(seconds=30))
    assert [op.id for op in ops] == sorted({op.id for op in ops})
    assert all(op.id > 0 and op.create_time == trans.create_time for op in ops)
    loaded, loaded_ops = await store.load("g1")
    assert loaded == trans
    assert loaded_ops == ops


async def test_create_with_a_taken_gid_writes_nothing(store: Store) -> None:
    first = await create(store, "g1")
    again = new_trans("g1", status=PREPARED, trans_type=MSG)
    other_ops = saga_ops("g1", "09")

    assert not await store.create(again, other_ops, next_cron_delay=0)

    assert again.id == 0 and again.create_time is None
    assert all(op.id == 0 for op in other_ops)
    loaded, ops = await store.load("g1")
    assert loaded == first
    assert [op.branch_id for op in ops] == ["01", "01"]


async def test_find_and_load_of_a_missing_gid(store: Store) -> None:
    assert await store.find("nope") is None
    assert await store.load("nope") == (None, [])


async def test_find_returns_fresh_objects(store: Store) -> None:
    await create(store, "g1")
    found = await store.find("g1")
    assert found is not None
    found.status = FAILED
    assert (await store.find("g1")) != found


async def test_load_returns_operations_in_insertion_order(store: Store) -> None:
    ops = saga_ops("g1", "03", "01")
    assert await store.create(new_trans("g1"), ops, next_cron_delay=10)
    more = saga_ops("g1", "02")
    assert await store.add_branches("g1", more, expect_status=SUBMITTED)

    _, loaded = await store.load("g1")

    assert [(op.branch_id, op.op) for op in loaded] == [
        (op.branch_id, op.op) for op in [*ops, *more]
    ]
    assert loaded[0].bin_data == b'{"step":"03"}'


async def test_gids_that_prefix_each_other_keep_their_branches_apart(store: Store) -> None:
    # Stores that build keys or patterns from the gid (Redis: `<prefix>_b_<gid>`) must not
    # let one gid's branches show in another's, nor its status.
    gids = ["X", "X0", "X_", "X_b_X"]
    for number, gid in enumerate(gids):
        assert await store.create(new_trans(gid), saga_ops(gid, f"0{number}"), next_cron_delay=0)
    finish = Progress(branches=[BranchUpdate("00", OP_ACTION, SUCCEED)], status=SUCCEED)
    assert await store.save_progress("X", finish, expect_status=SUBMITTED)

    for number, gid in enumerate(gids):
        trans, ops = await store.load(gid)
        assert trans is not None and trans.gid == gid
        assert {(op.gid, op.branch_id) for op in ops} == {(gid, f"0{number}")}
    _, ops = await store.load("X0")
    assert {op.status for op in ops} == {PREPARED}
    taken = await store.lock_due(owner="me", lease=60, limit=10)
    assert sorted(trans.gid for trans in taken) == ["X0", "X_", "X_b_X"]


# --- add_branches --------------------------------------------------------------------


async def test_add_branches_is_guarded_by_the_status(store: Store) -> None:
    await create(store, "g1", status=PREPARED)

    assert not await store.add_branches("g1", saga_ops("g1", "02"), expect_status=SUBMITTED)
    assert not await store.add_branches("nope", saga_ops("nope", "02"), expect_status=PREPARED)

    _, ops = await store.load("g1")
    assert [op.branch_id for op in ops] == ["01", "01"]
    assert await store.load("nope") == (None, [])


async def test_add_branches_leaves_existing_operations_alone(store: Store) -> None:
    await create(store, "g1", status=PREPARED, trans_type=TCC)
    _, before = await store.load("g1")
    repeated = saga_ops("g1", "01", "02")
    for op in repeated:
        op.url = "http://changed"

    assert await store.add_branches("g1", repeated, expect_status=PREPARED)
    assert await store.add_branches("g1", saga_ops("g1", "02"), expect_status=PREPARED)

    _, after = await store.load("g1")
    assert after[:2] == before
    assert [(op.branch_id, op.url) for op in after[2:]] == [("02", "http://changed")] * 2
    assert [op.id for op in repeated[2:]] == [op.id for op in after[2:]]


# --- save_progress -------------------------------------------------------------------


async def test_save_progress_is_guarded_by_the_status(store: Store) -> None:
    original = await create(store, "g1")
    progress = Progress(
        branches=[BranchUpdate("01", OP_ACTION, SUCCEED)], status=SUCCEED, result="done"
    )

    assert not await store.save_progress("g1", progress, expect_status=ABORTING)
    assert not await store.save_progress("nope", progress, expect_status=SUBMITTED)

    loaded, ops = await store.load("g1")
    assert loaded == original
    assert {op.status for op in ops} == {PREPARED}


async def test_save_progress_is_guarded_by_the_owner(store: Store) -> None:
    original = await create(store, "g1", delay=0)
    [locked] = await store.lock_due(owner="me", lease=60, limit=10)
    stale = Progress(branches=[BranchUpdate("01", OP_ACTION, SUCCEED)], status=SUCCEED)

    assert not await store.save_progress("g1", stale, expect_status=SUBMITTED, owner="other")
    assert not await store.save_progress(
        "g1", Progress(branches=stale.branches), expect_status=SUBMITTED, owner="other"
    )

    loaded, ops = await store.load("g1")
    assert loaded == locked and loaded.status == original.status
    assert {op.status for op in ops} == {PREPARED}
    assert await store.save_progress("g1", stale, expect_status=SUBMITTED, owner="me")
    loaded = await store.find("g1")
    assert loaded is not None and loaded.status == SUCCEED


async def test_save_progress_writes_only_what_it_carries(store: Store) -> None:
    original = await create(store, "g1")

    assert await store.save_progress("g1", Progress(result="partial"), expect_status=SUBMITTED)

    loaded = await store.find("g1")
    assert loaded is not None
    assert loaded.result == "partial"
    assert loaded.status == SUBMITTED
    assert loaded.next_cron_time == original.next_cron_time
    assert loaded.next_cron_interval == original.next_cron_interval
    assert loaded.owner == original.owner
    assert loaded.finish_time is None and loaded.rollback_time is None


async def test_save_progress_of_branches_only_leaves_the_global_alone(store: Store) -> None:
    original = await create(store, "g1")

    progress = Progress(branches=[BranchUpdate("01", OP_ACTION, SUBMITTED)])
    assert await store.save_progress("g1", progress, expect_status=SUBMITTED)

    loaded, ops = await store.load("g1")
    assert loaded == original
    assert [(op.op, op.status, op.finish_time) for op in ops] == [
        (OP_COMPENSATE, PREPARED, None),
        (OP_ACTION, SUBMITTED, None),
    ]


async def test_save_progress_of_success_stamps_the_finish(store: Store) -> None:
    original = await create(store, "g1")
    before = now()
    progress = Progress(
        branches=[BranchUpdate("01", OP_ACTION, SUCCEED)],
        status=SUCCEED,
        next_cron_interval=20,
        next_cron_delay=40,
        owner="me",
    )

    assert await store.save_progress("g1", progress, expect_status=SUBMITTED)

    loaded, ops = await store.load("g1")
    assert loaded is not None and original.create_time is not None
    assert loaded.status == SUCCEED
    assert_near(loaded.finish_time, before)
    assert loaded.update_time == loaded.finish_time
    assert loaded.create_time == original.create_time
    assert loaded.rollback_time is None
    assert loaded.next_cron_interval == 20
    assert loaded.next_cron_time is not None and loaded.update_time is not None
    assert_near(loaded.next_cron_time - timedelta(seconds=40), loaded.update_time)
    assert loaded.owner == "me"
    assert ops[0].finish_time is None and ops[0].update_time == ops[0].create_time
    assert ops[1].status == SUCCEED
    assert_near(ops[1].finish_time, before)
    assert ops[1].update_time == ops[1].finish_time


async def test_save_progress_of_failure_stamps_the_rollback(store: Store) -> None:
    await create(store, "g1")
    before = now()
    progress = Progress(
        branches=[BranchUpdate("01", OP_ACTION, FAILED)],
        status=ABORTING,
        rollback_reason="insufficient balance",
    )
    assert await store.save_progress("g1", progress, expect_status=SUBMITTED)
    progress = Progress(branches=[BranchUpdate("01", OP_COMPENSATE, SUCCEED)], status=FAILED)
    assert await store.save_progress("g1", progress, expect_status=ABORTING)

    loaded, ops = await store.load("g1")
    assert loaded is not None
    assert loaded.status == FAILED
    assert loaded.rollback_reason == "insufficient balance"
    assert_near(loaded.rollback_time, before)
    assert loaded.finish_time is None
    assert [op.status for op in ops] == [SUCCEED, FAILED]
    assert all(op.finish_time is not None for op in ops)


# --- cron: lock_due, reset_cron_time, reset_next_cron_time ---------------------------


async def test_lock_due_takes_due_unfinished_transactions_oldest_first(store: Store) -> None:
    await create(store, "later", delay=60)
    await create(store, "second", delay=0)
    await create(store, "first", delay=-5)
    await create(store, "third", delay=0, status=ABORTING)
    await create(store, "done", delay=0)
    finish = Progress(status=SUCCEED)
    assert await store.save_progress("done", finish, expect_status=SUBMITTED)
    before = now()

    taken = await store.lock_due(owner="me", lease=30, limit=2)
    rest = await store.lock_due(owner="me", lease=30, limit=10)

    assert [trans.gid for trans in taken] == ["first", "second"]
    assert [trans.gid for trans in rest] == ["third"]
    for trans in [*taken, *rest]:
        assert trans.owner == "me"
        assert_near(trans.next_cron_time, before + timedelta(seconds=30))
        assert await store.find(trans.gid) == trans


async def test_lock_due_does_not_take_a_leased_transaction_until_the_lease_ends(
    store: Store,
) -> None:
    await create(store, "g1", delay=0)

    [first] = await store.lock_due(owner="a", lease=LEASE, limit=10)
    assert await store.lock_due(owner="b", lease=LEASE, limit=10) == []
    # Until the lease end as stored: second-precision stores round it up to a whole second.
    assert first.next_cron_time is not None
    await asyncio.sleep(max(LEASE, (first.next_cron_time - now()).total_seconds()) + 0.01)
    [again] = await store.lock_due(owner="b", lease=LEASE, limit=10)

    assert first.owner == "a" and again.owner == "b"
    assert again.next_cron_time is not None and first.next_cron_time is not None
    assert again.next_cron_time > first.next_cron_time


async def test_concurrent_lock_due_never_share_a_transaction(store: Store) -> None:
    for i in range(20):
        await create(store, f"g{i}", delay=0)

    takes = await asyncio.gather(
        *(store.lock_due(owner=f"o{i}", lease=60, limit=3) for i in range(10))
    )

    gids = [trans.gid for taken in takes for trans in taken]
    assert sorted(gids) == sorted(f"g{i}" for i in range(20))


async def test_reset_cron_time_brings_far_transactions_forward(store: Store) -> None:
    for gid in ("a", "b", "c"):
        await create(store, gid, delay=600)
    await create(store, "soon", delay=5)
    await create(store, "done", delay=600)
    assert await store.save_progress("done", Progress(status=SUCCEED), expect_status=SUBMITTED)

    assert await store.reset_cron_time(after=60, limit=2) == (2, True)
    assert await store.reset_cron_time(after=60, limit=2) == (1, False)
    assert await store.reset_cron_time(after=60, limit=2) == (0, False)

    taken = await store.lock_due(owner="me", lease=60, limit=10)
    assert sorted(trans.gid for trans in taken) == ["a", "b", "c"]
    done = await store.find("done")
    assert done is not None and done.next_cron_time is not None
    assert done.next_cron_time > now() + timedelta(seconds=500)


async def test_reset_next_cron_time_makes_one_unfinished_transaction_due(store: Store) -> None:
    await create(store, "g1", delay=600)
    await create(store, "g2", delay=600)
    await create(store, "done", delay=600)
    assert await store.save_progress("done", Progress(status=FAILED), expect_status=SUBMITTED)

    assert await store.reset_next_cron_time("g1")
    assert not await store.reset_next_cron_time("done")
    assert not await store.reset_next_cron_time("nope")

    taken = await store.lock_due(owner="me", lease=60, limit=10)
    assert [trans.gid for trans in taken] == ["g1"]


# --- scan ----------------------------------------------------------------------------


async def test_scan_pages_newest_first(store: Store) -> None:
    for i in range(5):
        await create(store, f"g{i}")

    pages: list[list[str]] = []
    position = ""
    while True:
        page = await store.scan(position=position, limit=2, where=ScanFilter())
        pages.append([trans.gid for trans in page.items])
        position = page.next_position
        if not position:
            break

    assert pages == [["g4", "g3"], ["g2", "g1"], ["g0"]]


async def test_scan_ends_with_an_empty_page_when_the_last_page_is_full(store: Store) -> None:
    for i in range(2):
        await create(store, f"g{i}")

    first = await store.scan(position="", limit=2, where=ScanFilter())
    second = await store.scan(position=first.next_position, limit=2, where=ScanFilter())

    assert first.next_position == str(first.items[-1].id)
    assert second.items == [] and second.next_position == ""


async def test_scan_filters(store: Store) -> None:
    await create(store, "saga1")
    await create(store, "tcc1", trans_type=TCC)
    await create(store, "msg1", trans_type=MSG, status=PREPARED)
    middle = now()
    # Into the next whole second: stores that keep whole seconds stamp saga2 after middle.
    await asyncio.sleep(1.01 - middle.microsecond / 1e6)
    late = await create(store, "saga2")
    assert late.create_time is not None

    async def gids(where: ScanFilter) -> list[str]:
        page = await store.scan(position="", limit=100, where=where)
        return [trans.gid for trans in page.items]

    assert await gids(ScanFilter()) == ["saga2", "msg1", "tcc1", "saga1"]
    assert await gids(ScanFilter(status=PREPARED)) == ["msg1"]
    assert await gids(ScanFilter(trans_type=SAGA)) == ["saga2", "saga1"]
    assert await gids(ScanFilter(trans_type=SAGA, status=PREPARED)) == []
    assert await gids(ScanFilter(create_time_start=late.create_time)) == ["saga2"]
    assert await gids(ScanFilter(create_time_end=middle)) == ["msg1", "tcc1", "saga1"]
    assert await gids(ScanFilter(create_time_start=middle, create_time_end=now())) == ["saga2"]


# --- key-value pairs -----------------------------------------------------------------


async def test_kv_versions(store: Store) -> None:
    before = now()
    assert await store.create_kv("topics", "t1", "v1")
    assert not await store.create_kv("topics", "t1", "other")

    [kv] = await store.find_kv("topics", "t1")
    assert (kv.cat, kv.k, kv.v, kv.version) == ("topics", "t1", "v1", 1)
    assert_near(kv.create_time, before)

    assert not await store.update_kv("topics", "t1", "v2", version=2)
    assert await store.update_kv("topics", "t1", "v2", version=1)
    assert not await store.update_kv("topics", "t1", "v3", version=1)
    assert not await store.update_kv("topics", "nope", "v3", version=1)

    [kv] = await store.find_kv("topics", "t1")
    assert (kv.v, kv.version) == ("v2", 2)


async def test_kv_find_with_any(store: Store) -> None:
    for cat, key in [("topics", "a"), ("topics", "b"), ("other", "a")]:
        assert await store.create_kv(cat, key, f"{cat}/{key}")

    async def found(cat: str, key: str) -> list[str]:
        return sorted(kv.v for kv in await store.find_kv(cat, key))

    assert await found("topics", "") == ["topics/a", "topics/b"]
    assert await found("", "a") == ["other/a", "topics/a"]
    assert await found("", "") == ["other/a", "topics/a", "topics/b"]
    assert await found("nope", "") == []


async def test_kv_scan_and_delete(store: Store) -> None:
    for i in range(3):
        assert await store.create_kv("topics", f"t{i}", "v")
    assert await store.create_kv("other", "x", "v")

    first, position = await store.scan_kv("topics", position="", limit=2)
    rest, end = await store.scan_kv("topics", position=position, limit=2)

    assert [kv.k for kv in first] == ["t2", "t1"]
    assert [kv.k for kv in rest] == ["t0"] and end == ""
    assert await store.delete_kv("topics", "t1")
    assert not await store.delete_kv("topics", "t1")
    assert await store.find_kv("topics", "t1") == []
    kvs, _ = await store.scan_kv("topics", position="", limit=10)
    assert [kv.k for kv in kvs] == ["t2", "t0"]


# --- life cycle and concurrency ------------------------------------------------------


async def test_ping_and_use_after_close(new_store: StoreFactory) -> None:
    store = new_store()
    await store.open()
    await store.ping()
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.find("g1")
    await store.close()


async def test_concurrent_writes_are_all_durable(store: Store, new_store: StoreFactory) -> None:
    gids = [f"g{i:03}" for i in range(200)]

    created = await asyncio.gather(*(create_ok(store, gid) for gid in gids))
    assert all(created)
    await store.close()

    reopened = new_store()
    await reopened.open()
    try:
        page = await reopened.scan(position="", limit=1000, where=ScanFilter())
        assert sorted(trans.gid for trans in page.items) == gids
        _, ops = await reopened.load("g123")
        assert len(ops) == 2
    finally:
        await reopened.close()


async def create_ok(store: Store, gid: str) -> bool:
    return await store.create(new_trans(gid), saga_ops(gid, "01"), next_cron_delay=10)


async def test_purge_finished_removes_only_old_finished_transactions(store: Store) -> None:
    for gid, status in (("old-ok", SUCCEED), ("old-failed", FAILED), ("old-running", SUBMITTED)):
        await create(store, gid)
        if status != SUBMITTED:
            assert await store.save_progress(gid, Progress(status=status), expect_status=SUBMITTED)
    await asyncio.sleep(2.1)  # stores with second-precision columns still see the age
    await create(store, "new-ok")
    assert await store.save_progress("new-ok", Progress(status=SUCCEED), expect_status=SUBMITTED)

    assert await store.purge_finished(older_than=1, limit=1) == 1
    assert await store.purge_finished(older_than=1, limit=10) == 1
    assert await store.purge_finished(older_than=1, limit=10) == 0
    for gid in ("old-ok", "old-failed"):
        assert await store.load(gid) == (None, [])
    for gid in ("old-running", "new-ok"):
        trans, branches = await store.load(gid)
        assert trans is not None
        assert len(branches) == 2
