"""What a workflow function sees: `Workflow`, its `Branch`es, and the phase-2 context.

Every branch operation goes through `_Recorder`: a result the server has recorded is
replayed, anything else is run and its result recorded before the workflow goes on. Branch
ids come from a counter ("01", "02", ...), so a deterministic function meets the same ids,
and so the same recorded results, each time it runs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from dtm.client._core import BranchIdGen, HttpResponse, Response
from dtm.client._transport import AsyncTransport
from dtm.errors import FailureError
from dtm.protocol import consts
from dtm.workflow import _protocol
from dtm.workflow._interceptors import CallInfo, Interceptor, chain
from dtm.xa._runner import XaConnect, XaLocalFn, XaRunner

# The op `do_xa` records inside its XA transaction, before the prepare (upstream's name).
_OP_XA_BUSINESS = "business"


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """Where an operation runs: enough to build a sub-transaction barrier from."""

    gid: str
    branch_id: str
    op: str
    trans_type: str = consts.WORKFLOW


class Phase2:
    """Given to an `on_commit` / `on_rollback` callable declared `async def`."""

    def __init__(self, recorder: _Recorder, info: BranchInfo) -> None:
        self._recorder = recorder
        self.info = info

    async def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Call a business URL with this phase's op (`commit` / `rollback`); not recorded
        on its own: the phase-2 callable as a whole is. Raises as `dtm.client` does."""
        return await self._recorder.send(self.info, method, url, payload, headers)


class SyncPhase2:
    """Given to an `on_commit` / `on_rollback` callable declared with plain `def` (it runs
    in a worker thread; `call` blocks it)."""

    def __init__(self, phase2: Phase2, loop: asyncio.AbstractEventLoop) -> None:
        self._phase2 = phase2
        self._loop = loop
        self.info = phase2.info

    def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        coro = self._phase2.call(url, payload, method=method, headers=headers)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


_AsyncPhase2Fn: TypeAlias = Callable[[Phase2], Awaitable[object]]
_SyncPhase2Fn: TypeAlias = Callable[[SyncPhase2], object]
Phase2Fn: TypeAlias = _AsyncPhase2Fn | _SyncPhase2Fn
"""A commit or rollback callable: `async def f(p: Phase2)` or `def f(p: SyncPhase2)`; it
must not raise `FailureError` (phase 2 is retried until it succeeds)."""

_AsyncLocalFn: TypeAlias = Callable[[BranchInfo], Awaitable[bytes | str | None]]
_SyncLocalFn: TypeAlias = Callable[[BranchInfo], bytes | str | None]
LocalFn: TypeAlias = _AsyncLocalFn | _SyncLocalFn
"""A local step: sync (run in a worker thread) or async; its return value is recorded."""


def is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"a workflow step returns bytes, str or None, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Recorded:
    status: str
    data: bytes


class _Recorder:
    """One run of one workflow: the recorded progress, the phase-2 lists, the I/O."""

    def __init__(
        self,
        transport: AsyncTransport,
        *,
        dtm: str,
        workflow: str,
        gid: str,
        progresses: list[_protocol.Progress],
        headers: Mapping[str, str],
        interceptors: Sequence[Interceptor],
        compensate_failed_branch: bool,
    ) -> None:
        self.transport = transport
        self.dtm = dtm
        self.workflow = workflow
        self.gid = gid
        self.headers = dict(headers)
        self.interceptors = tuple(interceptors)
        self.compensate_failed_branch = compensate_failed_branch
        self.progress = {(p.branch_id, p.op): _Recorded(p.status, p.bin_data) for p in progresses}
        self.commits: list[tuple[str, Phase2Fn]] = []
        self.rollbacks: list[tuple[str, Phase2Fn]] = []

    async def call_branch(
        self,
        info: BranchInfo,
        method: str,
        url: str,
        payload: Any,
        headers: Mapping[str, str] | None,
    ) -> Response:
        """Make a branch call through the interceptors; the one way a workflow calls a
        business URL, so none escapes them. The answer is returned unread."""
        request = _protocol.branch_request(
            self.dtm,
            method,
            url,
            payload,
            gid=self.gid,
            branch_id=info.branch_id,
            op=info.op,
            headers={**self.headers, **(headers or {})},
        )
        call = CallInfo(self.workflow, self.gid, info.branch_id, info.op)
        return await chain(self.interceptors, call, self.transport.answer)(request)

    async def send(
        self,
        info: BranchInfo,
        method: str,
        url: str,
        payload: Any,
        headers: Mapping[str, str] | None,
    ) -> HttpResponse:
        response = await self.call_branch(info, method, url, payload, headers)
        return _protocol.read_answer(response, f"{info.op} {url} of branch {info.branch_id}")

    async def record(self, info: BranchInfo, status: str, data: bytes) -> None:
        await self.transport.run(
            _protocol.register(
                self.dtm, self.gid, info.branch_id, op=info.op, status=status, data=data
            )
        )
        self.progress[info.branch_id, info.op] = _Recorded(status, data)

    async def recorded_do(self, info: BranchInfo, step: Callable[[], Awaitable[bytes]]) -> bytes:
        """Replay the recorded result of `info`, or run `step` and record its result.

        A `FailureError` is a result (recorded as failed, its message as data); any other
        error is not: nothing is recorded and the step runs again when the workflow resumes.
        """
        found = self.progress.get((info.branch_id, info.op))
        if found is None:
            try:
                data = await step()
            except FailureError as exc:
                await self.record(info, consts.FAILED, str(exc).encode())
                self._forget_rollback(info)
                raise
            await self.record(info, consts.SUCCEED, data)
            return data
        if found.status == consts.FAILED:
            self._forget_rollback(info)
            raise FailureError(found.data.decode(errors="replace"))
        return found.data

    def _forget_rollback(self, info: BranchInfo) -> None:
        # As upstream's default: a branch whose action failed did nothing to compensate.
        if self.compensate_failed_branch or info.op != consts.OP_ACTION:
            return
        if self.rollbacks and self.rollbacks[-1][0] == info.branch_id:
            self.rollbacks.pop()

    async def phase2(self, op: str) -> None:
        """Run the commit or rollback callables, last registered first, each recorded."""
        items = self.commits if op == consts.OP_COMMIT else self.rollbacks
        loop = asyncio.get_running_loop()
        for branch_id, fn in reversed(items):
            info = BranchInfo(self.gid, branch_id, op)

            async def run(fn: Phase2Fn = fn, info: BranchInfo = info) -> bytes:
                context = Phase2(self, info)
                try:
                    if is_async(fn):
                        await cast(_AsyncPhase2Fn, fn)(context)
                    else:
                        sync_fn = cast(_SyncPhase2Fn, fn)
                        await asyncio.to_thread(sync_fn, SyncPhase2(context, loop))
                except FailureError as exc:
                    raise RuntimeError(
                        f"{op} of branch {info.branch_id} raised FailureError: phase 2 must "
                        "succeed eventually; it is retried when the workflow resumes"
                    ) from exc
                return b""

            await self.recorded_do(info, run)


class Branch:
    """One branch of a workflow: at most one action (`call` or `do`), at most one
    `on_commit` and one `on_rollback`."""

    def __init__(self, recorder: _Recorder, branch_id: str) -> None:
        self._recorder = recorder
        self.branch_id = branch_id
        self.acted = False
        self._committing = False
        self._rolling_back = False

    def on_rollback(self, fn: Phase2Fn) -> Branch:
        """Run `fn` if the workflow fails: a saga's compensation, a TCC's cancel."""
        if self._rolling_back:
            raise RuntimeError(f"branch {self.branch_id} already has an on_rollback")
        self._rolling_back = True
        self._recorder.rollbacks.append((self.branch_id, fn))
        return self

    def on_commit(self, fn: Phase2Fn) -> Branch:
        """Run `fn` once the workflow function returned: a TCC's confirm."""
        if self._committing:
            raise RuntimeError(f"branch {self.branch_id} already has an on_commit")
        self._committing = True
        self._recorder.commits.append((self.branch_id, fn))
        return self

    def _action(self) -> BranchInfo:
        if self.acted:
            raise RuntimeError(f"branch {self.branch_id} already has its action")
        self.acted = True
        return BranchInfo(self._recorder.gid, self.branch_id, consts.OP_ACTION)

    async def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """Call a business URL as this branch's action, or replay its recorded answer.

        200 is recorded as succeeded (the body as data); 409 or `dtm_result: FAILURE` as
        failed, raising `FailureError`; 425 (`OngoingError`) and other answers
        (`TransportError`) are not recorded: the call is made again on resume. In a gRPC
        workflow `url` is a gRPC method and `payload` a protobuf message or bytes: OK is
        recorded with the reply's bytes, ABORTED as failed, other codes not recorded.
        """
        info = self._action()
        recorder = self._recorder

        async def step() -> bytes:
            response = await recorder.call_branch(info, method, url, payload, headers)
            try:
                answer = _protocol.read_answer(response, f"action {url} of branch {info.branch_id}")
            except FailureError as exc:
                raise FailureError(_protocol.answer_text(response)) from exc
            return answer.body

        return HttpResponse(200, await recorder.recorded_do(info, step))

    async def do(self, fn: LocalFn) -> bytes:
        """Run a local step as this branch's action (sync functions in a worker thread),
        or replay its recorded result. It gets the `BranchInfo`; raising `FailureError`
        records a failure, any other error leaves the step to run again on resume."""
        info = self._action()

        async def step() -> bytes:
            if is_async(fn):
                return as_bytes(await cast(_AsyncLocalFn, fn)(info))
            return as_bytes(await asyncio.to_thread(cast(_SyncLocalFn, fn), info))

        return await self._recorder.recorded_do(info, step)

    async def do_xa(
        self, connect: XaConnect, fn: XaLocalFn, *, dialect: str | None = None
    ) -> bytes:
        """Run `fn(conn)` as this branch's action in an XA transaction (`dtm.xa`) on a new
        connection from `connect`, and leave it prepared: it is committed once the workflow
        function returned, rolled back if it fails (each on a new connection). Upstream's
        DoXa; its result is recorded as `do`'s is.

        A run that died once the transaction may have been prepared but before its result
        was recorded cannot redo it (the xid may be taken): the resumed run gets
        `FailureError` and the transaction is rolled back.
        """
        if self._committing or self._rolling_back:
            raise RuntimeError(f"branch {self.branch_id}: do_xa brings its own phase 2")
        info = self._action()
        recorder = self._recorder
        runner = XaRunner(connect, dialect=dialect)
        business = BranchInfo(info.gid, info.branch_id, _OP_XA_BUSINESS)

        async def step() -> bytes:
            if (info.branch_id, _OP_XA_BUSINESS) in recorder.progress:
                raise FailureError(
                    f"the XA step of branch {info.branch_id} may have been prepared by an "
                    "earlier run: not resumable, rolled back"
                )
            return as_bytes(await runner.local(info.gid, info.branch_id, fn, mark))

        async def mark() -> None:
            await recorder.record(business, consts.SUCCEED, b"")

        async def commit(_: Phase2) -> None:
            await runner.phase2(info.gid, info.branch_id, consts.OP_COMMIT)

        async def rollback(_: Phase2) -> None:
            await runner.phase2(info.gid, info.branch_id, consts.OP_ROLLBACK)

        try:
            data = await recorder.recorded_do(info, step)
        except BaseException:
            # The xid may be prepared all the same (the resumed case): roll it back however
            # the workflow ends; for an xid the database does not know that is a no-op.
            self.on_commit(rollback).on_rollback(rollback)
            raise
        self.on_commit(commit).on_rollback(rollback)
        return data


class Workflow:
    """The context of one run of a workflow function (`async def f(wf, data)`).

    The branch methods act on the *open* branch, the one whose action is still to come,
    opening a new one when there is none: so `wf.on_rollback(undo)` then
    `await wf.call(url)` is one branch with its compensation, as upstream's
    `wf.NewBranch().OnRollback(...)` followed by a request.
    """

    def __init__(self, recorder: _Recorder, *, name: str, data: bytes) -> None:
        self._recorder = recorder
        self._ids = BranchIdGen()
        self._open: Branch | None = None
        self.name = name
        self.gid = recorder.gid
        self.data = data

    def branch(self) -> Branch:
        """Start a new branch (ids "01", "02", ...) and make it the open one."""
        self._open = Branch(self._recorder, self._ids.next())
        return self._open

    def _current(self) -> Branch:
        if self._open is None or self._open.acted:
            return self.branch()
        return self._open

    def on_rollback(self, fn: Phase2Fn) -> Workflow:
        """`on_rollback` of the open branch."""
        self._current().on_rollback(fn)
        return self

    def on_commit(self, fn: Phase2Fn) -> Workflow:
        """`on_commit` of the open branch."""
        self._current().on_commit(fn)
        return self

    async def call(
        self,
        url: str,
        payload: Any = None,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        on_rollback: Phase2Fn | None = None,
        on_commit: Phase2Fn | None = None,
    ) -> HttpResponse:
        """`Branch.call` in the open branch, with its phase-2 callables if given."""
        branch = self._with_phase2(on_rollback, on_commit)
        return await branch.call(url, payload, method=method, headers=headers)

    async def do(
        self,
        fn: LocalFn,
        *,
        on_rollback: Phase2Fn | None = None,
        on_commit: Phase2Fn | None = None,
    ) -> bytes:
        """`Branch.do` in the open branch, with its phase-2 callables if given."""
        return await self._with_phase2(on_rollback, on_commit).do(fn)

    async def do_xa(
        self, connect: XaConnect, fn: XaLocalFn, *, dialect: str | None = None
    ) -> bytes:
        """`Branch.do_xa` in the open branch (which must have no phase-2 callables)."""
        return await self._current().do_xa(connect, fn, dialect=dialect)

    def _with_phase2(self, on_rollback: Phase2Fn | None, on_commit: Phase2Fn | None) -> Branch:
        branch = self._current()
        if on_rollback is not None:
            branch.on_rollback(on_rollback)
        if on_commit is not None:
            branch.on_commit(on_commit)
        return branch
