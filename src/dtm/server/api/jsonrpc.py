"""Upstream's JSON-RPC 2.0 endpoint, `POST /api/json-rpc` on the HTTP port.

Methods are upstream's (newGid, prepare, submit, abort, registerBranch), each taking as
`params` the body its HTTP route takes; this server adds query (`{"gid": ...}`), forceStop,
prepareWorkflow and resetNextCronTime under their HTTP names. Results: newGid
`{"gid": ...}`, query `{"transaction", "branches"}`, prepareWorkflow
`{"transaction", "progresses"}`, null for the others, as upstream.

Every answer is HTTP 200, as upstream, with the outcome in the body; only a body over
the HTTP API's limit is refused at the HTTP level (413, unread). Error codes (`_ERRORS`
maps the Service's exceptions, in one place):

    -32700 parse error          the body is not JSON
    -32600 invalid request      not a JSON-RPC 2.0 request object with an id
    -32601 method not found
    -32602 invalid params       params cannot be accepted, or name no transaction
    -32901 FAILURE              as HTTP 409: retrying will not help
    -32902 ONGOING              as HTTP 425: ask again later (upstream answers -32603)
    -32603 internal error       the store is unreachable, or a bug (logged)

Unlike upstream, an answer carries either `result` or `error`, never both (upstream sends
the other as null; clients that test `error != null` read both forms alike), and a
numeric id is accepted and echoed as well as a string one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.messages import TransRequest
from dtm.server.api.http import TooLarge, error_response, read_body
from dtm.server.intake import BadRequest
from dtm.server.service import Service
from dtm.server.stores.base import StoreUnavailable

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NAMES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PATH",
    "routes",
]

log = logging.getLogger(__name__)

PATH = "/api/json-rpc"
METHOD_NAMES = (
    "newGid",
    "prepare",
    "submit",
    "abort",
    "registerBranch",
    "forceStop",
    "resetNextCronTime",
    "prepareWorkflow",
    "query",
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# The Service's exceptions as JSON-RPC error codes; the first matching class wins.
_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (FailureError, consts.JRPC_CODE_FAILURE),
    (OngoingError, consts.JRPC_CODE_ONGOING),
    (BadRequest, INVALID_PARAMS),
    (LookupError, INVALID_PARAMS),
    (StoreUnavailable, INTERNAL_ERROR),
)

Id = str | int | float | None


class _Envelope(msgspec.Struct):
    jsonrpc: str = ""
    method: str = ""
    params: msgspec.Raw = msgspec.Raw(b"null")
    id: Id = None


class _Gid(msgspec.Struct):
    gid: str = ""


class RpcError(Exception):
    """An error answered with its own code, before any method runs."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_trans_decoder = msgspec.json.Decoder(TransRequest)
_map_decoder = msgspec.json.Decoder(dict[str, str | None])
_gid_decoder = msgspec.json.Decoder(_Gid)

Method = Callable[[msgspec.Raw], Awaitable[Any]]
T = TypeVar("T")


def _params(decoder: msgspec.json.Decoder[T], params: msgspec.Raw) -> T:
    try:
        return decoder.decode(params)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed params: {exc}") from None


def error_of(exc: Exception) -> tuple[int, str]:
    """The JSON-RPC code and message answering one of the Service's exceptions."""
    if isinstance(exc, RpcError):
        return exc.code, str(exc)
    for cls, code in _ERRORS:
        if isinstance(exc, cls):
            if isinstance(exc, StoreUnavailable):
                log.error("store unavailable: %s", exc)
                return code, f"store unavailable: {exc}"
            return code, str(exc).strip("'\"")
    log.exception("unexpected error", exc_info=exc)
    return INTERNAL_ERROR, f"internal error: {type(exc).__name__}"


def _answer(rid: Id, *, result: Any = None, error: tuple[int, str] | None = None) -> Response:
    doc: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    if error is None:
        doc["result"] = result
    else:
        doc["error"] = {"code": error[0], "message": error[1]}
    return Response(_encoder.encode(doc), status_code=200, media_type="application/json")


def _methods(service: Service) -> dict[str, Method]:
    async def new_gid(_: msgspec.Raw) -> Any:
        return {"gid": service.new_gid()}

    async def prepare(params: msgspec.Raw) -> Any:
        await service.prepare(_params(_trans_decoder, params))

    async def submit(params: msgspec.Raw) -> Any:
        await service.submit(_params(_trans_decoder, params))

    async def abort(params: msgspec.Raw) -> Any:
        await service.abort(_params(_trans_decoder, params))

    async def force_stop(params: msgspec.Raw) -> Any:
        await service.force_stop(_params(_trans_decoder, params))

    async def reset_next_cron_time(params: msgspec.Raw) -> Any:
        await service.reset_next_cron_time(_params(_trans_decoder, params))

    async def register_branch(params: msgspec.Raw) -> Any:
        # Upstream reads params as a string map; null is taken as the empty string.
        raw = _params(_map_decoder, params)
        await service.register_branch({k: v or "" for k, v in raw.items()})

    async def prepare_workflow(params: msgspec.Raw) -> Any:
        found = await service.prepare_workflow(_params(_trans_decoder, params))
        return {"transaction": found.transaction, "progresses": found.branches}

    async def query(params: msgspec.Raw) -> Any:
        found = await service.query(_params(_gid_decoder, params).gid)
        return {"transaction": found.transaction, "branches": found.branches}

    return {
        "newGid": new_gid,
        "prepare": prepare,
        "submit": submit,
        "abort": abort,
        "registerBranch": register_branch,
        "forceStop": force_stop,
        "resetNextCronTime": reset_next_cron_time,
        "prepareWorkflow": prepare_workflow,
        "query": query,
    }


def _valid_id(rid: Id) -> bool:
    # Upstream requires a non-empty id: notifications are refused.
    return rid is not None and rid != ""


def routes(service: Service) -> list[Route]:
    """The JSON-RPC endpoint, bound to `service`."""
    methods = _methods(service)
    assert tuple(methods) == METHOD_NAMES, "METHOD_NAMES (documented) and methods differ"

    async def handle(request: Request) -> Response:
        rid: Id = None
        try:
            body = await read_body(request)
        except TooLarge as exc:
            return error_response(exc)
        try:
            try:
                envelope = _envelope_decoder.decode(body)
            except msgspec.ValidationError as exc:
                raise RpcError(INVALID_REQUEST, f"Bad json request: {exc}") from None
            except msgspec.DecodeError as exc:
                raise RpcError(PARSE_ERROR, f"Parse json error: {exc}") from None
            if _valid_id(envelope.id):
                rid = envelope.id
            if rid is None or envelope.jsonrpc != "2.0":
                raise RpcError(
                    INVALID_REQUEST, 'Bad json request: needs "jsonrpc": "2.0" and an id'
                )
            method = methods.get(envelope.method)
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {envelope.method}")
            result = await method(envelope.params)
        except Exception as exc:
            return _answer(rid, error=error_of(exc))
        return _answer(rid, result=result)

    return [Route(PATH, handle, methods=["POST"])]
