"""Workflows over gRPC: the server resumes an unfinished workflow as upstream does, by calling
its QueryPrepared URL (`host:port/workflow.Workflow/Execute`) with a `workflow.WorkflowData`
message carrying the workflow's data, and the workflow's name as the `dtm-op` metadata."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import grpc
import pytest

from dtm.protocol.gen import dtmgimp_pb2 as pb
from dtm.protocol.gen import dtmgimp_pb2_grpc as pb_grpc
from dtm.protocol.gen import wf_pb2
from tests.grpc_busi import GrpcBusiness, GrpcCall
from tests.harness import DtmServer

EXECUTE = "workflow.Workflow/Execute"


@pytest.fixture(scope="module")
def wf_app() -> Iterator[GrpcBusiness]:
    stub = GrpcBusiness()
    yield stub
    stub.close()


@pytest.fixture
def client(dtm: DtmServer) -> Iterator[pb_grpc.DtmStub]:
    with grpc.insecure_channel(dtm.grpc_target) as channel:
        yield pb_grpc.DtmStub(channel)


def wait_callbacks(app: GrpcBusiness, gid: str, count: int, timeout: float) -> list[GrpcCall]:
    deadline = time.monotonic() + timeout
    while True:
        found = [c for c in app.calls("Execute") if c.metadata.get("dtm-gid") == gid]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{gid}: {len(found)} call-backs, wanted {count}")
        time.sleep(0.02)


def test_unfinished_grpc_workflow_is_called_back_with_workflow_data(
    client: pb_grpc.DtmStub, dtm: DtmServer, wf_app: GrpcBusiness, gid: str
) -> None:
    data = b'\x00\xff{"amount":30}'
    # What upstream's gRPC workflow client sends: custom data as JSON, Go's []byte as base64.
    custom = {"name": "transfer", "data": base64.b64encode(data).decode()}
    client.PrepareWorkflow(
        pb.DtmRequest(
            Gid=gid,
            TransType="workflow",
            QueryPrepared=f"127.0.0.1:{wf_app.port}/{EXECUTE}",
            CustomedData=json.dumps(custom),
            # A short interval so the left-alone workflow is called back within the test.
            TransOptions=pb.DtmTransOptions(RetryInterval=1),
        )
    )

    (call, *_) = wait_callbacks(wf_app, gid, 1, timeout=10)

    assert call.method == "/" + EXECUTE
    message = wf_pb2.WorkflowData.FromString(call.payload)
    assert message.Data == data
    assert call.payload == wf_pb2.WorkflowData(Data=data).SerializeToString()
    assert {k: call.metadata.get(k) for k in ("dtm-gid", "dtm-trans_type", "dtm-op")} == {
        "dtm-gid": gid,
        "dtm-trans_type": "workflow",
        "dtm-op": "transfer",
    }
    assert call.metadata.get("dtm-branch_id") == "00"
    assert dtm.status(gid) == "prepared"

    # The app resumes and submits its outcome: the workflow is finished.
    client.Submit(pb.DtmRequest(Gid=gid, TransType="workflow", ReqExtra={"status": "succeed"}))
    dtm.wait_status(gid, "succeed")
