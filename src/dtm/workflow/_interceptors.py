"""Interceptors: async functions wrapped around every branch call a workflow makes.

An interceptor is `async def f(info, request, call_next) -> response`. The call's
`CallInfo` comes first and apart from the request: the request is what travels down the
chain (an interceptor may replace it, `dataclasses.replace(request, headers=...)`), while
which workflow, branch and op the call belongs to is fixed, so `call_next` takes the request
alone. The calls to the DTM server do not pass through them: those are the SDK's protocol,
not the app's business traffic.

The request is an `HttpRequest` in a workflow of the HTTP API, a `GrpcRequest` (metadata
instead of headers) in one of the gRPC API; the response likewise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from dtm.client._core import Request, Response


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The call an interceptor wraps: its workflow's name is nowhere in the request, and
    gid, branch and op are there only inside the URL's query."""

    workflow: str
    gid: str
    branch_id: str
    op: str


CallNext: TypeAlias = Callable[[Request], Awaitable[Response]]
"""The rest of the chain: the next interceptor, the last one's being the call itself."""

Interceptor: TypeAlias = Callable[[CallInfo, Request, CallNext], Awaitable[Response]]
"""`async def f(info: CallInfo, request: Request, call_next: CallNext) -> Response`.

It may change the request, look at or replace the response, or answer without calling
`call_next` at all (a cache, a fault injected in a test). What it returns is read and
recorded as the branch's answer; what it raises counts as the call's outcome: a
`FailureError` fails the branch, any other error leaves it to run again on resume.
"""


def chain(interceptors: Sequence[Interceptor], info: CallInfo, send: CallNext) -> CallNext:
    """`send` wrapped in `interceptors`, the first one outermost."""
    call = send
    for interceptor in reversed(interceptors):
        call = _link(interceptor, info, call)
    return call


def _link(interceptor: Interceptor, info: CallInfo, call_next: CallNext) -> CallNext:
    async def call(request: Request) -> Response:
        return await interceptor(info, request, call_next)

    return call
