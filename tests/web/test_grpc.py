"""`dtm.web.grpc` in a real grpc.aio business service that DTM calls: the barrier built
from metadata, and FailureError / OngoingError answered with the codes DTM reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import pytest_asyncio
from google.protobuf import wrappers_pb2

from dtm import AsyncDtmClient, FailureError, OngoingError
from dtm.barrier import create_table
from dtm.web.grpc import branch_barrier, dtm_branch, status_of, trans_info
from tests.harness import DtmServer

Context = grpc.aio.ServicerContext[Any, Any]


class Bank:  # method names are the gRPC service's, as protoc generates them
    """TransOut refuses amounts over 100; its compensation runs under the barrier, so a
    compensation of an action that failed (null compensation) changes nothing."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seen: list[tuple[str, str]] = []
        self.ongoing_left = 1

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db, isolation_level=None)

    def balance(self) -> int:
        with self._conn() as conn:
            return int(conn.execute("select amount from account").fetchone()[0])

    def _apply(self, context: Context, delta: int) -> None:
        info = trans_info(context)
        self.seen.append((info.branch_id, info.op))
        conn = self._conn()
        try:
            branch_barrier(context).call(
                conn, lambda c: c.execute("update account set amount = amount + ?", (delta,))
            )
        finally:
            conn.close()

    @dtm_branch
    async def TransOut(self, request: bytes, context: Context) -> bytes:  # noqa: N802
        amount = int(wrappers_pb2.Int64Value.FromString(request).value)
        if amount > 100:
            raise FailureError("balance too low")
        self._apply(context, -amount)
        return b""

    @dtm_branch
    async def TransOutRevert(self, request: bytes, context: Context) -> bytes:  # noqa: N802
        self._apply(context, int(wrappers_pb2.Int64Value.FromString(request).value))
        return b""

    @dtm_branch
    async def Slow(self, request: bytes, context: Context) -> bytes:  # noqa: N802
        if self.ongoing_left:
            self.ongoing_left -= 1
            raise OngoingError("not yet")
        return b""


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = getattr(self.bank, str(details.method).rsplit("/", 1)[-1], None)
        if method is None:
            return None

        async def unary(request: bytes, context: Context) -> bytes:
            reply: bytes = await method(request, context)
            return reply

        return grpc.unary_unary_rpc_method_handler(unary)


@pytest_asyncio.fixture(loop_scope="function")
async def bank(tmp_path: Path) -> AsyncIterator[tuple[Bank, str]]:
    db = tmp_path / "bank.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        create_table(conn)
        conn.execute("create table account (amount int not null)")
        conn.execute("insert into account values (1000)")
    service = Bank(db)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_Handler(service),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, f"127.0.0.1:{port}/bank.Bank"
    await server.stop(None)


def amount(n: int) -> wrappers_pb2.Int64Value:
    return wrappers_pb2.Int64Value(value=n)


async def test_success_applies_once(dtm: DtmServer, bank: tuple[Bank, str], gid: str) -> None:
    service, base = bank
    async with AsyncDtmClient(dtm.grpc_target) as client:
        saga = client.saga(gid, wait_result=True)
        await saga.add(f"{base}/TransOut", f"{base}/TransOutRevert", amount(30)).submit()
    assert service.balance() == 970
    assert service.seen == [("01", "action")]


async def test_failure_is_aborted_and_null_compensation_is_skipped(
    dtm: DtmServer, bank: tuple[Bank, str], gid: str
) -> None:
    service, base = bank
    async with AsyncDtmClient(dtm.grpc_target) as client:
        saga = client.saga(gid, wait_result=True)
        saga.add(f"{base}/TransOut", f"{base}/TransOutRevert", amount(500))
        with pytest.raises(FailureError, match="balance too low"):
            await saga.submit()
    # The compensation was called (DTM compensates a failed action's branch), but the
    # barrier saw no action and skipped it: the balance is untouched.
    assert ("01", "compensate") in service.seen
    assert service.balance() == 1000


async def test_ongoing_is_retried(dtm: DtmServer, bank: tuple[Bank, str], gid: str) -> None:
    service, base = bank
    async with AsyncDtmClient(dtm.grpc_target) as client:
        await client.saga(gid).add(f"{base}/Slow", "", b"").submit()
    # This loop serves the branch: wait off it.
    await asyncio.to_thread(dtm.wait_status, gid, "succeed")
    assert service.ongoing_left == 0


def test_status_of() -> None:
    assert status_of(FailureError("x")) == (grpc.StatusCode.ABORTED, "x")
    assert status_of(OngoingError()) == (grpc.StatusCode.FAILED_PRECONDITION, "ONGOING")
    assert status_of(ValueError("x")) is None
