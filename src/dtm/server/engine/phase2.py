"""TCC and XA: branches registered while prepared; on submit every branch's second phase
(confirm / commit) is called, on abort or timeout every branch's rollback (cancel /
rollback). Phase-two calls must succeed in the end, so every other answer is retried.
"""

from __future__ import annotations

from dtm.protocol import consts
from dtm.server.calls import Outcome
from dtm.server.engine.run import TransRun


def _reason(run: TransRun) -> str:
    return f"Timeout after {run.timeout_seconds()} seconds"


async def process(run: TransRun) -> None:
    if run.status == consts.PREPARED:
        if not run.timed_out():
            return
        await run.save(status=consts.ABORTING, rollback_reason=_reason(run))
    if run.status not in (consts.SUBMITTED, consts.ABORTING):
        return
    tcc = run.trans.trans_type == consts.TCC
    forward = run.status == consts.SUBMITTED
    if tcc:
        op = consts.OP_CONFIRM if forward else consts.OP_CANCEL
    else:
        op = consts.OP_COMMIT if forward else consts.OP_ROLLBACK
    todo = [b for b in run.branches if b.op == op and b.status != consts.SUCCEED]
    if tcc:
        todo.reverse()  # TCC undoes and confirms the last registered branch first, as upstream
    final = consts.SUCCEED if forward else consts.FAILED
    for i, branch in enumerate(todo):
        result = await run.call(branch)
        if result.outcome is not Outcome.SUCCESS:
            await run.retry_later(result, branch.url)
            return
        await run.record_success(branch, finished=final if i == len(todo) - 1 else None)
    if not todo:
        await run.save(status=final)
