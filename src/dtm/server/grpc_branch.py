"""Outbound gRPC calls to business branches, read as upstream reads them.

A branch URL is `host:port/package.Service/Method`. The branch's payload goes as the raw
request message (the client serialised it), the answer is taken as raw bytes and ignored;
the transaction travels in metadata, as upstream's `TransInfo2Ctx` puts it (`dtm-gid`,
`dtm-trans_type`, `dtm-branch_id`, `dtm-op`, `dtm-dtm`), followed by the branch headers.

Codes, as upstream's `GrpcError2DtmError`: OK is success, ABORTED failure (or ongoing when
its message is `ONGOING`, the form of clients older than v1.10), FAILED_PRECONDITION
ongoing; every other code, a deadline or an unreachable server is an error the engine
retries.

Channels are pooled per target in a `ChannelPool`, which the server's `BranchCaller` owns.
"""

from __future__ import annotations

import logging

import grpc
import grpc.aio

from dtm.protocol import consts
from dtm.protocol.grpc_calls import metadata_of, parse_url
from dtm.server.calls import BranchCall, CallResult, Outcome

__all__ = ["ChannelPool"]

log = logging.getLogger(__name__)

_SUCCESS = CallResult(Outcome.SUCCESS)


def read_grpc_code(code: grpc.StatusCode, message: str) -> CallResult:
    """Upstream's reading of a branch's gRPC status."""
    if code == grpc.StatusCode.OK:
        return _SUCCESS
    if code == grpc.StatusCode.ABORTED:
        if message == consts.RESULT_ONGOING:
            return CallResult(Outcome.ONGOING, message)
        return CallResult(Outcome.FAILURE, message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return CallResult(Outcome.ONGOING, message)
    return CallResult(Outcome.ERROR, f"gRPC {code.name}: {message}")


class ChannelPool:
    """One grpc.aio channel per target, and one raw-bytes callable per method."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._methods: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    def method(self, target: str, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        found = self._methods.get((target, method))
        if found is None:
            channel = self._channels.get(target)
            if channel is None:
                channel = self._channels[target] = grpc.aio.insecure_channel(target)
            # No serialisers: the payload bytes are the request message, as upstream sends.
            found = channel.unary_unary(method)
            self._methods[(target, method)] = found
        return found

    async def call(self, branch: BranchCall) -> CallResult:
        """Call one gRPC branch; never raises for the branch's own misbehaviour."""
        try:
            target, method = parse_url(branch.url)
        except ValueError as exc:
            return CallResult(Outcome.ERROR, str(exc))
        try:
            stub = self.method(target, method)
            await stub(
                branch.payload,
                metadata=metadata_of(
                    branch.gid,
                    branch.trans_type,
                    branch.branch_id,
                    branch.op,
                    headers=branch.headers,
                ),
                timeout=branch.timeout,
            )
        except grpc.aio.AioRpcError as exc:
            return read_grpc_code(exc.code(), exc.details() or "")
        except (ValueError, TypeError, RuntimeError) as exc:  # bad metadata, closed channel
            return CallResult(Outcome.ERROR, f"calling {branch.url}: {type(exc).__name__}: {exc}")
        return _SUCCESS

    async def close(self) -> None:
        channels, self._channels, self._methods = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()
