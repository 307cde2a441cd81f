"""The SDK's part of DTM's gRPC protocol, without I/O: messages of the `dtmgimp.Dtm` service,
branch payloads and metadata, and how gRPC status codes read as DTM results.

Imported only by a client whose server address is a gRPC one, so an HTTP-only install never
loads protobuf. Message building follows upstream's `dtmgrpc`: steps as JSON text, payloads
as the raw bytes of the business's request message, options in `DtmTransOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from dtm.errors import FailureError, OngoingError, TransportError
from dtm.protocol import consts
from dtm.protocol.gen import dtmgimp_pb2 as pb
from dtm.protocol.grpc_calls import metadata_of

if TYPE_CHECKING:
    from dtm.client._core import GrpcResponse, Trans

SERVICE = "/dtmgimp.Dtm/"

# How much of an unexpected answer an exception message quotes.
_QUOTED = 300


def method_of(operation: str) -> str:
    """The `dtmgimp.Dtm` method of an HTTP operation name: `registerBranch` -> `RegisterBranch`."""
    return SERVICE + operation[:1].upper() + operation[1:]


def payload_bytes(payload: Any) -> bytes:
    """A branch payload as gRPC sends it: the serialised request message.

    Takes bytes as they are, a protobuf message (anything with `SerializeToString`), or
    None for an empty message; nothing else, as a gRPC branch cannot read JSON.
    """
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    serialise = getattr(payload, "SerializeToString", None)
    if callable(serialise):
        data = serialise()
        if isinstance(data, bytes):
            return data
    raise TypeError(
        f"a gRPC branch payload is a protobuf message or bytes, not {type(payload).__name__}"
    )


def dtm_request(trans: Trans) -> bytes:
    """`DtmRequest` of the whole transaction, as upstream's `GetDtmRequest` fills it."""
    o = trans.options
    request = pb.DtmRequest(
        Gid=trans.gid,
        TransType=trans.trans_type,
        TransOptions=pb.DtmTransOptions(
            WaitResult=o.wait_result,
            TimeoutToFail=o.timeout_to_fail,
            RetryInterval=o.retry_interval,
            BranchHeaders=dict(o.branch_headers),
            RequestTimeout=o.request_timeout,
            RetryLimit=o.retry_limit,
        ),
        CustomedData=trans.custom_data,
        BinPayloads=trans.bin_payloads,
        QueryPrepared=trans.query_prepared,
        Steps=msgspec.json.encode(trans.steps).decode() if trans.steps else "",
        RollbackReason=trans.rollback_reason,
    )
    return request.SerializeToString()


def branch_request(
    trans: Trans, branch_id: str, data: Mapping[str, str], busi_payload: bytes
) -> bytes:
    """`DtmBranchRequest` registering one TCC or XA branch."""
    request = pb.DtmBranchRequest(
        Gid=trans.gid,
        TransType=trans.trans_type,
        BranchID=branch_id,
        Data=dict(data),
        BusiPayload=busi_payload,
    )
    return request.SerializeToString()


def gid_of(body: bytes) -> str:
    """The gid of a `DtmGidReply`."""
    try:
        gid = pb.DtmGidReply.FromString(body).Gid
    except Exception as exc:  # protobuf raises its own DecodeError, not exported typed
        raise TransportError(f"NewGid answered no DtmGidReply: {exc}") from exc
    if not gid:
        raise TransportError("NewGid answered an empty gid")
    return gid


def branch_metadata(trans: Trans, branch_id: str, op: str, url: str) -> tuple[tuple[str, str], ...]:
    """Metadata of a branch call as upstream's `InvokeBranch` sends it: `dtm-dtm` is this
    client's server (for nested TCC), and an XA branch gets `dtm-phase2_url`."""
    return metadata_of(
        trans.gid,
        trans.trans_type,
        branch_id,
        op,
        dtm=trans.dtm,
        headers=trans.options.branch_headers,
        phase2_url=url if trans.trans_type == consts.XA else "",
    )


def check_status(response: GrpcResponse, what: str) -> GrpcResponse:
    """Read a gRPC status as DTM results, as upstream's `GrpcError2DtmError`: ABORTED is a
    failure (or ongoing when its message is exactly ONGOING, the form of old clients),
    FAILED_PRECONDITION is ongoing, OK is success; any other code leaves the outcome
    unknown (`TransportError`), so retrying may help."""
    code, details = response.code, response.details[:_QUOTED]
    if code == "OK":
        return response
    if code == "ABORTED":
        if details == consts.RESULT_ONGOING:
            raise OngoingError(f"{what}: {details}")
        raise FailureError(f"{what}: {details}")
    if code == "FAILED_PRECONDITION":
        raise OngoingError(f"{what}: {details}")
    raise TransportError(f"{what}: gRPC {code}: {details}")
