"""One processing pass over one transaction, shared by every mode's state machine.

A pass holds the transaction under an owner token. Every write it makes is guarded by the
status it last saw and by that token, so once anyone else changes the transaction (a
`forceStop`, an `abort`, another instance that took over an expired lease) the next write
of this pass finds its guard false, `Stale` is raised and the pass stops at once: it never
calls another branch on the strength of a result it could not save.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from dtm.protocol import consts
from dtm.protocol.messages import TransOptions, decode_options
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.branch import BranchCaller
from dtm.server.calls import BranchCall, CallResult, Outcome
from dtm.server.engine.schedule import Schedule
from dtm.server.stores.base import BranchUpdate, Progress, Store

log = logging.getLogger(__name__)

Alert = Callable[[dict[str, object]], Awaitable[None]]


class Stale(Exception):
    """The transaction changed under this pass (status or owner); the pass must stop."""


@dataclass(frozen=True, slots=True)
class EngineContext:
    """What every pass needs from the running server."""

    store: Store
    caller: BranchCaller
    schedule: Schedule
    timeout_to_fail: int
    alert_retry_limit: int
    alert: Alert | None = None
    # UpdateBranchSync 0: a branch's success rides on the transaction's next write instead
    # of a write of its own (fewer writes; after a crash, such branches are called again).
    defer_branch_saves: bool = False


class TransRun:
    """State of one pass: the transaction as last written, its branches, its owner."""

    def __init__(
        self, ctx: EngineContext, trans: TransGlobal, branches: list[TransBranch], owner: str
    ) -> None:
        self.ctx = ctx
        self.trans = trans
        self.branches = branches
        self.owner = owner
        self.options: TransOptions = decode_options(trans.options)
        # Successes of branches that were never called (empty URL), written with the next
        # write: repeating a call that does nothing is free, so they need no write of their own.
        self._unsaved: list[tuple[TransBranch, str]] = []

    @property
    def gid(self) -> str:
        return self.trans.gid

    @property
    def status(self) -> str:
        return self.trans.status

    def timeout_seconds(self) -> int:
        """Saga never times out unless asked to; other modes use the server default."""
        if self.options.timeout_to_fail > 0:
            return self.options.timeout_to_fail
        return 0 if self.trans.trans_type == consts.SAGA else self.ctx.timeout_to_fail

    def timed_out(self) -> bool:
        timeout = self.timeout_seconds()
        if timeout <= 0 or self.trans.create_time is None:
            return False
        age = datetime.now(UTC) - self.trans.create_time
        return age.total_seconds() >= timeout

    def age(self) -> float:
        if self.trans.create_time is None:
            return 0.0
        return (datetime.now(UTC) - self.trans.create_time).total_seconds()

    # --- calls ------------------------------------------------------------------------

    async def call(self, branch: TransBranch) -> CallResult:
        return await self.call_url(branch.url, branch.branch_id, branch.op, branch.bin_data)

    async def call_url(self, url: str, branch_id: str, op: str, payload: bytes) -> CallResult:
        started = time.monotonic()
        result = await self.ctx.caller.call(
            BranchCall(
                url=url,
                gid=self.gid,
                trans_type=self.trans.trans_type,
                branch_id=branch_id,
                op=op,
                payload=payload,
                headers=self.options.branch_headers,
                timeout=self.ctx.schedule.request_timeout_of(self.options, branch_id),
                protocol=self.trans.protocol,
            )
        )
        log.debug(
            "branch called",
            extra={
                "gid": self.gid,
                "branch_id": branch_id,
                "op": op,
                "outcome": result.outcome.value,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return result

    # --- writes -----------------------------------------------------------------------

    async def save(
        self,
        *,
        branches: Iterable[tuple[TransBranch, str]] = (),
        status: str | None = None,
        rollback_reason: str | None = None,
        result: str | None = None,
        reschedule: bool = False,
    ) -> None:
        """Write branch results and/or a new status in one guarded write.

        `reschedule` resets the retry interval and extends the lease: progress was made.
        """
        pairs = list(branches)
        interval: int | None = None
        delay: float | None = None
        if reschedule and (status is None or status in consts.UNFINISHED):
            interval = self.ctx.schedule.base_interval(self.options)
            delay = self.ctx.schedule.lease(self.options)
        progress = Progress(
            branches=[BranchUpdate(b.branch_id, b.op, st) for b, st in pairs],
            status=status,
            rollback_reason=rollback_reason,
            result=result,
            next_cron_interval=interval,
            next_cron_delay=delay,
        )
        await self._write(progress)
        for b, st in pairs:
            b.status = st
        if status is not None:
            self.trans.status = status
        if rollback_reason is not None:
            self.trans.rollback_reason = rollback_reason
        if interval is not None:
            self.trans.next_cron_interval = interval

    async def record_success(self, branch: TransBranch, *, finished: str | None) -> None:
        """Save that `branch` succeeded and, when it was the last one, the final status
        `finished` in the same write."""
        if finished is None and (not branch.url or self.ctx.defer_branch_saves):
            branch.status = consts.SUCCEED
            self._unsaved.append((branch, consts.SUCCEED))
            return
        await self.save(
            branches=[(branch, consts.SUCCEED)], status=finished, reschedule=finished is None
        )

    async def retry_later(self, result: CallResult, what: str) -> None:
        """Schedule the next pass after a branch answered ongoing or an error.

        Ongoing keeps the interval (the branch asked to be asked again); an error doubles
        it. After `AlertRetryLimit` doublings the alert webhook hears of it.
        """
        schedule = self.ctx.schedule
        base = schedule.base_interval(self.options)
        current = self.trans.next_cron_interval or base
        if result.outcome is Outcome.ONGOING:
            interval = current
        else:
            interval = schedule.backoff(current, self.options)
            log.warning(
                "branch error, retry in %ss: %s",
                interval,
                result.detail,
                extra={"gid": self.gid, "branch": what},
            )
        await self._write(
            Progress(next_cron_interval=interval, next_cron_delay=schedule.delay(interval))
        )
        self.trans.next_cron_interval = interval
        retries = int(math.log2(max(interval // max(base, 1), 1)))
        alert = self.ctx.alert
        if result.outcome is Outcome.ERROR and alert and retries >= self.ctx.alert_retry_limit:
            await alert(
                {
                    "gid": self.gid,
                    "status": self.status,
                    "branch": what,
                    "error": result.detail,
                    "retry_count": retries,
                }
            )

    async def reschedule_at(self, when: datetime) -> None:
        """Look at the transaction again at `when` (a delayed message)."""
        delay = max((when - datetime.now(UTC)).total_seconds(), 0.0)
        await self._write(Progress(next_cron_delay=delay))

    async def _write(self, progress: Progress) -> None:
        if self._unsaved:
            unsaved = [BranchUpdate(b.branch_id, b.op, st) for b, st in self._unsaved]
            progress = dataclasses.replace(progress, branches=[*unsaved, *progress.branches])
        ok = await self.ctx.store.save_progress(
            self.gid, progress, expect_status=self.status, owner=self.owner
        )
        self._unsaved.clear()
        if not ok:
            log.info("transaction changed under this pass; stopping", extra={"gid": self.gid})
            raise Stale(self.gid)
