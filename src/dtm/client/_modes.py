"""What each transaction mode builds and which operations it runs, without I/O.

The async and the blocking clients subclass these bases and add only the methods that
drive an operation through their transport (`submit`, `prepare`, `call_branch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Self, TypedDict, TypeVar

import msgspec

from dtm.barrier import BranchBarrier, Connection, TransactionStateError
from dtm.client._core import HttpResponse, Op, Trans, options_of
from dtm.protocol import consts
from dtm.protocol.grpc_calls import Metadata as GrpcMetadata
from dtm.protocol.grpc_calls import read_metadata

C = TypeVar("C", bound=Connection)
T = TypeVar("T")


class TransOptionsArgs(TypedDict, total=False):
    """Options every global transaction takes as keyword arguments (seconds, as upstream).

    wait_result: submit answers only when the transaction finished (or 425 ONGOING / 409
        FAILURE: `OngoingError` / `FailureError`).
    timeout_to_fail: a prepared TCC/XA/msg not submitted in time is rolled back.
    request_timeout: timeout of the server's calls to the branches.
    retry_interval: first back-off of the server's retries.
    retry_limit: the server gives up after that many retries.
    branch_headers: HTTP headers the server (and this client) send to every branch.
    """

    wait_result: bool
    timeout_to_fail: int
    request_timeout: int
    retry_interval: int
    retry_limit: int
    branch_headers: Mapping[str, str]


class SagaStep(NamedTuple):
    """One step of a saga: its action, its compensation and the payload both receive."""

    action: str
    compensate: str
    payload: Any
    request_timeout: int | None = None


class SagaBuilder:
    """Steps, order and options of a saga; `submit` is added by the clients.

    Order is expressed three ways, translated to upstream's custom data
    `{"orders": {"2": [0, 1]}, "concurrent": true}` (branch indexes from 0):

    - `add` appends a step that runs after everything added before it;
    - `add_parallel` appends a group of steps that run at the same time, after everything
      added before the group, and before anything added after it;
    - `add_branch_order(branch, after=[...])`, upstream's AddBranchOrder, for any DAG.

    With `concurrent=True` and no groups, steps have no implicit order (upstream's meaning):
    they all run at once unless `add_branch_order` says otherwise.
    """

    def __init__(self, trans: Trans) -> None:
        self._trans = trans
        self._stages: list[list[int]] = []
        self._grouped = False
        self._orders: dict[int, list[int]] = {}

    @property
    def gid(self) -> str:
        """The gid; empty until submit when the server is to make one."""
        return self._trans.gid

    def add(
        self, action: str, compensate: str, payload: Any, *, request_timeout: int | None = None
    ) -> Self:
        """Append a step; an empty URL is a step with nothing to call. `request_timeout`
        (seconds) overrides the transaction's for this step's calls."""
        self._stages.append(
            [self._add_step(SagaStep(action, compensate, payload, request_timeout))]
        )
        return self

    def add_parallel(self, steps: Iterable[SagaStep | tuple[str, str, Any]]) -> Self:
        """Append steps that run concurrently with each other, as one stage."""
        group = [self._add_step(SagaStep(*step)) for step in steps]
        if not group:
            raise ValueError("add_parallel needs at least one step")
        self._stages.append(group)
        self._grouped = True
        return self

    def add_branch_order(self, branch: int, *, after: Iterable[int]) -> Self:
        """Step `branch` (index from 0) runs only after the steps `after`; implies
        concurrent execution, as upstream's orders only mean anything then."""
        preds = sorted(set(after))
        count = len(self._trans.steps)
        if not 0 <= branch < count or any(not 0 <= p < branch for p in preds):
            raise ValueError(
                f"order {branch} after {preds}: steps are 0..{count - 1}, "
                "and a step can only wait for earlier steps"
            )
        self._orders[branch] = preds
        return self

    def _add_step(self, step: SagaStep) -> int:
        entry = {consts.OP_ACTION: step.action, consts.OP_COMPENSATE: step.compensate}
        if step.request_timeout is not None:
            if step.request_timeout <= 0:
                raise ValueError("a step's request_timeout should be positive seconds")
            entry["request_timeout"] = str(step.request_timeout)
        self._trans.steps.append(entry)
        self._trans.add_payload(step.payload)
        return len(self._trans.steps) - 1

    def _custom_data(self) -> str:
        orders: dict[int, list[int]] = {}
        if self._grouped:
            for before, stage in zip(self._stages, self._stages[1:], strict=False):
                for step in stage:
                    orders[step] = list(before)
        for step, preds in self._orders.items():
            orders[step] = sorted({*orders.get(step, ()), *preds})
        if not (orders or self._trans.options.concurrent):
            return ""
        self._trans.options.concurrent = True
        return msgspec.json.encode({"orders": orders, "concurrent": True}).decode()

    def _submit(self) -> Op[None]:
        self._trans.custom_data = self._custom_data()
        yield from self._trans.call("submit")


class MsgBuilder:
    """Steps and options of a 2-phase message; `prepare` and `submit` are added by the
    clients. `delay` (seconds) postpones the first call of the steps (custom data
    `{"delay": n}`, as upstream)."""

    def __init__(self, trans: Trans, *, delay: int = 0) -> None:
        if delay < 0:
            raise ValueError("delay should be >= 0 seconds")
        self._trans = trans
        if delay:
            trans.custom_data = msgspec.json.encode({"delay": delay}).decode()

    @property
    def gid(self) -> str:
        return self._trans.gid

    def add(self, action: str, payload: Any) -> Self:
        """Append a step: `action` is called with `payload` once the message is submitted."""
        self._trans.steps.append({consts.OP_ACTION: action})
        self._trans.add_payload(payload)
        return self

    def add_topic(self, topic: str, payload: Any) -> Self:
        """Append a step delivered to every subscriber of `topic`."""
        if not topic:
            raise ValueError("empty topic")
        return self.add(f"{consts.MSG_TOPIC_PREFIX}{topic}", payload)

    def _prepare(self, query_prepared: str) -> Op[None]:
        self._trans.query_prepared = query_prepared or self._trans.query_prepared
        yield from self._trans.call("prepare")

    def _submit(self) -> Op[None]:
        yield from self._trans.call("submit")

    def _abort(self) -> Op[None]:
        yield from self._trans.call("abort")

    def _barrier(self, *, dialect: str | None, table: str | None) -> BranchBarrier:
        """The barrier of the message's local transaction: branch "00", op "msg" (its
        first call inserts barrier "01", the row a check-back looks for), as upstream."""
        return BranchBarrier(
            self._trans.trans_type,
            self._trans.gid,
            consts.CHECKBACK_BRANCH_ID,
            consts.OP_MSG,
            dialect=dialect,
            table=table,
        )

    def _check_prepared(self, query_prepared: str) -> Op[HttpResponse]:
        """Ask the application's own `query_prepared` whether the local transaction
        committed, exactly as the server's check-back would: 200 committed, 409 FAILURE
        rolled back (`FailureError`), anything else unknown."""
        return (
            yield from self._trans.request_branch(
                "GET",
                query_prepared or self._trans.query_prepared,
                None,
                consts.CHECKBACK_BRANCH_ID,
                consts.OP_MSG,
            )
        )


def run_msg_local(barrier: BranchBarrier, conn: C, fn: Callable[[C], T]) -> tuple[T | None, bool]:
    """A message's local transaction under its barrier, committed once, and whether it is
    committed yet: by the barrier (`call`) when `conn` has no transaction open, else later by
    the caller, the barrier working in a savepoint (`call_in_transaction`)."""
    try:
        return barrier.call(conn, fn), True
    except TransactionStateError:
        # `call` refuses before doing anything when a transaction is open.
        return barrier.call_in_transaction(conn, fn), False


class TccCore:
    """A TCC global transaction, or a branch's view of it (nested TCC)."""

    def __init__(self, trans: Trans) -> None:
        self._trans = trans

    @property
    def gid(self) -> str:
        return self._trans.gid

    @property
    def branch_id(self) -> str:
        """The id of the branch this object runs in; empty at the top level."""
        return self._trans.branch_ids.parent

    def _call_branch(
        self, payload: Any, try_url: str, confirm_url: str, cancel_url: str
    ) -> Op[HttpResponse]:
        """Register confirm/cancel first, then call try: if try's outcome is lost, the server
        still knows what to cancel. As upstream's CallBranch."""
        branch_id = self._trans.branch_ids.next()
        added = {consts.OP_CONFIRM: confirm_url, consts.OP_CANCEL: cancel_url}
        yield from self._trans.register_branch(
            branch_id, added, self._trans.encode_payload(payload)
        )
        return (
            yield from self._trans.request_branch(
                "POST", try_url, payload, branch_id, consts.OP_TRY
            )
        )


class XaCore:
    """An XA global transaction: the client calls each branch's local part (op `action`,
    with `phase2_url`); the branch registers itself and the server commits or rolls back."""

    def __init__(self, trans: Trans) -> None:
        self._trans = trans

    @property
    def gid(self) -> str:
        return self._trans.gid

    def _call_branch(self, payload: Any, url: str) -> Op[HttpResponse]:
        branch_id = self._trans.branch_ids.next()
        return (
            yield from self._trans.request_branch("POST", url, payload, branch_id, consts.OP_ACTION)
        )


class XaBranchInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a service learns from the query string of an XA branch call."""

    gid: str
    branch_id: str
    op: str
    phase2_url: str = ""
    trans_type: str = consts.XA

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> XaBranchInfo:
        info = cls(
            gid=params.get("gid", ""),
            branch_id=params.get("branch_id", ""),
            op=params.get("op", ""),
            phase2_url=params.get("phase2_url", ""),
        )
        if not (info.gid and info.branch_id and info.op):
            raise ValueError(f"not an XA branch call: {dict(params)}")
        return info

    @classmethod
    def from_grpc(cls, metadata: GrpcMetadata) -> XaBranchInfo:
        """From the metadata of a gRPC XA branch call (`dtm-gid`, ..., `dtm-phase2_url`)."""
        return cls.from_query(read_metadata(metadata))


def new_trans(
    dtm: str, gid: str, trans_type: str, *, concurrent: bool = False, **options: Any
) -> Trans:
    return Trans(dtm, gid, trans_type, options_of(concurrent=concurrent, **options))


def tcc_from_query(dtm: str, params: Mapping[str, str]) -> Trans:
    """The transaction a TCC branch call belongs to, from its query parameters, so a branch
    can open sub-branches (ids `<branch_id>01`, ...). As upstream's TccFromQuery."""
    gid, branch_id = params.get("gid", ""), params.get("branch_id", "")
    if not gid or params.get("trans_type", consts.TCC) != consts.TCC:
        raise ValueError(f"not a TCC branch call: {dict(params)}")
    trans = new_trans(dtm, gid, consts.TCC)
    trans.branch_ids.parent = branch_id
    return trans


def tcc_from_grpc(dtm: str, metadata: GrpcMetadata) -> Trans:
    """`tcc_from_query` for a gRPC TCC branch: the same facts from its `dtm-*` metadata."""
    return tcc_from_query(dtm, read_metadata(metadata))


def register_xa(dtm: str, info: XaBranchInfo) -> Op[None]:
    """Register an XA branch after its local part is prepared: its phase-2 URL is where the
    server sends commit or rollback. As upstream's XaLocalTransaction does."""
    trans = new_trans(dtm, info.gid, consts.XA)
    yield from trans.register_branch(info.branch_id, {"url": info.phase2_url})


def finish_global(trans: Trans, error: BaseException | None) -> Op[None]:
    """Phase two of a TCC or XA global transaction: submit when the block ended cleanly,
    else abort with the error as rollback reason (upstream's DeferDo)."""
    if error is None:
        yield from trans.call("submit")
        return
    trans.rollback_reason = f"{type(error).__name__}: {error}"[:1024]
    yield from trans.call("abort")
