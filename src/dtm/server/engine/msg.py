"""2-phase message: prepared, then submitted (by the app, or by the query_prepared
check-back when the app went silent), then every action called until it succeeds.

Branch ids are "01", "02", ...; a `topic://name` step fans out to one operation per
subscriber with ids "02-01", "02-02", .... Custom data may carry `{"delay": seconds}`.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from dtm.protocol import consts
from dtm.protocol.records import TransBranch
from dtm.server.calls import CallResult, Outcome
from dtm.server.engine.run import TransRun
from dtm.server.engine.steps import CallPool


class _Custom(msgspec.Struct):
    delay: int = 0


def delay_of(custom_data: str) -> int:
    """Seconds to hold the message back; Go clients write `Delay` (Go matches keys without
    regard to case), others `delay`."""
    if not custom_data:
        return 0
    try:
        raw = msgspec.json.decode(custom_data)
    except msgspec.DecodeError:
        return 0
    if not isinstance(raw, dict):
        return 0
    for key, value in raw.items():
        if key.lower() == "delay" and isinstance(value, int) and value > 0:
            return value
    return 0


async def process(run: TransRun) -> None:
    if run.status == consts.PREPARED:
        if not run.timed_out():
            return
        await _check_back(run)
    if run.status != consts.SUBMITTED:
        return
    delay = delay_of(run.trans.custom_data)
    if delay and run.age() < delay:
        assert run.trans.create_time is not None
        await run.reschedule_at(run.trans.create_time + timedelta(seconds=delay))
        return
    actions = [b for b in run.branches if b.op == consts.OP_ACTION and b.status == consts.PREPARED]
    if run.options.concurrent:
        await _call_all(run, actions)
    else:
        await _call_in_order(run, actions)


async def _check_back(run: TransRun) -> None:
    """Ask the app whether its local transaction committed."""
    result = await run.call_url(
        run.trans.query_prepared, consts.CHECKBACK_BRANCH_ID, consts.OP_MSG, b""
    )
    if result.outcome is Outcome.SUCCESS:
        await run.save(status=consts.SUBMITTED, reschedule=True)
    elif result.outcome is Outcome.FAILURE:
        await run.save(
            status=consts.FAILED, rollback_reason=result.detail or "query_prepared said FAILURE"
        )
    else:
        await run.retry_later(result, run.trans.query_prepared)


async def _call_in_order(run: TransRun, actions: list[TransBranch]) -> None:
    for i, branch in enumerate(actions):
        result = await run.call(branch)
        if result.outcome is not Outcome.SUCCESS:
            await run.retry_later(_as_retry(result), branch.url)
            return
        last = i == len(actions) - 1
        await run.record_success(branch, finished=consts.SUCCEED if last else None)
    if not actions:
        await run.save(status=consts.SUCCEED)


async def _call_all(run: TransRun, actions: list[TransBranch]) -> None:
    pool = CallPool(run.call)
    for branch in actions:
        pool.start(branch)
    retry: tuple[TransBranch, CallResult] | None = None
    left = len(actions)
    try:
        while pool.busy:
            async for branch, result in pool.finished():
                if result.outcome is not Outcome.SUCCESS:
                    retry = retry or (branch, _as_retry(result))
                    continue
                left -= 1
                await run.record_success(branch, finished=consts.SUCCEED if left == 0 else None)
    finally:
        await pool.cancel()
    if retry is not None:
        await run.retry_later(retry[1], retry[0].url)
    elif not actions:
        await run.save(status=consts.SUCCEED)


def _as_retry(result: CallResult) -> CallResult:
    """A message is committed: a branch's FAILURE cannot undo it, so it is retried."""
    if result.outcome is Outcome.FAILURE:
        return CallResult(Outcome.ERROR, result.detail)
    return result
