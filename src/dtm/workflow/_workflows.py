"""`Workflows`: the app's registry of workflow functions and the engine that runs them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeAlias, cast, overload

import msgspec

from dtm.client._core import Trans, is_grpc, options_of
from dtm.client._settings import ClientSettings
from dtm.client._transport import AsyncTransport
from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import parse_url, read_metadata
from dtm.workflow import _protocol
from dtm.workflow._context import Workflow, _Recorder, as_bytes, is_async
from dtm.workflow._interceptors import Interceptor
from dtm.workflow._sync import SyncWorkflow

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

AsyncWorkflowFn: TypeAlias = Callable[[Workflow, bytes], Awaitable[bytes | str | None]]
SyncWorkflowFn: TypeAlias = Callable[[SyncWorkflow, bytes], bytes | str | None]
WorkflowFn: TypeAlias = AsyncWorkflowFn | SyncWorkflowFn
"""`async def f(wf: Workflow, data: bytes)` or `def f(wf: SyncWorkflow, data: bytes)`,
returning the workflow's result (bytes, str or None)."""


class Workflows:
    """Workflow functions by name, run against the DTM server at `dtm_url`: its HTTP API
    (`http://host:36789/api/dtmsvr`) or its gRPC API (`host:36790`), in which case the
    workflow's branches are gRPC methods and its results may be any bytes.

    callback_url: the app's endpoint the server calls when a workflow was left unfinished
        (its process died, or a branch answered neither success nor failure). HTTP: it
        receives `?gid=...&op=<name>` and the workflow's data as body and should call
        `handle_callback` (or `handle_callback_request`). gRPC: the app's
        `host:port/workflow.Workflow/Execute`, served by `grpc_handler()`.
    timeout, headers: of every request (to the server and to the branches).
    retry_interval, timeout_to_fail, request_timeout: upstream's options, whole seconds;
        retry_interval is the first delay before the server calls back.
    branch_headers: sent on every branch call.
    interceptors: async functions wrapped around every branch call (actions and phase-2
        calls, not the calls to the server), the first one outermost: see `Interceptor`.
        They belong to this `Workflows` alone. A result replayed on resume was recorded
        from what they returned, and they are not called again for it.
    compensate_failed_branch: also run the on_rollback of a branch whose own action
        failed (upstream's CompensateErrorBranch).

    Owns an aiohttp session: `async with Workflows(...)` or `await aclose()`.
    """

    def __init__(
        self,
        dtm_url: str,
        *,
        callback_url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        retry_interval: int = 0,
        timeout_to_fail: int = 0,
        request_timeout: int = 0,
        branch_headers: Mapping[str, str] | None = None,
        interceptors: Sequence[Interceptor] = (),
        compensate_failed_branch: bool = False,
    ) -> None:
        self.settings = ClientSettings.of(dtm_url, timeout=timeout, headers=headers)
        if is_grpc(self.settings.dtm_url):
            parse_url(callback_url)  # ValueError unless host:port/package.Service/Method
        elif not callback_url.startswith(("http://", "https://")):
            raise ValueError(f"callback_url should be an http(s) URL, not {callback_url!r}")
        self.callback_url = callback_url
        self.options = options_of(
            retry_interval=retry_interval,
            timeout_to_fail=timeout_to_fail,
            request_timeout=request_timeout,
            branch_headers=branch_headers,
        )
        self.compensate_failed_branch = compensate_failed_branch
        self.interceptors = tuple(interceptors)
        self._transport = AsyncTransport(timeout=timeout, headers=self.settings.headers)
        self._functions: dict[str, WorkflowFn] = {}
        # Gids running in this process: a call-back arriving meanwhile is told to come
        # again later rather than running the same branches concurrently.
        self._running: set[str] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.close()

    @overload
    def register(self, name: str) -> Callable[[WorkflowFn], WorkflowFn]: ...
    @overload
    def register(self, name: str, fn: WorkflowFn) -> WorkflowFn: ...
    def register(
        self, name: str, fn: WorkflowFn | None = None
    ) -> WorkflowFn | Callable[[WorkflowFn], WorkflowFn]:
        """Register `fn` as workflow `name`; without `fn`, a decorator."""
        if fn is None:
            return lambda f: self.register(name, f)
        if not name:
            raise ValueError("a workflow needs a name")
        if name in self._functions:
            raise ValueError(f"a workflow named {name!r} is already registered")
        self._functions[name] = fn
        return fn

    async def execute(self, name: str, gid: str, data: bytes = b"") -> bytes:
        """Run workflow `name` as transaction `gid` (new, or resumed with its recorded
        results replayed) and return its result.

        Raises `FailureError` when the workflow failed (its rollbacks done, the failure
        submitted). Any other error leaves the workflow prepared on the server, which calls
        it back later to resume it.
        """
        fn = self._functions.get(name)
        if fn is None:
            raise LookupError(f"no workflow named {name!r} is registered")
        if not gid:
            raise ValueError("a workflow needs a gid")
        if gid in self._running:
            raise OngoingError(f"workflow {gid} is running in this process")
        self._running.add(gid)
        try:
            return await self._process(fn, name, gid, data)
        finally:
            self._running.discard(gid)

    async def _process(self, fn: WorkflowFn, name: str, gid: str, data: bytes) -> bytes:
        dtm = self.settings.dtm_url
        trans = Trans(
            dtm,
            gid,
            consts.WORKFLOW,
            self.options,
            custom_data=_protocol.custom_data(name, data),
            query_prepared=self.callback_url,
        )
        reply = await self._transport.run(_protocol.prepare(trans))
        if reply.transaction is not None and reply.transaction.status == consts.SUCCEED:
            return _b64(reply.transaction.result)
        if reply.transaction is not None and reply.transaction.status == consts.FAILED:
            raise FailureError(reply.transaction.rollback_reason or f"workflow {gid} failed")
        recorder = _Recorder(
            self._transport,
            dtm=dtm,
            workflow=name,
            gid=gid,
            progresses=reply.progresses,
            headers=self.options.branch_headers,
            interceptors=self.interceptors,
            compensate_failed_branch=self.compensate_failed_branch,
        )
        wf = Workflow(recorder, name=name, data=data)
        try:
            if is_async(fn):
                result = as_bytes(await cast(AsyncWorkflowFn, fn)(wf, data))
            else:
                view = SyncWorkflow(wf, asyncio.get_running_loop())
                sync_fn = cast(SyncWorkflowFn, fn)
                result = as_bytes(await asyncio.to_thread(sync_fn, view, data))
        except FailureError as failure:
            log.info("workflow %s %s failed: %s; rolling back", name, gid, failure)
            await recorder.phase2(consts.OP_ROLLBACK)
            await self._transport.run(
                _protocol.submit(dtm, gid, consts.FAILED, reason=str(failure))
            )
            raise
        await recorder.phase2(consts.OP_COMMIT)
        await self._transport.run(_protocol.submit(dtm, gid, consts.SUCCEED, result=result))
        return result

    async def handle_callback(self, name: str, gid: str, data: bytes = b"") -> None:
        """The server's call-back (query `op` = name, `gid`; body = data): resume the
        workflow. A workflow that ends failed is done too, so this returns; other errors
        (`OngoingError`, `TransportError`, ...) propagate: answer them with a non-200 so
        the server calls back again."""
        try:
            await self.execute(name, gid, data)
        except FailureError as failure:
            log.info("workflow %s %s resumed and failed: %s", name, gid, failure)

    async def handle_callback_request(
        self, query: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """`handle_callback` for a web framework: the request's query parameters and body
        in, the HTTP status and JSON body to answer out (200 SUCCESS, 425 ONGOING, 500)."""
        try:
            await self.handle_callback(query.get("op", ""), query.get("gid", ""), body)
        except OngoingError as exc:
            return consts.HTTP_ONGOING, _answer(consts.RESULT_ONGOING, str(exc))
        except Exception as exc:
            log.warning("call-back of workflow %s failed: %r", query.get("gid", ""), exc)
            return 500, _answer("ERROR", str(exc))
        return 200, _answer(consts.RESULT_SUCCESS, "")

    def grpc_handler(self) -> grpc.GenericRpcHandler:
        """The service `workflow.Workflow` (method `Execute`) that the server calls back
        over gRPC, for the app's grpc.aio server (`server.add_generic_rpc_handlers(...)`).

        It resumes the workflow named by the call's `dtm-op`, gid `dtm-gid`, with the data
        of its `WorkflowData`, and answers as upstream's server reads it: OK once the
        workflow is done (succeeded or failed), FAILED_PRECONDITION while it is running
        here, INTERNAL for any other error, so that the server calls back again.
        """
        import grpc
        import grpc.aio

        from dtm.protocol.gen import wf_pb2

        async def execute(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            info = read_metadata(context.invocation_metadata() or ())
            data = wf_pb2.WorkflowData.FromString(request).Data
            try:
                await self.handle_callback(info.get("op", ""), info.get("gid", ""), data)
            except OngoingError as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except Exception as exc:
                log.warning("call-back of workflow %s failed: %r", info.get("gid", ""), exc)
                await context.abort(grpc.StatusCode.INTERNAL, str(exc))
            return b""

        # No (de)serialisers: WorkflowData is decoded above, and Empty is no bytes at all.
        return grpc.method_handlers_generic_handler(
            "workflow.Workflow", {"Execute": grpc.unary_unary_rpc_method_handler(execute)}
        )


def _answer(result: str, message: str) -> bytes:
    return msgspec.json.encode({"dtm_result": result, "message": message})


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return text.encode()
