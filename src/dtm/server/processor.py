"""Runs processing passes and the recovery loop that finds transactions left unfinished.

Passes for one gid never overlap within a process: a new one waits for the one running.
Across processes the store's owner lease decides (see engine/run.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable

from dtm.protocol import consts
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.engine import msg, phase2, saga, workflow
from dtm.server.engine.run import EngineContext, Stale, TransRun
from dtm.server.stores.base import StoreUnavailable

log = logging.getLogger(__name__)

Pass = Callable[[TransRun], Awaitable[None]]

PASSES: dict[str, Pass] = {
    consts.SAGA: saga.process,
    consts.MSG: msg.process,
    consts.TCC: phase2.process,
    consts.XA: phase2.process,
    consts.WORKFLOW: workflow.process,
}


class Processor:
    """Owner of every running pass and of the recovery loop."""

    def __init__(
        self,
        ctx: EngineContext,
        *,
        cron_interval: float,
        lock_lease: float,
        max_concurrent_recoveries: int = 64,
    ) -> None:
        self.ctx = ctx
        self.cron_interval = cron_interval
        self.lock_lease = lock_lease
        self.active: dict[str, asyncio.Task[TransGlobal]] = {}
        self._instance = f"{socket.gethostname()[:40]}-{os.getpid()}-{random.getrandbits(32):08x}"
        self._tokens = itertools.count(1)
        self._max_recoveries = max_concurrent_recoveries
        self._recovering = 0
        self._cron: asyncio.Task[None] | None = None

    def new_owner(self) -> str:
        """A token unique to one pass: a takeover by any other pass is then detectable."""
        return f"{self._instance}-{next(self._tokens)}"

    def start(
        self, trans: TransGlobal, branches: list[TransBranch], owner: str
    ) -> asyncio.Task[TransGlobal]:
        previous = self.active.get(trans.gid)
        task = asyncio.ensure_future(self._run(trans, branches, owner, previous))
        self.active[trans.gid] = task
        task.add_done_callback(lambda t: self._forget(trans.gid, t))
        return task

    def _forget(self, gid: str, task: asyncio.Task[TransGlobal]) -> None:
        if self.active.get(gid) is task:
            del self.active[gid]

    async def _run(
        self,
        trans: TransGlobal,
        branches: list[TransBranch],
        owner: str,
        previous: asyncio.Task[TransGlobal] | None,
    ) -> TransGlobal:
        if previous is not None:
            await asyncio.wait([previous])
        run = TransRun(self.ctx, trans, branches, owner)
        try:
            await PASSES[trans.trans_type](run)
        except Stale:
            pass
        except StoreUnavailable as exc:
            # Nothing unsaved was acted on; the lease expires and a later pass resumes.
            log.error("store unavailable during a pass: %s", exc, extra={"gid": trans.gid})
        except Exception:
            log.exception("pass failed", extra={"gid": trans.gid})
        return run.trans

    # --- recovery loop ------------------------------------------------------------------

    def start_cron(self) -> None:
        self._cron = asyncio.ensure_future(self._cron_loop())

    async def stop(self) -> None:
        if self._cron is not None:
            self._cron.cancel()
            await asyncio.gather(self._cron, return_exceptions=True)
            self._cron = None
        running = list(self.active.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _cron_loop(self) -> None:
        while True:
            try:
                taken = await self.recover_once()
            except StoreUnavailable as exc:
                log.error("recovery loop: store unavailable: %s", exc)
                taken = 0
            except Exception:
                log.exception("recovery loop failed")
                taken = 0
            if taken == 0:
                # Upstream's spread: instances sharing a store do not poll in step.
                await asyncio.sleep(self.cron_interval * (1 - random.random() * 0.2))

    async def recover_once(self, limit: int = 16) -> int:
        """Take due transactions and start a pass for each; returns how many were taken."""
        free = self._max_recoveries - self._recovering
        if free <= 0:
            return 0
        owner = self.new_owner()
        due = await self.ctx.store.lock_due(
            owner=owner, lease=self.lock_lease, limit=min(limit, free)
        )
        for trans in due:
            self._recovering += 1
            task = asyncio.ensure_future(self._recover(trans.gid, owner))
            task.add_done_callback(self._recovered)
        return len(due)

    def _recovered(self, _task: asyncio.Task[None]) -> None:
        self._recovering -= 1

    async def _recover(self, gid: str, owner: str) -> None:
        try:
            trans, branches = await self.ctx.store.load(gid)
        except StoreUnavailable as exc:
            # The lease runs out and a later look takes the transaction again.
            log.error("store unavailable resuming a transaction: %s", exc, extra={"gid": gid})
            return
        if trans is None or trans.owner != owner:
            return  # finished or taken over between the lock and this read
        log.info("resuming unfinished transaction", extra={"gid": gid, "status": trans.status})
        await self.start(trans, branches, owner)
