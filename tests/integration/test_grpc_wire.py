"""Upstream's gRPC wire format, checked without our generated code.

A client generated from upstream's dtmgimp.proto sends protobuf bytes laid out by that
file's field numbers. Here those bytes are written by hand, from the numbers transcribed
below, and sent as raw calls to `/dtmgimp.Dtm/<Method>`; replies are decoded by hand too.
Had our .proto drifted from upstream's (a renumbered field, a renamed package or method),
these calls would be misread, whatever our own stubs say.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from tests.grpc_busi import GrpcEndpoints
from tests.harness import DtmServer

# Upstream's field numbers (client/dtmgrpc/dtmgpb/dtmgimp.proto).
REQ_GID, REQ_TRANS_TYPE, REQ_OPTIONS, REQ_CUSTOM, REQ_PAYLOADS = 1, 2, 3, 4, 5
REQ_QUERY_PREPARED, REQ_STEPS, REQ_EXTRA, REQ_ROLLBACK_REASON = 6, 7, 8, 9
OPT_WAIT, OPT_TIMEOUT_TO_FAIL, OPT_RETRY_INTERVAL, OPT_BRANCH_HEADERS = 1, 2, 3, 5
OPT_REQUEST_TIMEOUT, OPT_RETRY_LIMIT = 6, 7
BR_GID, BR_TRANS_TYPE, BR_BRANCH_ID, BR_OP, BR_DATA, BR_PAYLOAD = 1, 2, 3, 4, 5, 6
GID_REPLY_GID = 1
PROG_TRANSACTION, PROG_PROGRESSES = 1, 2
TRANS_GID, TRANS_STATUS = 1, 2
TOPIC_TOPIC, TOPIC_URL = 1, 2


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | str | int | bool) -> bytes:
    """One field: varint for ints and bools, length-delimited for text and bytes."""
    if isinstance(value, bool | int):
        return varint(number << 3) + varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def map_field(number: int, entries: dict[str, str]) -> bytes:
    """A map<string, string>: one nested message {1: key, 2: value} per entry."""
    return b"".join(field(number, field(1, k) + field(2, v)) for k, v in entries.items())


def decode(data: bytes) -> dict[int, list[bytes | int]]:
    """Fields of one message: varints as ints, length-delimited values as bytes."""
    found: dict[int, list[bytes | int]] = {}
    i = 0

    def read_varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while i < len(data):
        tag = read_varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            found.setdefault(number, []).append(read_varint())
        elif wire == 2:
            size = read_varint()
            found.setdefault(number, []).append(data[i : i + size])
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return found


@pytest.fixture
def raw(dtm: DtmServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(dtm.grpc_target) as channel:
        yield channel


def call(channel: grpc.Channel, method: str, body: bytes) -> bytes:
    reply: bytes = channel.unary_unary(f"/dtmgimp.Dtm/{method}")(body, timeout=15)
    return reply


def test_new_gid_reply_layout(raw: grpc.Channel) -> None:
    reply = decode(call(raw, "NewGid", b""))
    (gid,) = reply[GID_REPLY_GID]
    assert isinstance(gid, bytes) and gid


def test_saga_request_layout(
    raw: grpc.Channel, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    steps = [{"action": gbusi.url("out"), "compensate": gbusi.url("out_revert")}]
    options = (
        field(OPT_WAIT, True)
        + field(OPT_RETRY_INTERVAL, 7)
        + map_field(OPT_BRANCH_HEADERS, {"x-tenant": "t9"})
        + field(OPT_REQUEST_TIMEOUT, 5)
        + field(OPT_RETRY_LIMIT, 4)
        + field(OPT_TIMEOUT_TO_FAIL, 60)
    )
    request = (
        field(REQ_GID, gid)
        + field(REQ_TRANS_TYPE, "saga")
        + field(REQ_OPTIONS, options)
        + field(REQ_STEPS, json.dumps(steps))
        + field(REQ_PAYLOADS, b"\x08\x01payload")
        + field(REQ_CUSTOM, json.dumps({"concurrent": False}))
    )
    call(raw, "Submit", request)  # WaitResult: answers once the saga succeeded
    found = dtm.query(gid)["transaction"]
    assert (found["status"], found["protocol"]) == ("succeed", "grpc")
    stored = json.loads(found["options"])
    assert stored["retry_interval"] == 7
    assert stored["retry_limit"] == 4
    assert stored["request_timeout"] == 5
    assert stored["timeout_to_fail"] == 60
    (out,) = gbusi.calls("out")
    assert out.payload == b"\x08\x01payload"
    assert out.metadata["x-tenant"] == "t9"
    assert out.metadata["dtm-gid"] == gid


def test_branch_request_layout(
    raw: grpc.Channel, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    call(raw, "Prepare", field(REQ_GID, gid) + field(REQ_TRANS_TYPE, "tcc"))
    branch = (
        field(BR_GID, gid)
        + field(BR_TRANS_TYPE, "tcc")
        + field(BR_BRANCH_ID, "01")
        + map_field(BR_DATA, {"confirm": gbusi.url("confirm"), "cancel": gbusi.url("cancel")})
        + field(BR_PAYLOAD, b"\x01busi")
    )
    call(raw, "RegisterBranch", branch)
    call(raw, "Submit", field(REQ_GID, gid) + field(REQ_TRANS_TYPE, "tcc"))
    dtm.wait_status(gid, "succeed")
    (confirm,) = gbusi.wait_calls("confirm", 1)
    assert confirm.payload == b"\x01busi"
    assert (confirm.metadata["dtm-branch_id"], confirm.metadata["dtm-op"]) == ("01", "confirm")


def test_abort_carries_the_rollback_reason(raw: grpc.Channel, dtm: DtmServer, gid: str) -> None:
    call(raw, "Prepare", field(REQ_GID, gid) + field(REQ_TRANS_TYPE, "tcc"))
    reason = field(REQ_ROLLBACK_REASON, "stock ran out")
    call(raw, "Abort", field(REQ_GID, gid) + field(REQ_TRANS_TYPE, "tcc") + reason)
    found = dtm.wait_status(gid, "failed")["transaction"]
    assert found["rollback_reason"] == "stock ran out"


def test_msg_query_prepared_layout(
    raw: grpc.Channel, dtm: DtmServer, gbusi: GrpcEndpoints, gid: str
) -> None:
    steps = [{"action": gbusi.url("a")}]
    prepare = (
        field(REQ_GID, gid)
        + field(REQ_TRANS_TYPE, "msg")
        + field(REQ_STEPS, json.dumps(steps))
        + field(REQ_PAYLOADS, b"pa")
        + field(REQ_QUERY_PREPARED, gbusi.url("query"))
    )
    call(raw, "Prepare", prepare)
    assert dtm.query(gid)["transaction"]["query_prepared"] == gbusi.url("query")
    call(raw, "Submit", field(REQ_GID, gid) + field(REQ_TRANS_TYPE, "msg"))
    dtm.wait_status(gid, "succeed")
    assert gbusi.wait_calls("a", 1)[0].payload == b"pa"


def test_prepare_workflow_reply_layout(raw: grpc.Channel, gid: str) -> None:
    request = (
        field(REQ_GID, gid)
        + field(REQ_TRANS_TYPE, "workflow")
        + field(REQ_CUSTOM, json.dumps({"name": "wf", "data": ""}))
        + field(REQ_QUERY_PREPARED, "127.0.0.1:1/workflow.Workflow/Execute")
    )
    reply = decode(call(raw, "PrepareWorkflow", request))
    (transaction,) = reply[PROG_TRANSACTION]
    assert isinstance(transaction, bytes)
    trans = decode(transaction)
    assert trans[TRANS_GID] == [gid.encode()]
    assert trans[TRANS_STATUS] == [b"prepared"]
    assert PROG_PROGRESSES not in reply


def test_topic_request_layout(raw: grpc.Channel, gbusi: GrpcEndpoints, gid: str) -> None:
    topic = field(TOPIC_TOPIC, f"wire-{gid}") + field(TOPIC_URL, gbusi.url("sub"))
    call(raw, "Subscribe", topic)
    call(raw, "Unsubscribe", topic)
    with pytest.raises(grpc.RpcError) as info:
        call(raw, "Unsubscribe", topic)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
