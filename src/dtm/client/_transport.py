"""The only I/O of the SDK: send an `HttpRequest` or make a `GrpcRequest` call, and drive an
`Op` generator with the answers. One transport for asyncio (aiohttp, grpc.aio), one
blocking (urllib3, grpc).

HTTP: every failure to get an answer (refused, reset, timeout, bad URL) is a
`TransportError`; reading the answer is the core's job (`check_answer`). gRPC: every call
ends in a status, which the core reads (`_grpc.check_status`); channels are made per target
on first use and kept. grpc is imported only when a gRPC call is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import aiohttp
import urllib3

from dtm.client._core import GrpcRequest, GrpcResponse, HttpRequest, HttpResponse, Op, Response
from dtm.errors import TransportError

if TYPE_CHECKING:
    import grpc
    import grpc.aio

T = TypeVar("T")

# Raw bytes in and out: the core serialises the messages.
_RawAsyncMethod: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"
_RawMethod: TypeAlias = "grpc.UnaryUnaryMultiCallable[bytes, bytes]"


def _grpc_metadata(headers: Mapping[str, str], request: GrpcRequest) -> tuple[tuple[str, str], ...]:
    """The client's headers (keys lowered, as gRPC requires) then the request's own."""
    return tuple((k.lower(), v) for k, v in headers.items()) + request.metadata


class AsyncTransport:
    """One aiohttp session, created inside the running loop on first use (aiohttp binds
    sessions to a loop) and closed by `close`."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._headers = dict(headers)
        self._session: aiohttp.ClientSession | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._methods: dict[tuple[str, str], _RawAsyncMethod] = {}

    async def send(self, request: HttpRequest) -> HttpResponse:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        timeout = aiohttp.ClientTimeout(total=max(request.min_timeout, self._timeout))
        try:
            async with self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=timeout,
            ) as response:
                return HttpResponse(response.status, await response.read())
        except TimeoutError as exc:
            raise TransportError(f"{request.method} {request.url}: timed out") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise TransportError(f"{request.method} {request.url}: {exc!r}") from exc

    async def call_grpc(self, request: GrpcRequest) -> GrpcResponse:
        import grpc.aio

        method = self._methods.get((request.target, request.method))
        if method is None:
            channel = self._channels.get(request.target)
            if channel is None:
                channel = grpc.aio.insecure_channel(request.target)
                self._channels[request.target] = channel
            method = self._methods[request.target, request.method] = channel.unary_unary(
                request.method
            )
        try:
            reply = await method(
                request.body,
                metadata=_grpc_metadata(self._headers, request),
                timeout=max(request.min_timeout, self._timeout),
            )
        except grpc.aio.AioRpcError as exc:
            return GrpcResponse(exc.code().name, exc.details() or "")
        return GrpcResponse("OK", "", reply)

    async def answer(self, request: HttpRequest | GrpcRequest) -> Response:
        """Send an HTTP request or make a gRPC call, whichever `request` is."""
        if isinstance(request, GrpcRequest):
            return await self.call_grpc(request)
        return await self.send(request)

    async def run(self, op: Op[T]) -> T:
        """Drive `op` to its result, sending each request it yields."""
        try:
            request = next(op)
            while True:
                request = op.send(await self.answer(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    async def close(self) -> None:
        channels, self._channels, self._methods = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Let aiohttp's connector finish closing its sockets before the loop may end.
            await asyncio.sleep(0)


class SyncTransport:
    """A urllib3 PoolManager: pooled keep-alive connections, no retries of its own (the
    caller decides; retrying a submit is safe, retrying a branch call is the server's job)."""

    def __init__(self, *, timeout: float, headers: Mapping[str, str]) -> None:
        self._timeout = timeout
        self._headers = dict(headers)
        self._pool = urllib3.PoolManager(headers=dict(headers), retries=False)
        self._channels: dict[str, grpc.Channel] = {}
        self._methods: dict[tuple[str, str], _RawMethod] = {}

    def send(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self._pool.request(
                request.method,
                request.url,
                body=request.body,
                headers={**self._pool.headers, **request.headers},
                timeout=urllib3.Timeout(total=max(request.min_timeout, self._timeout)),
                redirect=False,
            )
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise TransportError(f"{request.method} {request.url}: {exc!r}") from exc
        return HttpResponse(response.status, response.data)

    def call_grpc(self, request: GrpcRequest) -> GrpcResponse:
        import grpc

        method = self._methods.get((request.target, request.method))
        if method is None:
            channel = self._channels.get(request.target)
            if channel is None:
                channel = self._channels[request.target] = grpc.insecure_channel(request.target)
            method = self._methods[request.target, request.method] = channel.unary_unary(
                request.method
            )
        try:
            reply = method(
                request.body,
                metadata=_grpc_metadata(self._headers, request),
                timeout=max(request.min_timeout, self._timeout),
            )
        except grpc.RpcError as exc:
            # What grpc raises is also a grpc.Call, which its type stubs cannot express.
            code: grpc.StatusCode = getattr(exc, "code", lambda: grpc.StatusCode.UNKNOWN)()
            details: str | None = getattr(exc, "details", lambda: None)()
            return GrpcResponse(code.name, details or str(exc))
        return GrpcResponse("OK", "", reply)

    def run(self, op: Op[T]) -> T:
        """Drive `op` to its result, sending each request it yields."""
        try:
            request = next(op)
            while True:
                answer = (
                    self.call_grpc(request)
                    if isinstance(request, GrpcRequest)
                    else self.send(request)
                )
                request = op.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        finally:
            op.close()

    def close(self) -> None:
        self._pool.clear()
        channels, self._channels, self._methods = list(self._channels.values()), {}, {}
        for channel in channels:
            channel.close()
