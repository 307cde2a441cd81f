"""A gRPC business service stub: every unary method of every service exists, takes and
answers raw bytes, and answers the status codes each test programs. It runs a grpc.aio
server on a loop in its own thread, on a loopback port the OS picks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from tests.harness import Stub


@dataclass(frozen=True)
class GrpcAnswer:
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""
    reply: bytes = b""  # the reply message of an OK answer


G_OK = GrpcAnswer()
G_FAILURE = GrpcAnswer(grpc.StatusCode.ABORTED, "FAILURE")
G_ONGOING = GrpcAnswer(grpc.StatusCode.FAILED_PRECONDITION, "ONGOING")
G_ERROR = GrpcAnswer(grpc.StatusCode.INTERNAL, "business broke")


@dataclass(frozen=True)
class GrpcCall:
    method: str  # "/busi.Busi/<name>"
    payload: bytes
    metadata: dict[str, str]
    at: float

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[-1]


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, stub: GrpcBusiness) -> None:
        self.stub = stub

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method

        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return await self.stub.handle(method, request, context)

        # No (de)serialisers: the handler sees and answers raw bytes.
        return grpc.unary_unary_rpc_method_handler(unary)


class GrpcBusiness(Stub[GrpcCall, GrpcAnswer]):
    """Every method answers as each test programs it (a `Stub`: a method never programmed
    answers OK); every call is recorded with its payload and metadata."""

    def __init__(self) -> None:
        super().__init__(G_OK)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((_Handler(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def _stop(self) -> None:
        await self._server.stop(None)

    async def handle(
        self, method: str, payload: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        call = GrpcCall(method, payload, metadata, time.monotonic())
        planned = self._record(call)
        # A programmed function runs in a thread: it may call this stub again (nested TCC).
        answer = await asyncio.to_thread(planned, call) if callable(planned) else planned
        if answer.code != grpc.StatusCode.OK:
            await context.abort(answer.code, answer.message)
        return answer.reply

    def url(self, name: str) -> str:
        return f"127.0.0.1:{self.port}/busi.Busi/{name}"


class GrpcEndpoints:
    """One test's view of the stub: method names carry a prefix of their own."""

    def __init__(self, stub: GrpcBusiness) -> None:
        self.stub = stub
        self.prefix = "T" + uuid.uuid4().hex[:8]

    def url(self, name: str) -> str:
        return self.stub.url(f"{self.prefix}_{name}")

    def program(self, name: str, *answers: GrpcAnswer | Callable[[GrpcCall], GrpcAnswer]) -> None:
        self.stub.program(f"{self.prefix}_{name}", *answers)

    def calls(self, name: str) -> list[GrpcCall]:
        return self.stub.calls(f"{self.prefix}_{name}")

    def wait_calls(self, name: str, count: int, timeout: float = 10) -> list[GrpcCall]:
        return self.stub.wait_calls(f"{self.prefix}_{name}", count, timeout)
