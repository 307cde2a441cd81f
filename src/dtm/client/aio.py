"""The asyncio client: `AsyncDtmClient` and the transaction modes it makes.

Every method only drives an operation of the sans-I/O core (`_core`, `_modes`) through the
aiohttp transport; `dtm.client.sync` mirrors this module method for method (a test checks
that the two keep the same shape).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, Unpack

from dtm.barrier import BranchBarrier, Connection
from dtm.client import _core
from dtm.client._core import HttpResponse, Op, QueryResult
from dtm.client._modes import (
    MsgBuilder,
    SagaBuilder,
    TccCore,
    TransOptionsArgs,
    XaBranchInfo,
    XaCore,
    finish_global,
    new_trans,
    register_xa,
    run_msg_local,
    tcc_from_grpc,
    tcc_from_query,
)
from dtm.client._settings import ClientSettings
from dtm.client._transport import AsyncTransport
from dtm.errors import DtmError, FailureError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import Metadata as GrpcMetadata

T = TypeVar("T")
C = TypeVar("C", bound=Connection)
P = ParamSpec("P")


class AsyncDtmClient:
    """A DTM server at `dtm_url`: its HTTP API (`http://localhost:36789/api/dtmsvr`) or its
    gRPC API (`localhost:36790`). Over gRPC, branch URLs are gRPC methods
    (`host:port/package.Service/Method`) and payloads protobuf messages (or their bytes);
    `query` is HTTP only, as in upstream's API.

    Owns one aiohttp session: use it as `async with AsyncDtmClient(url) as dtm:` or call
    `aclose()`. `timeout` (seconds) bounds each request; `headers` go on every request.
    """

    def __init__(
        self,
        dtm_url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = ClientSettings.of(dtm_url, timeout=timeout, headers=headers)
        self._transport = AsyncTransport(timeout=timeout, headers=self.settings.headers)

    @property
    def dtm_url(self) -> str:
        return self.settings.dtm_url

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
        """Close the session and its pooled connections."""
        await self._transport.close()

    async def _run(self, op: Op[T]) -> T:
        return await self._transport.run(op)

    async def new_gid(self) -> str:
        """A new gid from the server."""
        return await self._run(_core.new_gid(self.dtm_url))

    async def query(self, gid: str) -> QueryResult:
        """The transaction `gid` and its branch operations as stored by the server."""
        return await self._run(_core.query(self.dtm_url, gid))

    def saga(
        self, gid: str = "", *, concurrent: bool = False, **options: Unpack[TransOptionsArgs]
    ) -> AsyncSaga:
        """A saga to fill with steps and `submit`; with no gid the server makes one."""
        trans = new_trans(self.dtm_url, gid, consts.SAGA, concurrent=concurrent, **options)
        return AsyncSaga(self, trans)

    def msg(
        self,
        gid: str = "",
        *,
        delay: int = 0,
        concurrent: bool = False,
        **options: Unpack[TransOptionsArgs],
    ) -> AsyncMsg:
        """A 2-phase message; `delay` seconds postpone its steps after submit."""
        trans = new_trans(self.dtm_url, gid, consts.MSG, concurrent=concurrent, **options)
        return AsyncMsg(self, trans, delay=delay)

    @asynccontextmanager
    async def tcc(
        self, gid: str = "", **options: Unpack[TransOptionsArgs]
    ) -> AsyncIterator[AsyncTcc]:
        """A TCC global transaction: prepared on entry, submitted on a clean exit, aborted
        (with the exception as rollback reason, then re-raised) when the block raises."""
        tcc = AsyncTcc(self, new_trans(self.dtm_url, gid, consts.TCC, **options))
        async with _global(self, tcc._trans):
            yield tcc

    def tcc_transaction(
        self, **options: Unpack[TransOptionsArgs]
    ) -> Callable[[Callable[Concatenate[AsyncTcc, P], Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorator form of `tcc`: each call of the decorated function is one global
        transaction with a server-made gid, the `AsyncTcc` passed as first argument."""

        def decorate(
            fn: Callable[Concatenate[AsyncTcc, P], Awaitable[T]],
        ) -> Callable[P, Awaitable[T]]:
            @functools.wraps(fn)
            async def run(*args: P.args, **kwargs: P.kwargs) -> T:
                async with self.tcc(**options) as tcc:
                    return await fn(tcc, *args, **kwargs)

            return run

        return decorate

    def tcc_from_query(self, params: Mapping[str, str]) -> AsyncTcc:
        """Inside a TCC branch: the transaction it belongs to, to call sub-branches."""
        return AsyncTcc(self, tcc_from_query(self.dtm_url, params))

    def tcc_from_grpc(self, metadata: GrpcMetadata) -> AsyncTcc:
        """Inside a gRPC TCC branch: the transaction it belongs to, from the call's metadata
        (`context.invocation_metadata()`), to call sub-branches."""
        return AsyncTcc(self, tcc_from_grpc(self.dtm_url, metadata))

    @asynccontextmanager
    async def xa(
        self, gid: str = "", **options: Unpack[TransOptionsArgs]
    ) -> AsyncIterator[AsyncXa]:
        """An XA global transaction: prepared on entry, submitted on a clean exit, aborted
        when the block raises."""
        xa = AsyncXa(self, new_trans(self.dtm_url, gid, consts.XA, **options))
        async with _global(self, xa._trans):
            yield xa

    async def register_xa_branch(self, info: XaBranchInfo) -> None:
        """Inside an XA branch, once its local transaction is prepared: tell the server
        where to send commit or rollback."""
        await self._run(register_xa(self.dtm_url, info))


@asynccontextmanager
async def _global(client: AsyncDtmClient, trans: _core.Trans) -> AsyncIterator[None]:
    await client._run(trans.call("prepare"))
    try:
        yield
    except Exception as exc:
        try:
            await client._run(finish_global(trans, exc))
        except DtmError as abort_error:
            # The block's own error is what the caller must see; the server aborts the
            # transaction anyway once timeout_to_fail passes.
            exc.add_note(f"abort of {trans.gid} failed too: {abort_error}")
        raise
    await client._run(finish_global(trans, None))


class AsyncSaga(SagaBuilder):
    """A saga (see `SagaBuilder` for steps and ordering)."""

    def __init__(self, client: AsyncDtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    async def submit(self) -> None:
        """Submit the saga; the server runs it. With `wait_result`, raises `FailureError`
        when it failed and `OngoingError` when it did not finish within the wait."""
        await self._client._run(self._submit())


class AsyncMsg(MsgBuilder):
    """A 2-phase message (see `MsgBuilder`)."""

    def __init__(self, client: AsyncDtmClient, trans: _core.Trans, *, delay: int = 0) -> None:
        super().__init__(trans, delay=delay)
        self._client = client

    async def prepare(self, query_prepared: str = "") -> None:
        """Phase one: the server keeps the message and, if it is never submitted, asks
        `query_prepared` whether the local transaction committed."""
        await self._client._run(self._prepare(query_prepared))

    async def submit(self) -> None:
        """Phase two (or the only phase): the server delivers every step."""
        await self._client._run(self._submit())

    async def do_and_submit(
        self,
        query_prepared: str,
        fn: Callable[[BranchBarrier], Awaitable[T]],
        *,
        dialect: str | None = None,
        table: str | None = None,
    ) -> T:
        """Prepare, await the local transaction `fn(barrier)`, then submit (upstream's
        DoAndSubmit); `barrier` is branch "00", op "msg", for the caller's own barrier
        code. On `FailureError` the message is aborted; on any other exception
        `query_prepared` is asked as the server would: rolled back -> abort, committed ->
        submit, no answer -> left prepared. `fn`'s exception is then re-raised."""

        async def local(barrier: BranchBarrier) -> tuple[T, bool]:
            return await fn(barrier), True

        result, _ = await self._do(query_prepared, local, dialect, table)
        return result

    async def do_and_submit_db(
        self,
        query_prepared: str,
        conn: C,
        fn: Callable[[C], T],
        *,
        dialect: str | None = None,
        table: str | None = None,
    ) -> T | None:
        """`do_and_submit` with `fn(conn)` run under the barrier on a blocking DB-API
        connection, in a worker thread so the event loop is not blocked; committed once,
        and left to the server's check-back when the caller's transaction is still open,
        as the blocking client's `do_and_submit_db` (see there)."""

        async def local(barrier: BranchBarrier) -> tuple[T | None, bool]:
            return await asyncio.to_thread(run_msg_local, barrier, conn, fn)

        result, _ = await self._do(query_prepared, local, dialect, table)
        return result

    async def _do(
        self,
        query_prepared: str,
        local: Callable[[BranchBarrier], Awaitable[tuple[T, bool]]],
        dialect: str | None,
        table: str | None,
    ) -> tuple[T, bool]:
        """Prepare, run the local transaction, then submit it when it is committed."""
        await self.prepare(query_prepared)
        barrier = self._barrier(dialect=dialect, table=table)
        try:
            result, committed = await local(barrier)
        except Exception as exc:
            await self._settle(query_prepared, exc)
            raise
        if committed:
            await self.submit()
        return result, committed

    async def _settle(self, query_prepared: str, error: Exception) -> None:
        """After the local transaction raised `error`: abort or submit, as far as known."""
        try:
            if not isinstance(error, FailureError):
                try:
                    await self._client._run(self._check_prepared(query_prepared))
                except FailureError:
                    pass
                else:
                    await self.submit()
                    return
            await self._client._run(self._abort())
        except DtmError as settle_error:
            # Unknown or unreachable: the server's check-back settles the message later.
            error.add_note(f"message {self.gid} left prepared: {settle_error}")


class AsyncTcc(TccCore):
    """A TCC transaction as seen by its initiator or by one of its branches."""

    def __init__(self, client: AsyncDtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    async def call_branch(
        self, payload: Any, try_url: str, confirm_url: str, cancel_url: str
    ) -> HttpResponse:
        """Register a branch (id "01", "02", ...) then call its try; raises
        `FailureError` / `OngoingError` / `TransportError` as try answers."""
        return await self._client._run(self._call_branch(payload, try_url, confirm_url, cancel_url))


class AsyncXa(XaCore):
    """An XA global transaction as seen by its initiator."""

    def __init__(self, client: AsyncDtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    async def call_branch(self, payload: Any, url: str) -> HttpResponse:
        """Call a branch's local part; it registers itself with `register_xa_branch`."""
        return await self._client._run(self._call_branch(payload, url))
