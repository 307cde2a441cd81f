"""Run branch calls with bounded concurrency while their results are saved one at a time.

Saga and message passes start calls as their predecessors finish; saving each result
before acting on it is what makes a pass safe to stop at any point.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from dtm.protocol.records import TransBranch
from dtm.server.calls import CallResult


class CallPool:
    """Branch calls in flight, keyed by the branch; results come back as they finish."""

    def __init__(self, call: Callable[[TransBranch], Awaitable[CallResult]]) -> None:
        self._call = call
        self._running: dict[asyncio.Task[CallResult], TransBranch] = {}
        self.started: set[int] = set()

    def start(self, branch: TransBranch) -> None:
        self.started.add(id(branch))
        task = asyncio.ensure_future(self._call(branch))
        self._running[task] = branch

    def was_started(self, branch: TransBranch) -> bool:
        return id(branch) in self.started

    @property
    def busy(self) -> bool:
        return bool(self._running)

    async def finished(self) -> AsyncIterator[tuple[TransBranch, CallResult]]:
        """Results of the calls that finish next (at least one)."""
        done, _ = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            branch = self._running.pop(task)
            yield branch, task.result()

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
