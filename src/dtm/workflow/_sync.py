"""The blocking view of a workflow, for functions registered with plain `def`.

Such a function runs in a worker thread; each method hands its coroutine to the event loop
that runs the workflow and waits for it, so sync and async functions share one engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from dtm.client._core import HttpResponse
from dtm.workflow._context import Branch, LocalFn, Phase2Fn, Workflow
from dtm.xa._runner import XaConnect, XaLocalFn

T = TypeVar("T")


def _wait(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


class SyncBranch:
    """`Branch` with blocking `call` and `do`."""

    def __init__(self, branch: Branch, loop: asyncio.AbstractEventLoop) -> None:
        self._branch = branch
        self._loop = loop
        self.branch_id = branch.branch_id

    def on_rollback(self, fn: Phase2Fn) -> SyncBranch:
        self._branch.on_rollback(fn)
        return self

    def on_commit(self, fn: Phase2Fn) -> SyncBranch:
        self._branch.on_commit(fn)
        return self

    def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        return _wait(self._loop, self._branch.call(url, payload, method=method, headers=headers))

    def do(self, fn: LocalFn) -> bytes:
        return _wait(self._loop, self._branch.do(fn))

    def do_xa(self, connect: XaConnect, fn: XaLocalFn, *, dialect: str | None = None) -> bytes:
        return _wait(self._loop, self._branch.do_xa(connect, fn, dialect=dialect))


class SyncWorkflow:
    """`Workflow` for a function declared `def f(wf: SyncWorkflow, data: bytes)`."""

    def __init__(self, workflow: Workflow, loop: asyncio.AbstractEventLoop) -> None:
        self._wf = workflow
        self._loop = loop
        self.name = workflow.name
        self.gid = workflow.gid
        self.data = workflow.data

    def branch(self) -> SyncBranch:
        return SyncBranch(self._wf.branch(), self._loop)

    def on_rollback(self, fn: Phase2Fn) -> SyncWorkflow:
        self._wf.on_rollback(fn)
        return self

    def on_commit(self, fn: Phase2Fn) -> SyncWorkflow:
        self._wf.on_commit(fn)
        return self

    def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        on_rollback: Phase2Fn | None = None,
        on_commit: Phase2Fn | None = None,
    ) -> HttpResponse:
        coro = self._wf.call(
            url,
            payload,
            method=method,
            headers=headers,
            on_rollback=on_rollback,
            on_commit=on_commit,
        )
        return _wait(self._loop, coro)

    def do(
        self,
        fn: LocalFn,
        *,
        on_rollback: Phase2Fn | None = None,
        on_commit: Phase2Fn | None = None,
    ) -> bytes:
        return _wait(self._loop, self._wf.do(fn, on_rollback=on_rollback, on_commit=on_commit))

    def do_xa(self, connect: XaConnect, fn: XaLocalFn, *, dialect: str | None = None) -> bytes:
        return _wait(self._loop, self._wf.do_xa(connect, fn, dialect=dialect))
