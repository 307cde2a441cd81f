"""The blocking client: `DtmClient` and the transaction modes it makes.

The mirror of `dtm.client.aio`, method for method, over urllib3: both only drive the
operations of the sans-I/O core, so they cannot disagree about the protocol (a test checks
that the two keep the same shape).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
from dtm.client._transport import SyncTransport
from dtm.errors import DtmError, FailureError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import Metadata as GrpcMetadata

T = TypeVar("T")
P = ParamSpec("P")
C = TypeVar("C", bound=Connection)


class DtmClient:
    """A DTM server at `dtm_url`: its HTTP API (`http://localhost:36789/api/dtmsvr`) or its
    gRPC API (`localhost:36790`). Over gRPC, branch URLs are gRPC methods
    (`host:port/package.Service/Method`) and payloads protobuf messages (or their bytes);
    `query` is HTTP only, as in upstream's API.

    Owns one urllib3 pool: use it as `with DtmClient(url) as dtm:` or call `close()`.
    `timeout` (seconds) bounds each request; `headers` go on every request.
    """

    def __init__(
        self,
        dtm_url: str,
        *,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = ClientSettings.of(dtm_url, timeout=timeout, headers=headers)
        self._transport = SyncTransport(timeout=timeout, headers=self.settings.headers)

    @property
    def dtm_url(self) -> str:
        return self.settings.dtm_url

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def _run(self, op: Op[T]) -> T:
        return self._transport.run(op)

    def new_gid(self) -> str:
        """A new gid from the server."""
        return self._run(_core.new_gid(self.dtm_url))

    def query(self, gid: str) -> QueryResult:
        """The transaction `gid` and its branch operations as stored by the server."""
        return self._run(_core.query(self.dtm_url, gid))

    def saga(
        self, gid: str = "", *, concurrent: bool = False, **options: Unpack[TransOptionsArgs]
    ) -> Saga:
        """A saga to fill with steps and `submit`; with no gid the server makes one."""
        trans = new_trans(self.dtm_url, gid, consts.SAGA, concurrent=concurrent, **options)
        return Saga(self, trans)

    def msg(
        self,
        gid: str = "",
        *,
        delay: int = 0,
        concurrent: bool = False,
        **options: Unpack[TransOptionsArgs],
    ) -> Msg:
        """A 2-phase message; `delay` seconds postpone its steps after submit."""
        trans = new_trans(self.dtm_url, gid, consts.MSG, concurrent=concurrent, **options)
        return Msg(self, trans, delay=delay)

    @contextmanager
    def tcc(self, gid: str = "", **options: Unpack[TransOptionsArgs]) -> Iterator[Tcc]:
        """A TCC global transaction: prepared on entry, submitted on a clean exit, aborted
        (with the exception as rollback reason, then re-raised) when the block raises."""
        tcc = Tcc(self, new_trans(self.dtm_url, gid, consts.TCC, **options))
        with _global(self, tcc._trans):
            yield tcc

    def tcc_transaction(
        self, **options: Unpack[TransOptionsArgs]
    ) -> Callable[[Callable[Concatenate[Tcc, P], T]], Callable[P, T]]:
        """Decorator form of `tcc`: each call of the decorated function is one global
        transaction with a server-made gid, the `Tcc` passed as first argument."""

        def decorate(fn: Callable[Concatenate[Tcc, P], T]) -> Callable[P, T]:
            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> T:
                with self.tcc(**options) as tcc:
                    return fn(tcc, *args, **kwargs)

            return run

        return decorate

    def tcc_from_query(self, params: Mapping[str, str]) -> Tcc:
        """Inside a TCC branch: the transaction it belongs to, to call sub-branches."""
        return Tcc(self, tcc_from_query(self.dtm_url, params))

    def tcc_from_grpc(self, metadata: GrpcMetadata) -> Tcc:
        """Inside a gRPC TCC branch: the transaction it belongs to, from the call's metadata
        (`context.invocation_metadata()`), to call sub-branches."""
        return Tcc(self, tcc_from_grpc(self.dtm_url, metadata))

    @contextmanager
    def xa(self, gid: str = "", **options: Unpack[TransOptionsArgs]) -> Iterator[Xa]:
        """An XA global transaction: prepared on entry, submitted on a clean exit, aborted
        when the block raises."""
        xa = Xa(self, new_trans(self.dtm_url, gid, consts.XA, **options))
        with _global(self, xa._trans):
            yield xa

    def register_xa_branch(self, info: XaBranchInfo) -> None:
        """Inside an XA branch, once its local transaction is prepared: tell the server
        where to send commit or rollback."""
        self._run(register_xa(self.dtm_url, info))


@contextmanager
def _global(client: DtmClient, trans: _core.Trans) -> Iterator[None]:
    client._run(trans.call("prepare"))
    try:
        yield
    except Exception as exc:
        try:
            client._run(finish_global(trans, exc))
        except DtmError as abort_error:
            # The block's own error is what the caller must see; the server aborts the
            # transaction anyway once timeout_to_fail passes.
            exc.add_note(f"abort of {trans.gid} failed too: {abort_error}")
        raise
    client._run(finish_global(trans, None))


class Saga(SagaBuilder):
    """A saga (see `SagaBuilder` for steps and ordering)."""

    def __init__(self, client: DtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    def submit(self) -> None:
        """Submit the saga; the server runs it. With `wait_result`, raises `FailureError`
        when it failed and `OngoingError` when it did not finish within the wait."""
        self._client._run(self._submit())


class Msg(MsgBuilder):
    """A 2-phase message (see `MsgBuilder`)."""

    def __init__(self, client: DtmClient, trans: _core.Trans, *, delay: int = 0) -> None:
        super().__init__(trans, delay=delay)
        self._client = client

    def prepare(self, query_prepared: str = "") -> None:
        """Phase one: the server keeps the message and, if it is never submitted, asks
        `query_prepared` whether the local transaction committed."""
        self._client._run(self._prepare(query_prepared))

    def submit(self) -> None:
        """Phase two (or the only phase): the server delivers every step."""
        self._client._run(self._submit())

    def do_and_submit(
        self,
        query_prepared: str,
        fn: Callable[[BranchBarrier], T],
        *,
        dialect: str | None = None,
        table: str | None = None,
    ) -> T:
        """Prepare, run the local transaction `fn(barrier)`, then submit: upstream's
        DoAndSubmit, for a local transaction run under `barrier` (branch "00", op "msg").

        When `fn` raises `FailureError` the message is aborted. When it raises anything
        else the outcome is unknown (it may have committed before the error), so this asks
        `query_prepared` as the server would: rolled back -> abort, committed -> submit, no
        answer -> left prepared for the server's own check-back. `fn`'s exception is then
        re-raised; `fn`'s result is returned after a successful submit.
        """
        result, _ = self._do(query_prepared, lambda b: (fn(b), True), dialect, table)
        return result

    def do_and_submit_db(
        self,
        query_prepared: str,
        conn: C,
        fn: Callable[[C], T],
        *,
        dialect: str | None = None,
        table: str | None = None,
    ) -> T | None:
        """`do_and_submit` with `fn(conn)` run under the barrier on a DB-API connection
        (upstream's DoAndSubmitDB); returns `fn`'s result.

        Without a transaction open on `conn`, the barrier owns one and commits it before the
        submit. With one open (say the message is sent from inside another branch's
        barrier), the barrier works in a savepoint and commits nothing: the caller's commit
        is the only one, and as the caller may still roll back, the message is not submitted
        here but left prepared: the server's check-back asks `query_prepared` and submits it
        once the caller has committed, or fails it if the caller rolled back.
        """
        result, _ = self._do(query_prepared, lambda b: run_msg_local(b, conn, fn), dialect, table)
        return result

    def _do(
        self,
        query_prepared: str,
        local: Callable[[BranchBarrier], tuple[T, bool]],
        dialect: str | None,
        table: str | None,
    ) -> tuple[T, bool]:
        """Prepare, run the local transaction, then submit it when it is committed."""
        self.prepare(query_prepared)
        barrier = self._barrier(dialect=dialect, table=table)
        try:
            result, committed = local(barrier)
        except Exception as exc:
            self._settle(query_prepared, exc)
            raise
        if committed:
            self.submit()
        return result, committed

    def _settle(self, query_prepared: str, error: Exception) -> None:
        """After the local transaction raised `error`: abort or submit, as far as known."""
        try:
            if not isinstance(error, FailureError):
                try:
                    self._client._run(self._check_prepared(query_prepared))
                except FailureError:
                    pass
                else:
                    self.submit()
                    return
            self._client._run(self._abort())
        except DtmError as settle_error:
            # Unknown or unreachable: the server's check-back settles the message later.
            error.add_note(f"message {self.gid} left prepared: {settle_error}")


class Tcc(TccCore):
    """A TCC transaction as seen by its initiator or by one of its branches."""

    def __init__(self, client: DtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    def call_branch(
        self, payload: Any, try_url: str, confirm_url: str, cancel_url: str
    ) -> HttpResponse:
        """Register a branch (id "01", "02", ...) then call its try; raises
        `FailureError` / `OngoingError` / `TransportError` as try answers."""
        return self._client._run(self._call_branch(payload, try_url, confirm_url, cancel_url))


class Xa(XaCore):
    """An XA global transaction as seen by its initiator."""

    def __init__(self, client: DtmClient, trans: _core.Trans) -> None:
        super().__init__(trans)
        self._client = client

    def call_branch(self, payload: Any, url: str) -> HttpResponse:
        """Call a branch's local part; it registers itself with `register_xa_branch`."""
        return self._client._run(self._call_branch(payload, url))
