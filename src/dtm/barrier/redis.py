"""The sub-transaction barrier over Redis (upstream's dtmcli/barrier_redis.go).

Redis has no transaction to share with the business change, so the barrier and the change
are one Lua script: `redis_check_adjust_amount` adds `amount` to an integer balance key at
most once per branch op, records the barrier keys beside it (with an expiry), and refuses a
change that would take the balance below 0 (FailureError, nothing written, so a retry may
still succeed). `redis_query_prepared` is a message's check-back. Both come in a sync
(`redis.Redis`) and an async (`redis.asyncio.Redis`) form that run the same script files
(`dtm/barrier/lua/*.lua`).

Barrier keys are upstream's `{gid}-{branch_id}-{op}-{barrier_id}`, so Go and Python
branches can share one Redis. In Redis Cluster every key of one call must hash to the same
slot: give the balance key and the gid a common hash tag.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from typing import Any, Final

import redis
import redis.asyncio

from dtm.barrier._barrier import _MSG_BARRIER_ID, _ORIGIN_OP, BranchBarrier
from dtm.errors import DuplicateError, FailureError
from dtm.protocol.consts import CHECKBACK_BRANCH_ID, OP_MSG

__all__ = [
    "redis_check_adjust_amount",
    "redis_check_adjust_amount_async",
    "redis_query_prepared",
    "redis_query_prepared_async",
]

logger = logging.getLogger(__name__)

_FAILURE: Final = "FAILURE"
_DUPLICATE: Final = "DUPLICATE"


@cache
def _lua(name: str) -> str:
    return resources.files("dtm.barrier").joinpath("lua", f"{name}.lua").read_text()


def _key(barrier: BranchBarrier, branch_id: str, op: str, barrier_id: str) -> str:
    return f"{barrier.gid}-{branch_id}-{op}-{barrier_id}"


def _adjust_args(
    barrier: BranchBarrier, key: str, amount: int, barrier_expire: int
) -> tuple[list[str], list[str | int]]:
    if barrier_expire <= 0:
        raise ValueError(f"barrier_expire must be a positive number of seconds: {barrier_expire}")
    barrier.barrier_id += 1
    bid = f"{barrier.barrier_id:02d}"
    origin_op = _ORIGIN_OP.get(barrier.op, "")
    keys = [
        key,
        _key(barrier, barrier.branch_id, barrier.op, bid),
        _key(barrier, barrier.branch_id, origin_op, bid),
    ]
    return keys, [amount, origin_op, barrier_expire, barrier.op]


def _adjust_result(barrier: BranchBarrier, value: Any) -> None:
    answer = value.decode() if isinstance(value, bytes) else value
    logger.debug("%s: redis barrier answered %r", barrier, answer)
    if answer == _FAILURE:
        raise FailureError(f"{barrier}: the balance is missing or would go below 0")
    if answer == _DUPLICATE and barrier.op == OP_MSG:
        raise DuplicateError(f"{barrier}: the message's local op already ran")


def _prepared_key(barrier: BranchBarrier) -> str:
    return _key(barrier, CHECKBACK_BRANCH_ID, OP_MSG, _MSG_BARRIER_ID)


def _prepared_result(barrier: BranchBarrier, value: Any) -> None:
    answer = value.decode() if isinstance(value, bytes) else value
    if answer == _FAILURE:
        raise FailureError(f"{barrier}: the message's local op rolled back")


def redis_check_adjust_amount(
    barrier: BranchBarrier,
    client: redis.Redis,
    key: str,
    amount: int,
    *,
    barrier_expire: int,
) -> None:
    """Add `amount` to the integer at `key` at most once for this branch op, atomically.

    Skips a repeat and an action arriving after its compensation (hanging); records a
    compensation whose action never ran (null compensation) without changing the balance.
    Raises FailureError, writing nothing, when `key` is missing or the balance would go
    below 0; DuplicateError for a repeated op "msg", as the SQL barrier does. Barrier keys
    expire after `barrier_expire` seconds, which must outlast the global transaction.
    """
    keys, args = _adjust_args(barrier, key, amount, barrier_expire)
    script = client.register_script(_lua("check_adjust_amount"))
    _adjust_result(barrier, script(keys=keys, args=args))


async def redis_check_adjust_amount_async(
    barrier: BranchBarrier,
    client: redis.asyncio.Redis,
    key: str,
    amount: int,
    *,
    barrier_expire: int,
) -> None:
    """`redis_check_adjust_amount` over an asyncio client."""
    keys, args = _adjust_args(barrier, key, amount, barrier_expire)
    script = client.register_script(_lua("check_adjust_amount"))
    _adjust_result(barrier, await script(keys=keys, args=args))


def redis_query_prepared(
    barrier: BranchBarrier, client: redis.Redis, *, barrier_expire: int
) -> None:
    """A message's check-back: returns if its local op committed, else FailureError.

    Marks the op rolled back when it has not run, so a late local op answers DuplicateError.
    """
    script = client.register_script(_lua("query_prepared"))
    _prepared_result(barrier, script(keys=[_prepared_key(barrier)], args=[barrier_expire]))


async def redis_query_prepared_async(
    barrier: BranchBarrier, client: redis.asyncio.Redis, *, barrier_expire: int
) -> None:
    """`redis_query_prepared` over an asyncio client."""
    script = client.register_script(_lua("query_prepared"))
    value = await script(keys=[_prepared_key(barrier)], args=[barrier_expire])
    _prepared_result(barrier, value)
