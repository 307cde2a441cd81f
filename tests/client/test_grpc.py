"""The SDK over gRPC, against the real server's gRPC API and the gRPC business stub: every
mode, blocking and asyncio, success, failure and ongoing; the branch side (nested TCC, XA
registration, barrier) reading the transaction from metadata."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2

from dtm import AsyncDtmClient, DtmClient, FailureError, OngoingError, TransportError
from dtm.barrier import BranchBarrier, create_table
from dtm.client import XaBranchInfo
from dtm.web import TransInfo
from tests.grpc_busi import G_FAILURE, G_ONGOING, GrpcAnswer, GrpcCall, GrpcEndpoints
from tests.harness import DtmServer


def text(value: str) -> wrappers_pb2.StringValue:
    """A real protobuf message as payload."""
    return wrappers_pb2.StringValue(value=value)


@pytest.fixture
def client(dtm: DtmServer) -> Iterator[DtmClient]:
    with DtmClient(dtm.grpc_target) as c:
        yield c


def test_new_gid_over_grpc_and_query_is_http_only(client: DtmClient) -> None:
    first, second = client.new_gid(), client.new_gid()
    assert first and second and first != second
    with pytest.raises(NotImplementedError, match="HTTP"):
        client.query(first)


def test_unreachable_server_is_a_transport_error() -> None:
    with DtmClient("127.0.0.1:1", timeout=2) as c, pytest.raises(TransportError, match="UNAVAIL"):
        c.new_gid()


def test_saga_sends_message_payloads_and_metadata(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    saga = client.saga(gid, wait_result=True, branch_headers={"X-Tenant": "t1"})
    saga.add(gbusi.url("out"), gbusi.url("out_revert"), text("out"))
    saga.add(gbusi.url("in"), gbusi.url("in_revert"), b"\x00raw")
    saga.submit()
    found = dtm.query(gid)
    assert found["transaction"]["status"] == "succeed"
    assert found["transaction"]["protocol"] == "grpc"
    (out,), (into,) = gbusi.calls("out"), gbusi.calls("in")
    assert wrappers_pb2.StringValue.FromString(out.payload).value == "out"
    assert into.payload == b"\x00raw"
    assert out.metadata["dtm-gid"] == gid
    assert (out.metadata["dtm-trans_type"], out.metadata["dtm-op"]) == ("saga", "action")
    assert out.metadata["x-tenant"] == "t1"


def test_saga_failure_compensates_and_raises(
    client: DtmClient, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("in", G_FAILURE)
    saga = client.saga(gid, wait_result=True)
    saga.add(gbusi.url("out"), gbusi.url("out_revert"), text("a"))
    saga.add(gbusi.url("in"), gbusi.url("in_revert"), text("b"))
    with pytest.raises(FailureError):
        saga.submit()
    assert len(gbusi.calls("out_revert")) == 1


def test_wait_result_ongoing_over_grpc(client: DtmClient, gbusi: GrpcEndpoints, gid: str) -> None:
    gbusi.program("a", G_ONGOING)
    saga = client.saga(gid, wait_result=True, request_timeout=1).add(gbusi.url("a"), "", b"")
    with pytest.raises(OngoingError):
        saga.submit()


def test_a_grpc_payload_must_be_a_message(client: DtmClient, gbusi: GrpcEndpoints) -> None:
    with pytest.raises(TypeError, match="protobuf message or bytes"):
        client.saga().add(gbusi.url("a"), "", {"amount": 30})


def test_bad_request_is_refused_with_its_reason(client: DtmClient, gbusi: GrpcEndpoints) -> None:
    saga = client.saga("white space").add(gbusi.url("a"), "", b"")
    with pytest.raises(TransportError, match=r"INVALID_ARGUMENT.*white space"):
        saga.submit()


def test_tcc_confirms_and_returns_the_reply(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("try", GrpcAnswer(reply=text("reserved").SerializeToString()))
    with client.tcc(gid) as tcc:
        reply = tcc.call_branch(
            text("p"), gbusi.url("try"), gbusi.url("confirm"), gbusi.url("cancel")
        )
    assert wrappers_pb2.StringValue.FromString(reply.body).value == "reserved"
    dtm.wait_status(gid, "succeed")
    (confirm,) = gbusi.wait_calls("confirm", 1)
    assert wrappers_pb2.StringValue.FromString(confirm.payload).value == "p"
    assert (confirm.metadata["dtm-branch_id"], confirm.metadata["dtm-op"]) == ("01", "confirm")
    (tried,) = gbusi.calls("try")
    assert tried.metadata["dtm-dtm"] == dtm.grpc_target


def test_tcc_try_failure_cancels(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("try2", G_FAILURE)
    with pytest.raises(FailureError), client.tcc(gid) as tcc:
        tcc.call_branch(text("1"), gbusi.url("try1"), gbusi.url("confirm"), gbusi.url("cancel"))
        tcc.call_branch(text("2"), gbusi.url("try2"), gbusi.url("confirm"), gbusi.url("cancel"))
    dtm.wait_status(gid, "failed")
    assert len(gbusi.wait_calls("cancel", 2)) == 2
    assert gbusi.calls("confirm") == []


def test_nested_tcc_from_grpc_metadata(
    dtm: DtmServer, client: DtmClient, gbusi: GrpcEndpoints, gid: str
) -> None:
    def try_with_child(call: GrpcCall) -> GrpcAnswer:
        with DtmClient(call.metadata["dtm-dtm"]) as branch_client:
            child = branch_client.tcc_from_grpc(call.metadata)
            child.call_branch(
                b"", gbusi.url("child_try"), gbusi.url("child_confirm"), gbusi.url("cancel")
            )
        return GrpcAnswer()

    gbusi.program("try", try_with_child)
    with client.tcc(gid) as tcc:
        tcc.call_branch(b"", gbusi.url("try"), gbusi.url("confirm"), gbusi.url("cancel"))
    dtm.wait_status(gid, "succeed")
    (child,) = gbusi.wait_calls("child_confirm", 1)
    assert child.metadata["dtm-branch_id"] == "0101"
    assert len(gbusi.wait_calls("confirm", 1)) == 1


def registering_xa_branch(call: GrpcCall) -> GrpcAnswer:
    """An XA branch: its action (the local part prepared) registers the phase-2 URL, which
    the server calls back with op commit or rollback (and no `dtm-dtm`, as upstream)."""
    info = XaBranchInfo.from_grpc(call.metadata)
    if info.op != "action":
        return GrpcAnswer()
    with DtmClient(call.metadata["dtm-dtm"]) as branch_client:
        branch_client.register_xa_branch(info)
    return GrpcAnswer()


def test_xa_commits_registered_branches(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("xa", registering_xa_branch)
    with client.xa(gid) as xa:
        xa.call_branch(text("1"), gbusi.url("xa"))
        xa.call_branch(text("2"), gbusi.url("xa"))
    dtm.wait_status(gid, "succeed")
    calls = gbusi.wait_calls("xa", 4)
    assert sorted(c.metadata["dtm-op"] for c in calls) == ["action", "action", "commit", "commit"]
    assert all(c.metadata["dtm-phase2_url"] == gbusi.url("xa") for c in calls[:2])


def test_xa_failure_rolls_back(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("xa", registering_xa_branch)
    gbusi.program("bad", G_FAILURE)
    with pytest.raises(FailureError), client.xa(gid) as xa:
        xa.call_branch(text("1"), gbusi.url("xa"))
        xa.call_branch(text("2"), gbusi.url("bad"))
    dtm.wait_status(gid, "failed")
    ops = [c.metadata["dtm-op"] for c in gbusi.wait_calls("xa", 2)]
    assert ops == ["action", "rollback"]


def test_msg_prepare_submit(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    msg = client.msg(gid).add(gbusi.url("in"), text("m"))
    msg.prepare(gbusi.url("query"))
    msg.submit()
    (into,) = gbusi.wait_calls("in", 1)
    assert wrappers_pb2.StringValue.FromString(into.payload).value == "m"
    dtm.wait_status(gid, "succeed")


def test_msg_do_and_submit_asks_query_prepared_over_grpc(
    client: DtmClient, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str, tmp_path: Path
) -> None:
    """The local transaction breaks with an unknown outcome; the check-back (a gRPC call
    with the msg barrier's info in metadata) says it rolled back, so the message is
    aborted."""
    gbusi.program("query", G_FAILURE)
    conn = sqlite3.connect(tmp_path / "b.db", isolation_level=None)
    create_table(conn)

    def broken(c: sqlite3.Connection) -> None:
        raise RuntimeError("connection lost")

    msg = client.msg(gid).add(gbusi.url("in"), b"")
    with pytest.raises(RuntimeError):
        msg.do_and_submit_db(gbusi.url("query"), conn, broken)
    dtm.wait_status(gid, "failed")
    (query,) = gbusi.calls("query")
    assert (query.metadata["dtm-branch_id"], query.metadata["dtm-op"]) == ("00", "msg")
    assert gbusi.calls("in") == []


def test_branch_side_reads_metadata_into_barrier_and_trans_info(
    client: DtmClient, gbusi: GrpcEndpoints, gid: str
) -> None:
    seen: list[tuple[TransInfo, BranchBarrier]] = []

    def action(call: GrpcCall) -> GrpcAnswer:
        pairs = list(call.metadata.items())  # as invocation_metadata() gives them
        seen.append((TransInfo.from_grpc(pairs), BranchBarrier.from_grpc(pairs)))
        return GrpcAnswer()

    gbusi.program("a", action)
    client.saga(gid, wait_result=True).add(gbusi.url("a"), gbusi.url("c"), b"").submit()
    ((info, barrier),) = seen
    assert (info.gid, info.trans_type, info.branch_id, info.op) == (gid, "saga", "01", "action")
    assert (barrier.gid, barrier.branch_id, barrier.op) == (gid, "01", "action")


# --- asyncio --------------------------------------------------------------------------------


async def test_async_saga_and_failure(dtm: DtmServer, gbusi: GrpcEndpoints, gid: str) -> None:
    gbusi.program("bad", G_FAILURE)
    async with AsyncDtmClient(f"grpc://{dtm.grpc_target}") as c:
        good = c.saga(gid, wait_result=True).add(gbusi.url("a"), gbusi.url("c"), text("x"))
        await good.submit()
        bad = c.saga(gid + "-b", wait_result=True)
        bad.add(gbusi.url("a"), gbusi.url("c"), text("y")).add(gbusi.url("bad"), "", b"")
        with pytest.raises(FailureError):
            await bad.submit()
    assert dtm.status(gid) == "succeed"
    assert [c.payload for c in gbusi.calls("c")] == [text("y").SerializeToString()]


async def test_async_tcc_xa_msg(dtm: DtmServer, gbusi: GrpcEndpoints, gid: str) -> None:
    gbusi.program("xa", registering_xa_branch)
    async with AsyncDtmClient(dtm.grpc_target) as c:
        async with c.tcc(gid + "-tcc") as tcc:
            await tcc.call_branch(b"", gbusi.url("try"), gbusi.url("confirm"), gbusi.url("cancel"))
        async with c.xa(gid + "-xa") as xa:
            await xa.call_branch(b"", gbusi.url("xa"))
        msg = c.msg(gid + "-msg").add(gbusi.url("in"), b"m")
        await msg.prepare(gbusi.url("query"))
        await msg.submit()
        assert await c.new_gid()
    for suffix in ("-tcc", "-xa", "-msg"):
        dtm.wait_status(gid + suffix, "succeed")
    assert len(gbusi.wait_calls("confirm", 1)) == 1
    assert [c.metadata["dtm-op"] for c in gbusi.wait_calls("xa", 2)] == ["action", "commit"]
    assert gbusi.wait_calls("in", 1)[0].payload == b"m"


async def test_async_unreachable_is_transport_error() -> None:
    async with AsyncDtmClient("127.0.0.1:1", timeout=2) as c:
        with pytest.raises(TransportError):
            await c.saga("g").add("127.0.0.1:1/a.B/C", "", b"").submit()


def test_grpc_status_codes_are_read_as_upstream() -> None:
    from dtm.client import _grpc
    from dtm.client._core import GrpcResponse

    with pytest.raises(FailureError):
        _grpc.check_status(GrpcResponse("ABORTED", "FAILURE"), "x")
    with pytest.raises(OngoingError):
        _grpc.check_status(GrpcResponse("ABORTED", "ONGOING"), "x")  # clients before v1.10
    with pytest.raises(OngoingError):
        _grpc.check_status(GrpcResponse("FAILED_PRECONDITION", "wait"), "x")
    with pytest.raises(TransportError, match="INTERNAL"):
        _grpc.check_status(GrpcResponse(grpc.StatusCode.INTERNAL.name, "boom"), "x")
