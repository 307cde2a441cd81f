"""The workflow's part of DTM's protocol, without I/O: operations of the client core.

prepareWorkflow answers the transaction and the results recorded so far; registerBranch
records one branch operation's result; submit carries the outcome in `req_extra`. Over
HTTP a recorded result travels in a JSON string, as upstream's HTTP client sends it, so it
must be UTF-8 text; over gRPC (a `host:port` server) it is `BusiPayload` bytes, and the
workflow's branches are gRPC methods called with `dtm-*` metadata.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec

from dtm.client._core import (
    GrpcRequest,
    GrpcResponse,
    HttpRequest,
    HttpResponse,
    Op,
    Request,
    Response,
    Trans,
    call_dtm,
    call_dtm_grpc,
    check_answer,
    encode_json,
    exchange,
    exchange_grpc,
    is_grpc,
)
from dtm.errors import TransportError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import metadata_of, parse_url
from dtm.protocol.records import TransGlobal

_JSON = {"Content-Type": "application/json"}


class Progress(msgspec.Struct, kw_only=True):
    """One recorded operation of one branch."""

    branch_id: str
    op: str
    status: str
    bin_data: bytes = b""  # base64 on the wire, as Go encodes []byte


class Progresses(msgspec.Struct, kw_only=True):
    """prepareWorkflow's answer."""

    transaction: TransGlobal | None = None
    progresses: list[Progress] = msgspec.field(default_factory=list)


_progresses_decoder = msgspec.json.Decoder(Progresses)


def custom_data(name: str, data: bytes) -> str:
    """The custom data the server calls the workflow back with: its name and input."""
    return msgspec.json.encode({"name": name, "data": base64.b64encode(data).decode()}).decode()


def prepare(trans: Trans) -> Op[Progresses]:
    """`prepareWorkflow`: create the workflow, or find it with its recorded progress."""
    if trans.grpc:
        from dtm.client import _grpc

        call = GrpcRequest(trans.dtm, _grpc.method_of("prepareWorkflow"), _grpc.dtm_request(trans))
        reply = _grpc.check_status((yield from exchange_grpc(call)), f"PrepareWorkflow {trans.gid}")
        return _progresses_of(reply.body)
    request = HttpRequest("POST", f"{trans.dtm}/prepareWorkflow", trans.body(), _JSON)
    response = check_answer((yield from exchange(request)), f"prepareWorkflow {trans.gid}")
    try:
        return _progresses_decoder.decode(response.body)
    except msgspec.DecodeError as exc:
        raise TransportError(f"prepareWorkflow {trans.gid}: unexpected answer: {exc}") from exc


def _progresses_of(body: bytes) -> Progresses:
    """A `DtmProgressesReply` as the HTTP API's JSON would give it."""
    from dtm.protocol.gen import dtmgimp_pb2 as pb

    try:
        reply = pb.DtmProgressesReply.FromString(body)
    except Exception as exc:  # protobuf's DecodeError is not exported with a type
        raise TransportError(f"PrepareWorkflow answered no DtmProgressesReply: {exc}") from exc
    transaction = None
    if reply.HasField("Transaction"):
        t = reply.Transaction
        transaction = TransGlobal(
            gid=t.Gid,
            trans_type=consts.WORKFLOW,
            status=t.Status,
            rollback_reason=t.RollbackReason,
            result=t.Result,
        )
    progresses = [
        Progress(branch_id=p.BranchID, op=p.Op, status=p.Status, bin_data=p.BinData)
        for p in reply.Progresses
    ]
    return Progresses(transaction=transaction, progresses=progresses)


def recorded_text(data: bytes) -> str:
    """Data as registerBranch carries it over HTTP: a JSON string, so UTF-8 text only."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(
            "a recorded workflow result must be UTF-8 text: registerBranch carries it in a "
            "JSON string"
        ) from exc


def register(dtm: str, gid: str, branch_id: str, *, op: str, status: str, data: bytes) -> Op[None]:
    """`registerBranch`: the result of one operation of one branch."""
    if is_grpc(dtm):
        from dtm.protocol.gen import dtmgimp_pb2 as pb

        request = pb.DtmBranchRequest(
            Gid=gid,
            TransType=consts.WORKFLOW,
            BranchID=branch_id,
            BusiPayload=data,
            Data={"status": status, "op": op},
        )
        yield from call_dtm_grpc(dtm, "registerBranch", request.SerializeToString())
        return
    body = {
        "gid": gid,
        "trans_type": consts.WORKFLOW,
        "branch_id": branch_id,
        "op": op,
        "status": status,
        "data": recorded_text(data),
    }
    yield from call_dtm(dtm, "registerBranch", msgspec.json.encode(body))


def submit(dtm: str, gid: str, status: str, *, result: bytes = b"", reason: str = "") -> Op[None]:
    """`submit`: the workflow's outcome, its result base64 as upstream sends it."""
    extra = {
        "status": status,
        "rollback_reason": reason,
        "result": base64.b64encode(result).decode(),
    }
    if is_grpc(dtm):
        from dtm.protocol.gen import dtmgimp_pb2 as pb

        request = pb.DtmRequest(Gid=gid, TransType=consts.WORKFLOW, ReqExtra=extra)
        yield from call_dtm_grpc(dtm, "submit", request.SerializeToString())
        return
    body = {"gid": gid, "trans_type": consts.WORKFLOW, "req_extra": extra}
    yield from call_dtm(dtm, "submit", msgspec.json.encode(body))


def branch_request(
    dtm: str,
    method: str,
    url: str,
    payload: Any,
    *,
    gid: str,
    branch_id: str,
    op: str,
    headers: Mapping[str, str],
) -> Request:
    """A call to a business branch, by the workflow's protocol.

    HTTP: `method` to `url` with upstream's workflow query parameters; bytes are sent as
    they are, anything else as JSON. gRPC: `url` is `host:port/package.Service/Method`,
    the payload a protobuf message or its bytes, the same facts in `dtm-*` metadata and
    the headers as metadata too (`method` does not apply).
    """
    if is_grpc(dtm):
        from dtm.client import _grpc

        target, path = parse_url(url)
        metadata = metadata_of(gid, consts.WORKFLOW, branch_id, op, dtm=dtm, headers=headers)
        return GrpcRequest(target, path, _grpc.payload_bytes(payload), metadata)
    params = urlencode(
        {"gid": gid, "trans_type": consts.WORKFLOW, "branch_id": branch_id, "op": op}
    )
    full = f"{url}{'&' if '?' in url else '?'}{params}"
    if payload is None:
        body = None
    elif isinstance(payload, bytes | bytearray | memoryview):
        body = bytes(payload)
    else:
        body = encode_json(payload)
    return HttpRequest(method, full, body, {**_JSON, **headers})


def read_answer(response: Response, what: str) -> HttpResponse:
    """A branch's answer read as DTM results (`FailureError`, `OngoingError`,
    `TransportError`); a gRPC reply is given as a 200 whose body is the reply message."""
    if isinstance(response, GrpcResponse):
        from dtm.client import _grpc

        return HttpResponse(200, _grpc.check_status(response, what).body)
    return check_answer(response, what)


def answer_text(response: Response) -> str:
    """What a failed answer says: the HTTP body, or the gRPC status details."""
    return response.details if isinstance(response, GrpcResponse) else response.text
