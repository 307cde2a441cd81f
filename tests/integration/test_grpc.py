"""The gRPC API (`dtmgimp.Dtm`) and gRPC branches, over real sockets: a client built from
the generated stubs talks to the shared server, which calls the gRPC business stub."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from dtm.protocol.gen import dtmgimp_pb2 as pb
from dtm.protocol.gen import dtmgimp_pb2_grpc as pb_grpc
from tests.grpc_busi import G_FAILURE, G_OK, G_ONGOING, GrpcEndpoints
from tests.harness import DtmServer


@pytest.fixture
def channel(dtm: DtmServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(dtm.grpc_target) as ch:
        yield ch


@pytest.fixture
def client(channel: grpc.Channel) -> pb_grpc.DtmStub:
    return pb_grpc.DtmStub(channel)


def saga_request(gid: str, gbusi: GrpcEndpoints, *names: str, **options: object) -> pb.DtmRequest:
    steps = [{"action": gbusi.url(n), "compensate": gbusi.url(f"{n}_revert")} for n in names]
    return pb.DtmRequest(
        Gid=gid,
        TransType="saga",
        Steps=json.dumps(steps),
        BinPayloads=[b"\x00\xff" + n.encode() for n in names],
        TransOptions=pb.DtmTransOptions(**options),  # type: ignore[arg-type]
    )


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        assert callable(call)
        call()
    code: grpc.StatusCode = info.value.code()
    return code


def test_new_gid(client: pb_grpc.DtmStub) -> None:
    first, second = client.NewGid(empty_pb2.Empty()).Gid, client.NewGid(empty_pb2.Empty()).Gid
    assert first and second and first != second


def test_saga_calls_branches_with_payload_and_metadata(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    request = saga_request(gid, gbusi, "out", "in", BranchHeaders={"X-Tenant": "t1"})
    client.Submit(request)
    found = dtm.wait_status(gid, "succeed")
    assert found["transaction"]["protocol"] == "grpc"
    (out,) = gbusi.calls("out")
    (into,) = gbusi.calls("in")
    assert (out.payload, into.payload) == (b"\x00\xffout", b"\x00\xffin")
    assert out.method.startswith("/busi.Busi/")
    assert out.metadata["dtm-gid"] == gid
    assert out.metadata["dtm-trans_type"] == "saga"
    assert (out.metadata["dtm-branch_id"], into.metadata["dtm-branch_id"]) == ("01", "02")
    assert out.metadata["dtm-op"] == "action"
    assert out.metadata["x-tenant"] == "t1"
    assert not gbusi.calls("out_revert")


def test_aborted_branch_rolls_the_saga_back(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("in", G_FAILURE)
    client.Submit(saga_request(gid, gbusi, "out", "in"))
    dtm.wait_status(gid, "failed")
    (revert,) = gbusi.calls("out_revert")
    assert revert.payload == b"\x00\xffout"
    assert revert.metadata["dtm-op"] == "compensate"


def test_failed_precondition_branch_is_retried(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("out", G_ONGOING, G_OK)
    client.Submit(saga_request(gid, gbusi, "out"))
    dtm.wait_status(gid, "succeed")
    assert len(gbusi.calls("out")) == 2
    assert not gbusi.calls("out_revert")


def test_wait_result_answers_aborted_for_a_failed_saga(
    client: pb_grpc.DtmStub, gbusi: GrpcEndpoints, gid: str
) -> None:
    gbusi.program("out", G_FAILURE)
    request = saga_request(gid, gbusi, "out", WaitResult=True)
    assert code_of(lambda: client.Submit(request)) == grpc.StatusCode.ABORTED


def test_tcc_confirms_registered_branches(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    client.Prepare(pb.DtmRequest(Gid=gid, TransType="tcc", Steps="null"))
    for branch_id in ("01", "02"):
        client.RegisterBranch(
            pb.DtmBranchRequest(
                Gid=gid,
                TransType="tcc",
                BranchID=branch_id,
                Data={"confirm": gbusi.url("confirm"), "cancel": gbusi.url("cancel")},
                BusiPayload=b"\x01payload-" + branch_id.encode(),
            )
        )
    client.Submit(pb.DtmRequest(Gid=gid, TransType="tcc", Steps="null"))
    dtm.wait_status(gid, "succeed")
    calls = gbusi.calls("confirm")
    assert sorted(c.payload for c in calls) == [b"\x01payload-01", b"\x01payload-02"]
    assert {c.metadata["dtm-op"] for c in calls} == {"confirm"}
    assert not gbusi.calls("cancel")


def test_tcc_abort_cancels(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    client.Prepare(pb.DtmRequest(Gid=gid, TransType="tcc"))
    client.RegisterBranch(
        pb.DtmBranchRequest(
            Gid=gid,
            TransType="tcc",
            BranchID="01",
            Data={"confirm": gbusi.url("confirm"), "cancel": gbusi.url("cancel")},
        )
    )
    client.Abort(pb.DtmRequest(Gid=gid, TransType="tcc"))
    dtm.wait_status(gid, "failed")
    assert len(gbusi.calls("cancel")) == 1
    assert not gbusi.calls("confirm")


def test_msg_calls_its_steps(
    client: pb_grpc.DtmStub, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    steps = [{"action": gbusi.url("a")}, {"action": gbusi.url("b")}]
    client.Prepare(
        pb.DtmRequest(
            Gid=gid,
            TransType="msg",
            Steps=json.dumps(steps),
            BinPayloads=[b"pa", b"pb"],
            QueryPrepared=gbusi.url("query"),
        )
    )
    client.Submit(pb.DtmRequest(Gid=gid, TransType="msg"))
    dtm.wait_status(gid, "succeed")
    assert [c.payload for c in gbusi.calls("a") + gbusi.calls("b")] == [b"pa", b"pb"]
    assert gbusi.calls("a")[0].metadata["dtm-trans_type"] == "msg"


def test_prepare_workflow_answers_the_transaction(client: pb_grpc.DtmStub, gid: str) -> None:
    reply = client.PrepareWorkflow(
        pb.DtmRequest(Gid=gid, TransType="workflow", QueryPrepared="127.0.0.1:1/wf.Wf/Run")
    )
    assert (reply.Transaction.Gid, reply.Transaction.Status) == (gid, "prepared")
    assert list(reply.Progresses) == []


def test_bad_requests_are_invalid_argument(client: pb_grpc.DtmStub, gid: str) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: client.Submit(pb.DtmRequest(TransType="saga"))) == invalid
    bad_steps = pb.DtmRequest(Gid=gid, TransType="saga", Steps="{not json")
    assert code_of(lambda: client.Submit(bad_steps)) == invalid
    unknown = pb.DtmRequest(Gid=gid, TransType="nope")
    assert code_of(lambda: client.Submit(unknown)) == invalid
    missing = pb.DtmRequest(Gid=gid, TransType="saga", Steps='[{"action": "x/y.Z/A"}]')
    assert code_of(lambda: client.Submit(missing)) == invalid
    no_branch = pb.DtmBranchRequest(Gid=gid, TransType="tcc")
    assert code_of(lambda: client.RegisterBranch(no_branch)) == invalid


def test_unknown_gid_and_wrong_state_codes(
    client: pb_grpc.DtmStub, gbusi: GrpcEndpoints, gid: str
) -> None:
    unknown = pb.DtmRequest(Gid=gid + "-none", TransType="tcc")
    assert code_of(lambda: client.Abort(unknown)) == grpc.StatusCode.NOT_FOUND
    client.Submit(saga_request(gid, gbusi, "out"))
    # A saga cannot be aborted: FAILURE, which gRPC clients read from ABORTED.
    abort = pb.DtmRequest(Gid=gid, TransType="saga")
    assert code_of(lambda: client.Abort(abort)) == grpc.StatusCode.ABORTED
    topic = pb.DtmTopicRequest(Topic=f"none-{gid}")
    assert code_of(lambda: client.DeleteTopic(topic)) == grpc.StatusCode.NOT_FOUND


def test_topics(client: pb_grpc.DtmStub, gid: str, gbusi: GrpcEndpoints) -> None:
    topic = f"t-{gid}"
    client.Subscribe(pb.DtmTopicRequest(Topic=topic, URL=gbusi.url("sub"), Remark="r"))
    client.Unsubscribe(pb.DtmTopicRequest(Topic=topic, URL=gbusi.url("sub")))
    client.Subscribe(pb.DtmTopicRequest(Topic=topic, URL=gbusi.url("sub")))
    client.DeleteTopic(pb.DtmTopicRequest(Topic=topic))


def test_reflection_lists_the_dtm_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in answer.list_services_response.service}
    assert {"dtmgimp.Dtm", "grpc.health.v1.Health"} <= names


def test_health_is_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dtmgimp.Dtm"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
