"""Durable workflows over gRPC, against the server's gRPC API: branches are gRPC methods of
the business stub, results are recorded as bytes, and an unfinished workflow is resumed by
the server calling the app's `workflow.Workflow/Execute` back."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc.aio
import pytest
from google.protobuf import wrappers_pb2

from dtm.errors import FailureError, TransportError
from dtm.workflow import CallInfo, CallNext, Phase2, Request, Response, Workflow, Workflows
from tests.grpc_busi import G_ERROR, G_FAILURE, GrpcAnswer, GrpcEndpoints
from tests.harness import DtmServer


@asynccontextmanager
async def callback_server(target: Callable[[], Workflows | None]) -> AsyncIterator[str]:
    """The app's grpc.aio server in the test's loop, serving whatever `Workflows` `target`
    returns when the server calls back (the "restarted process"); its Execute URL."""

    class Late(grpc.GenericRpcHandler):
        def service(
            self, details: grpc.HandlerCallDetails
        ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
            workflows = target()
            if workflows is None:
                return None  # UNIMPLEMENTED: the server calls back again later
            handler: grpc.RpcMethodHandler[bytes, bytes] | None = workflows.grpc_handler().service(
                details
            )
            return handler

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Late(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}/workflow.Workflow/Execute"
    finally:
        await server.stop(None)


async def test_branches_are_grpc_calls_with_byte_results(
    dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("out", GrpcAnswer(reply=b"\xff\x00not utf-8"))
    async with Workflows(dtm.grpc_target, callback_url=gbusi.url("Execute")) as workflows:

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> bytes:
            out = await wf.call(gbusi.url("out"), wrappers_pb2.BytesValue(value=data))
            await wf.call(gbusi.url("in"), data)
            return out.body

        result = await workflows.execute("transfer", gid, b"\x01payload")

    assert result == b"\xff\x00not utf-8"
    found = dtm.query(gid)["transaction"]
    assert (found["status"], found["protocol"]) == ("succeed", "grpc")
    assert dtm.branch_records(gid) == [
        ("01", "action", "succeed", b"\xff\x00not utf-8"),
        ("02", "action", "succeed", b""),
    ]
    (out,) = gbusi.calls("out")
    assert wrappers_pb2.BytesValue.FromString(out.payload).value == b"\x01payload"
    assert out.metadata["dtm-gid"] == gid
    assert (out.metadata["dtm-trans_type"], out.metadata["dtm-op"]) == ("workflow", "action")
    assert gbusi.calls("in")[0].payload == b"\x01payload"


async def test_aborted_branch_rolls_back_through_grpc(
    dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("in", G_FAILURE)
    seen: list[CallInfo] = []

    async def watch(info: CallInfo, request: Request, call_next: CallNext) -> Response:
        seen.append(info)
        return await call_next(request)

    async def undo(p: Phase2) -> None:
        await p.call(gbusi.url("out_revert"), b"undo")

    workflows = Workflows(dtm.grpc_target, callback_url=gbusi.url("Execute"), interceptors=[watch])
    async with workflows:

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> None:
            await wf.call(gbusi.url("out"), b"", on_rollback=undo)
            await wf.call(gbusi.url("in"), b"")

        with pytest.raises(FailureError, match="FAILURE"):
            await workflows.execute("transfer", gid)

    assert dtm.status(gid) == "failed"
    (revert,) = gbusi.calls("out_revert")
    assert (revert.payload, revert.metadata["dtm-op"]) == (b"undo", "rollback")
    assert [(i.branch_id, i.op) for i in seen] == [
        ("01", "action"),
        ("02", "action"),
        ("01", "rollback"),
    ]


async def test_unfinished_workflow_is_resumed_by_the_grpc_call_back(
    dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("b1", GrpcAnswer(reply=b"first"))
    gbusi.program("b2", G_ERROR, GrpcAnswer(reply=b"second"))
    restarted: Workflows | None = None

    def register(workflows: Workflows) -> None:
        @workflows.register("resumable")
        async def resumable(wf: Workflow, data: bytes) -> bytes:
            one = await wf.call(gbusi.url("b1"), data)
            two = await wf.call(gbusi.url("b2"), data)
            return one.body + two.body

    async with callback_server(lambda: restarted) as url:
        first = Workflows(dtm.grpc_target, callback_url=url, retry_interval=1)
        register(first)
        with pytest.raises(TransportError, match="INTERNAL"):
            await first.execute("resumable", gid, b"\x00data")
        await first.aclose()  # the process "dies"; the workflow stays prepared
        assert dtm.status(gid) == "prepared"

        restarted = Workflows(dtm.grpc_target, callback_url=url)
        register(restarted)
        async with restarted:
            found = await asyncio.to_thread(dtm.wait_status, gid, "succeed")

    assert len(gbusi.calls("b1")) == 1  # replayed from the record, not called again
    assert [c.payload for c in gbusi.calls("b2")] == [b"\x00data", b"\x00data"]
    assert base64.b64decode(found["transaction"]["result"]) == b"firstsecond"


def test_callback_url_must_match_the_protocol(dtm: DtmServer) -> None:
    with pytest.raises(ValueError, match="bad gRPC url"):
        Workflows(dtm.grpc_target, callback_url="http://127.0.0.1:1/workflow")
    with pytest.raises(ValueError, match="http"):
        Workflows(dtm.api, callback_url="127.0.0.1:1/workflow.Workflow/Execute")
