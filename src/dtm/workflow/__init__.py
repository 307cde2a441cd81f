"""Durable workflows: a Python function whose branch results DTM records, so that a run
that died is resumed by the server's call-back and replays them instead of calling the
branches again (upstream's `client/workflow`).

    workflows = Workflows(dtm_url, callback_url="http://app/workflow/callback")

    @workflows.register("transfer")
    async def transfer(wf: Workflow, data: bytes) -> bytes:
        wf.on_rollback(lambda p: p.call(f"{busi}/TransOutRevert", req))
        await wf.call(f"{busi}/TransOut", req)           # branch "01", recorded
        await wf.call(f"{busi}/TransIn", req, on_rollback=undo_in)  # branch "02"
        return b"done"

    await workflows.execute("transfer", gid, data)

`FailureError` from the function (or from a branch) runs the on_rollback callables in
reverse and submits the failure; returning runs the on_commit callables and submits the
result; any other error leaves the workflow to the server's call-back.

`Workflows(..., interceptors=[...])` wraps every branch call in async functions
`(info: CallInfo, request: Request, call_next) -> Response`: headers, logging, faults
injected in tests. A request is an `HttpRequest`, or a `GrpcRequest` in a workflow run
against the server's gRPC API (`Workflows("host:36790", ...)`), whose branches are gRPC
methods and whose call-back the app serves with `Workflows.grpc_handler()`.
"""

from __future__ import annotations

from dtm.client._core import (
    GrpcRequest,
    GrpcResponse,
    HttpRequest,
    HttpResponse,
    Request,
    Response,
)
from dtm.workflow._context import (
    Branch,
    BranchInfo,
    LocalFn,
    Phase2,
    Phase2Fn,
    SyncPhase2,
    Workflow,
)
from dtm.workflow._interceptors import CallInfo, CallNext, Interceptor
from dtm.workflow._sync import SyncBranch, SyncWorkflow
from dtm.workflow._workflows import AsyncWorkflowFn, SyncWorkflowFn, WorkflowFn, Workflows

__all__ = [
    "AsyncWorkflowFn",
    "Branch",
    "BranchInfo",
    "CallInfo",
    "CallNext",
    "GrpcRequest",
    "GrpcResponse",
    "HttpRequest",
    "HttpResponse",
    "Interceptor",
    "LocalFn",
    "Phase2",
    "Phase2Fn",
    "Request",
    "Response",
    "SyncBranch",
    "SyncPhase2",
    "SyncWorkflow",
    "SyncWorkflowFn",
    "Workflow",
    "WorkflowFn",
    "Workflows",
]
