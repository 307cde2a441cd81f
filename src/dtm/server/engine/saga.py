"""SAGA: actions forward in order (or by branch orders when concurrent); on failure,
compensations backward in the reverse of what ran.

Stored as two operations per step (compensate, action) with branch ids "01", "02", ....
The custom data may carry `{"concurrent": true, "orders": {"2": [0, 1]}}`: step 2 runs
after steps 0 and 1 succeed, and is compensated before them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from dtm.protocol import consts
from dtm.protocol.records import TransBranch
from dtm.server.calls import CallResult, Outcome
from dtm.server.engine.run import TransRun
from dtm.server.engine.steps import CallPool


class _Custom(msgspec.Struct):
    orders: dict[int, list[int]] = msgspec.field(default_factory=dict)
    concurrent: bool = False


@dataclass(slots=True)
class _Step:
    action: TransBranch
    compensate: TransBranch


@dataclass(slots=True)
class SagaPlan:
    """Steps with their dependency graph, read from the stored branches."""

    steps: list[_Step]
    concurrent: bool
    orders: dict[int, list[int]]
    successors: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: TransRun) -> SagaPlan:
        custom = _Custom()
        if run.trans.custom_data:
            custom = msgspec.json.decode(run.trans.custom_data, type=_Custom)
        by_id: dict[str, dict[str, TransBranch]] = {}
        for b in run.branches:
            by_id.setdefault(b.branch_id, {})[b.op] = b
        steps = [
            _Step(ops[consts.OP_ACTION], ops[consts.OP_COMPENSATE])
            for ops in by_id.values()
            if consts.OP_ACTION in ops and consts.OP_COMPENSATE in ops
        ]
        plan = cls(steps, custom.concurrent or run.options.concurrent, custom.orders)
        for step, preds in custom.orders.items():
            for p in preds:
                plan.successors.setdefault(p, []).append(step)
        return plan

    def may_run(self, i: int) -> bool:
        """An action runs once its predecessors succeeded."""
        if not self.concurrent and i > 0 and self.steps[i - 1].action.status != consts.SUCCEED:
            return False
        return all(
            0 <= p < len(self.steps) and self.steps[p].action.status == consts.SUCCEED
            for p in self.orders.get(i, ())
        )


async def process(run: TransRun) -> None:
    plan = SagaPlan.of(run)
    if run.status == consts.SUBMITTED and run.timed_out():
        await run.save(status=consts.ABORTING, rollback_reason=_timeout_reason(run))
    if run.status == consts.SUBMITTED:
        await _forward(run, plan)
    if run.status == consts.ABORTING:
        await _backward(run, plan)


def _timeout_reason(run: TransRun) -> str:
    return f"Timeout after {run.timeout_seconds()} seconds"


async def _forward(run: TransRun, plan: SagaPlan) -> None:
    pool = CallPool(run.call)
    failure: str | None = None
    retry: tuple[TransBranch, CallResult] | None = None
    retried = 0
    try:
        while True:
            if failure is None and retry is None and not run.timed_out():
                for i, step in enumerate(plan.steps):
                    action = step.action
                    if (
                        action.status == consts.PREPARED
                        and not pool.was_started(action)
                        and plan.may_run(i)
                    ):
                        pool.start(action)
            if not pool.busy:
                break
            async for action, result in pool.finished():
                if result.outcome is Outcome.SUCCESS:
                    done = all(
                        s.action is action or s.action.status == consts.SUCCEED for s in plan.steps
                    )
                    await run.record_success(action, finished=consts.SUCCEED if done else None)
                elif result.outcome is Outcome.FAILURE:
                    await run.save(branches=[(action, consts.FAILED)], reschedule=True)
                    failure = failure or f"url:{action.url} return failed: {result.detail}"
                elif run.options.retry_limit > 0 and retried < run.options.retry_limit:
                    retried += 1  # upstream retries at once, up to retry_limit times
                    pool.start(action)
                elif run.options.retry_limit > 0:
                    failure = failure or (
                        "RetryCount is greater than RetryLimit, "
                        f"RetryLimit: {run.options.retry_limit}"
                    )
                else:
                    retry = retry or (action, result)
    finally:
        await pool.cancel()
    if run.status != consts.SUBMITTED:
        return
    if failure is None and all(s.action.status == consts.SUCCEED for s in plan.steps):
        await run.save(status=consts.SUCCEED)  # no steps, or finished by an older pass
        return
    if failure is None and any(s.action.status == consts.FAILED for s in plan.steps):
        failure = "a branch failed before this pass"  # saved, then the server stopped
    if failure is not None:
        await run.save(status=consts.ABORTING, rollback_reason=failure)
    elif run.timed_out():
        await run.save(status=consts.ABORTING, rollback_reason=_timeout_reason(run))
    elif retry is not None:
        await run.retry_later(retry[1], retry[0].url)


async def _backward(run: TransRun, plan: SagaPlan) -> None:
    # An action that may have run must be compensated: one that answered, or one whose
    # predecessors had all succeeded (its call may have been lost with a crash). The
    # barrier on the business side turns a compensation of nothing into a no-op.
    needed = {
        i
        for i, s in enumerate(plan.steps)
        if s.compensate.status != consts.SUCCEED
        and (s.action.status != consts.PREPARED or plan.may_run(i))
    }

    def settled(i: int) -> bool:
        return i not in needed or plan.steps[i].compensate.status == consts.SUCCEED

    def may_compensate(i: int) -> bool:
        later = range(i + 1, len(plan.steps)) if not plan.concurrent else ()
        return all(settled(j) for j in later) and all(
            settled(k) for k in plan.successors.get(i, ())
        )

    if not needed:
        await run.save(status=consts.FAILED)
        return
    pool = CallPool(run.call)
    retry: tuple[TransBranch, CallResult] | None = None
    try:
        while True:
            if retry is None:
                for i in sorted(needed, reverse=True):
                    comp = plan.steps[i].compensate
                    if (
                        comp.status == consts.PREPARED
                        and not pool.was_started(comp)
                        and may_compensate(i)
                    ):
                        pool.start(comp)
            if not pool.busy:
                break
            async for comp, result in pool.finished():
                if result.outcome is Outcome.SUCCESS:
                    done = all(settled(i) or plan.steps[i].compensate is comp for i in needed)
                    await run.record_success(comp, finished=consts.FAILED if done else None)
                else:  # a compensation must succeed in the end: retry whatever it said
                    retry = retry or (comp, CallResult(Outcome.ERROR, result.detail))
    finally:
        await pool.cancel()
    if run.status == consts.ABORTING and retry is not None:
        await run.retry_later(retry[1], retry[0].url)
