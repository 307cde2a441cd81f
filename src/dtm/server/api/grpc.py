"""Upstream's gRPC API, service `dtmgimp.Dtm`: decode -> service -> encode.

Requests become the same `TransRequest` the HTTP API decodes, as upstream's
`TransFromDtmRequest` builds them: protocol `grpc`, binary payloads, steps given as JSON
text. Errors are gRPC codes, as upstream's `DtmError2GrpcError` and the codes clients read:
FAILURE is ABORTED, ONGOING is FAILED_PRECONDITION, a request that cannot be accepted
INVALID_ARGUMENT, an unknown gid or topic NOT_FOUND, an unreachable store UNAVAILABLE.

`start_server` serves it with server reflection and the standard health service.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import grpc.aio
import msgspec
from google.protobuf import empty_pb2

# No stubs are published for these two (types-grpcio covers grpc only).
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.gen import dtmgimp_pb2 as pb
from dtm.protocol.gen import dtmgimp_pb2_grpc as pb_grpc
from dtm.protocol.messages import TransRequest
from dtm.server.intake import BadRequest
from dtm.server.service import Service
from dtm.server.stores.base import StoreUnavailable

__all__ = ["DtmServicer", "start_server", "trans_request"]

log = logging.getLogger(__name__)

SERVICE_NAME = "dtmgimp.Dtm"
MAX_MESSAGE = 8 * 1024 * 1024  # as the HTTP API's MAX_BODY

_steps_decoder = msgspec.json.Decoder(list[dict[str, str]] | None)
_EMPTY = empty_pb2.Empty()

T = TypeVar("T")


def trans_request(req: pb.DtmRequest) -> TransRequest:
    """The `TransRequest` a `DtmRequest` stands for."""
    steps = None
    if req.Steps:  # Go clients send "null" for a transaction without steps
        try:
            steps = _steps_decoder.decode(req.Steps)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"Steps is not a JSON list of objects of strings: {exc}") from None
    o = req.TransOptions
    return TransRequest(
        gid=req.Gid,
        trans_type=req.TransType,
        steps=steps,
        bin_payloads=list(req.BinPayloads),
        custom_data=req.CustomedData or None,
        query_prepared=req.QueryPrepared or None,
        protocol=consts.PROTOCOL_GRPC,
        rollback_reason=req.RollbackReason or None,
        req_extra=dict(req.ReqExtra) or None,
        wait_result=o.WaitResult,
        timeout_to_fail=o.TimeoutToFail,
        request_timeout=o.RequestTimeout,
        retry_interval=o.RetryInterval,
        branch_headers=dict(o.BranchHeaders) or None,
        retry_limit=o.RetryLimit,
    )


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, FailureError):
        return grpc.StatusCode.ABORTED, str(exc) or consts.RESULT_FAILURE
    if isinstance(exc, OngoingError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc) or consts.RESULT_ONGOING
    if isinstance(exc, BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, LookupError):
        return grpc.StatusCode.NOT_FOUND, str(exc).strip("'\"")
    if isinstance(exc, StoreUnavailable):
        log.error("store unavailable: %s", exc)
        return grpc.StatusCode.UNAVAILABLE, f"store unavailable: {exc}"
    log.exception("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


async def _answer(context: grpc.aio.ServicerContext[object, object], work: Awaitable[T]) -> T:
    try:
        return await work
    except Exception as exc:
        code, message = status_of(exc)
        await context.abort(code, message)
        raise  # abort raises; this keeps type checkers sure nothing falls through


Context = grpc.aio.ServicerContext[object, object]


class DtmServicer(pb_grpc.DtmServicer):
    """`dtmgimp.Dtm` over `Service`; method names are the service's, hence CamelCase."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def NewGid(self, request: empty_pb2.Empty, context: Context) -> pb.DtmGidReply:  # noqa: N802
        return pb.DtmGidReply(Gid=self.service.new_gid())

    async def _trans(
        self, fn: Callable[[TransRequest], Awaitable[None]], request: pb.DtmRequest, ctx: Context
    ) -> empty_pb2.Empty:
        async def work() -> None:
            await fn(trans_request(request))

        await _answer(ctx, work())
        return _EMPTY

    async def Submit(self, request: pb.DtmRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        return await self._trans(self.service.submit, request, context)

    async def Prepare(self, request: pb.DtmRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        return await self._trans(self.service.prepare, request, context)

    async def Abort(self, request: pb.DtmRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        return await self._trans(self.service.abort, request, context)

    async def RegisterBranch(  # noqa: N802
        self, request: pb.DtmBranchRequest, context: Context
    ) -> empty_pb2.Empty:
        data = {
            **request.Data,
            "gid": request.Gid,
            "trans_type": request.TransType,
            "branch_id": request.BranchID,
        }
        payload = bytes(request.BusiPayload)
        await _answer(context, self.service.register_branch(data, payload=payload))
        return _EMPTY

    async def PrepareWorkflow(  # noqa: N802
        self, request: pb.DtmRequest, context: Context
    ) -> pb.DtmProgressesReply:
        async def work() -> pb.DtmProgressesReply:
            found = await self.service.prepare_workflow(trans_request(request))
            reply = pb.DtmProgressesReply()
            trans = found.transaction
            if trans is not None:
                reply.Transaction.CopyFrom(
                    pb.DtmTransaction(
                        Gid=trans.gid,
                        Status=trans.status,
                        RollbackReason=trans.rollback_reason,
                        Result=trans.result,
                    )
                )
            reply.Progresses.extend(
                pb.DtmProgress(Status=b.status, BinData=b.bin_data, BranchID=b.branch_id, Op=b.op)
                for b in found.branches
            )
            return reply

        return await _answer(context, work())

    async def Subscribe(self, request: pb.DtmTopicRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        await _answer(context, self.service.subscribe(request.Topic, request.URL, request.Remark))
        return _EMPTY

    async def Unsubscribe(self, request: pb.DtmTopicRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        await _answer(context, self.service.unsubscribe(request.Topic, request.URL))
        return _EMPTY

    async def DeleteTopic(self, request: pb.DtmTopicRequest, context: Context) -> empty_pb2.Empty:  # noqa: N802
        await _answer(context, self.service.delete_topic(request.Topic))
        return _EMPTY


async def start_server(service: Service, *, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Serve `dtmgimp.Dtm`, reflection and health on host:port (0: a free port); returns
    the started server and the port bound. Raises RuntimeError when it cannot listen."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
    )
    pb_grpc.add_DtmServicer_to_server(DtmServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from None
    if not bound:
        raise RuntimeError(f"gRPC cannot listen on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
