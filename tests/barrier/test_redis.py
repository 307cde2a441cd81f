"""The Redis barrier against the machine's Redis (127.0.0.1:6379), sync and asyncio clients.

Every test uses keys under a private prefix and deletes them after; a Redis that is down
fails the tests, never skips them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from dtm.barrier import BranchBarrier
from dtm.barrier.redis import (
    redis_check_adjust_amount,
    redis_check_adjust_amount_async,
    redis_query_prepared,
    redis_query_prepared_async,
)
from dtm.errors import DuplicateError, FailureError

URL = "redis://127.0.0.1:6379/0"
EXPIRE = 3600


@dataclass
class Rig:
    """One test's Redis: a private prefix, a balance key, and the barrier calls of one mode."""

    mode: str
    sync: redis.Redis
    aio: redis.asyncio.Redis
    prefix: str

    @property
    def key(self) -> str:
        return f"{self.prefix}balance"

    def barrier(self, op: str, *, trans_type: str = "saga", branch_id: str = "01") -> BranchBarrier:
        return BranchBarrier(trans_type, f"{self.prefix}gid", branch_id, op)

    async def adjust(self, barrier: BranchBarrier, amount: int) -> None:
        if self.mode == "sync":
            redis_check_adjust_amount(barrier, self.sync, self.key, amount, barrier_expire=EXPIRE)
        else:
            await redis_check_adjust_amount_async(
                barrier, self.aio, self.key, amount, barrier_expire=EXPIRE
            )

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        if self.mode == "sync":
            redis_query_prepared(barrier, self.sync, barrier_expire=EXPIRE)
        else:
            await redis_query_prepared_async(barrier, self.aio, barrier_expire=EXPIRE)

    def balance(self) -> int | None:
        value: Any = self.sync.get(self.key)
        return None if value is None else int(value)

    def barrier_keys(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in self.sync.scan_iter(match=f"{self.prefix}gid-*"):
            found[name.decode()] = self.sync.get(name).decode()  # type: ignore[union-attr]
        return found


@pytest_asyncio.fixture(loop_scope="function", params=["sync", "async"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    sync = redis.Redis.from_url(URL)
    aio = redis.asyncio.Redis.from_url(URL)
    r = Rig(request.param, sync, aio, f"dtm_bt_{uuid.uuid4().hex[:12]}:")
    try:
        yield r
    finally:
        for name in sync.scan_iter(match=f"{r.prefix}*"):
            sync.delete(name)
        sync.close()
        await aio.aclose()


def _key(rig: Rig, op: str, bid: str = "01", branch_id: str = "01") -> str:
    return f"{rig.prefix}gid-{branch_id}-{op}-{bid}"


async def test_balance_check_refuses_below_zero_and_leaves_no_barrier(rig: Rig) -> None:
    rig.sync.set(rig.key, 20)
    with pytest.raises(FailureError):
        await rig.adjust(rig.barrier("action"), -30)
    assert rig.balance() == 20
    assert rig.barrier_keys() == {}  # as upstream: a refused op records nothing
    # A retry after a deposit goes through: the refusal did not burn the barrier.
    rig.sync.incrby(rig.key, 10)
    await rig.adjust(rig.barrier("action"), -30)
    assert rig.balance() == 0


async def test_missing_balance_key_is_failure(rig: Rig) -> None:
    with pytest.raises(FailureError):
        await rig.adjust(rig.barrier("action"), 5)
    assert rig.balance() is None
    assert rig.barrier_keys() == {}


async def test_idempotent_action(rig: Rig) -> None:
    rig.sync.set(rig.key, 100)
    await rig.adjust(rig.barrier("action"), -30)
    await rig.adjust(rig.barrier("action"), -30)
    assert rig.balance() == 70
    assert rig.barrier_keys() == {_key(rig, "action"): "action"}
    assert 0 < rig.sync.ttl(_key(rig, "action")) <= EXPIRE


async def test_repeat_after_success_is_not_failure_when_balance_moved(rig: Rig) -> None:
    rig.sync.set(rig.key, 30)
    await rig.adjust(rig.barrier("action"), -30)
    await rig.adjust(rig.barrier("action"), -30)  # a retry: skipped, not refused
    assert rig.balance() == 0


async def test_null_compensation_then_hanging_action(rig: Rig) -> None:
    rig.sync.set(rig.key, 100)
    await rig.adjust(rig.barrier("compensate"), 30)
    assert rig.balance() == 100
    assert rig.barrier_keys() == {
        _key(rig, "compensate"): "compensate",
        _key(rig, "action"): "rollback",
    }
    await rig.adjust(rig.barrier("action"), -30)
    assert rig.balance() == 100


async def test_null_compensation_never_fails_on_balance(rig: Rig) -> None:
    await rig.adjust(rig.barrier("compensate"), -30)  # no balance key at all: still fine
    assert rig.balance() is None
    assert _key(rig, "action") in rig.barrier_keys()


async def test_compensation_after_action(rig: Rig) -> None:
    rig.sync.set(rig.key, 100)
    await rig.adjust(rig.barrier("action"), -30)
    await rig.adjust(rig.barrier("compensate"), 30)
    await rig.adjust(rig.barrier("compensate"), 30)
    assert rig.balance() == 100


async def test_tcc_cancel_undoes_try(rig: Rig) -> None:
    rig.sync.set(rig.key, 100)
    await rig.adjust(rig.barrier("try", trans_type="tcc"), -30)
    await rig.adjust(rig.barrier("cancel", trans_type="tcc"), 30)
    assert rig.balance() == 100


async def test_msg_query_prepared_after_commit(rig: Rig) -> None:
    rig.sync.set(rig.key, 0)
    await rig.adjust(rig.barrier("msg", trans_type="msg", branch_id="00"), 10)
    await rig.query_prepared(rig.barrier("msg", trans_type="msg"))
    assert rig.balance() == 10
    with pytest.raises(DuplicateError):
        await rig.adjust(rig.barrier("msg", trans_type="msg", branch_id="00"), 10)
    assert rig.balance() == 10


async def test_msg_query_prepared_before_local_op(rig: Rig) -> None:
    rig.sync.set(rig.key, 0)
    with pytest.raises(FailureError):
        await rig.query_prepared(rig.barrier("msg", trans_type="msg"))
    with pytest.raises(FailureError):
        await rig.query_prepared(rig.barrier("msg", trans_type="msg"))
    with pytest.raises(DuplicateError):
        await rig.adjust(rig.barrier("msg", trans_type="msg", branch_id="00"), 10)
    assert rig.balance() == 0


async def test_barrier_expire_must_be_positive(rig: Rig) -> None:
    rig.sync.set(rig.key, 0)
    with pytest.raises(ValueError, match="barrier_expire"):
        redis_check_adjust_amount(rig.barrier("action"), rig.sync, rig.key, 1, barrier_expire=0)
