"""Helpers for business services that DTM calls over gRPC (grpc and grpc.aio servicers).

The transaction info comes in metadata (`dtm-gid`, `dtm-trans_type`, ...), and results go
back as status codes, as upstream's `DtmError2GrpcError`: `FailureError` is ABORTED (DTM
rolls back), `OngoingError` is FAILED_PRECONDITION (DTM asks again later), a return is
success; any other exception is left to grpc, which answers UNKNOWN and DTM retries.

    class Busi(busi_pb2_grpc.BusiServicer):
        @dtm_branch
        async def TransIn(self, request, context):
            barrier = branch_barrier(context)
            ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

import grpc

from dtm.barrier import BranchBarrier
from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import Metadata
from dtm.web._core import TransInfo

__all__ = ["branch_barrier", "dtm_branch", "status_of", "trans_info"]

F = TypeVar("F", bound=Callable[..., Any])


class _Context(Protocol):
    def invocation_metadata(self) -> Metadata | None: ...


def trans_info(context: _Context) -> TransInfo:
    """The transaction info of the call `context` (a grpc or grpc.aio servicer context)."""
    return TransInfo.from_grpc(context.invocation_metadata() or ())


def branch_barrier(
    context: _Context, *, dialect: str | None = None, table: str | None = None
) -> BranchBarrier:
    """The sub-transaction barrier of the call; ValueError when the metadata lacks the
    transaction info."""
    return BranchBarrier.from_grpc(
        context.invocation_metadata() or (), dialect=dialect, table=table
    )


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status DTM reads for a branch that raised `exc`, or None when it is not DTM's."""
    if isinstance(exc, FailureError):
        return grpc.StatusCode.ABORTED, str(exc) or consts.RESULT_FAILURE
    if isinstance(exc, OngoingError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc) or consts.RESULT_ONGOING
    return None


def dtm_branch(method: F) -> F:
    """Decorate a servicer method `(self, request, context)`, sync or async, so that
    `FailureError` and `OngoingError` end the call with DTM's status codes."""
    if inspect.iscoroutinefunction(method):
        async_method = cast(Callable[..., Awaitable[Any]], method)

        @functools.wraps(method)
        async def run_async(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            try:
                return await async_method(self, request, context)
            except (FailureError, OngoingError) as exc:
                code, message = cast(tuple[grpc.StatusCode, str], status_of(exc))
                await context.abort(code, message)

        return cast(F, run_async)

    @functools.wraps(method)
    def run(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except (FailureError, OngoingError) as exc:
            code, message = cast(tuple[grpc.StatusCode, str], status_of(exc))
            context.abort(code, message)

    return cast(F, run)
