"""Upstream's HTTP API under /api/dtmsvr: same routes, JSON fields, result bodies and codes.

Codes: 200 with `{"dtm_result":"SUCCESS"}`; 409 FAILURE and 425 ONGOING with a `message`;
400 for a request that cannot be accepted, 404 for an unknown gid or topic, 413 for an
oversize body, 503 when the store cannot be reached; nothing was stored for any of these.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dtm import __version__
from dtm.errors import FailureError, OngoingError
from dtm.protocol import consts
from dtm.protocol.messages import TransRequest
from dtm.server.intake import BadRequest
from dtm.server.service import Service, millis_to_datetime
from dtm.server.stores.base import ScanFilter, StoreUnavailable

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_LIMIT = 1000

_encoder = msgspec.json.Encoder()
_trans_decoder = msgspec.json.Decoder(TransRequest)
_map_decoder = msgspec.json.Decoder(dict[str, str | int | float | bool | None])

_SUCCESS_BODY = _encoder.encode({"dtm_result": consts.RESULT_SUCCESS})

Handler = Callable[[Request], Awaitable[Any]]


class TooLarge(Exception):
    """The body is over MAX_BODY bytes."""


def json_response(content: Any, status: int = 200) -> Response:
    body = _SUCCESS_BODY if content is None else _encoder.encode(content)
    return Response(body, status_code=status, media_type="application/json")


def error_response(exc: Exception) -> Response:
    if isinstance(exc, FailureError):
        body: dict[str, str] = {"dtm_result": consts.RESULT_FAILURE, "message": str(exc)}
        return json_response(body, consts.HTTP_FAILURE)
    if isinstance(exc, OngoingError):
        body = {"dtm_result": consts.RESULT_ONGOING, "message": str(exc)}
        return json_response(body, consts.HTTP_ONGOING)
    if isinstance(exc, BadRequest):
        return json_response({"message": str(exc)}, 400)
    if isinstance(exc, LookupError):
        return json_response({"message": str(exc).strip("'\"")}, 404)
    if isinstance(exc, TooLarge):
        return json_response({"message": f"request body over {MAX_BODY} bytes"}, 413)
    if isinstance(exc, StoreUnavailable):
        log.error("store unavailable: %s", exc)
        return json_response({"message": f"store unavailable: {exc}"}, 503)
    log.exception("unexpected error", exc_info=exc)
    return json_response({"message": f"internal error: {type(exc).__name__}"}, 500)


def endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            result = await fn(request)
        except Exception as exc:
            return error_response(exc)
        return result if isinstance(result, Response) else json_response(result)

    return handle


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def trans_request(request: Request) -> TransRequest:
    try:
        return _trans_decoder.decode(await read_body(request))
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed request body: {exc}") from None


def _int_param(request: Request, name: str, default: int, *, upper: int | None = None) -> int:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} should be a whole number") from None
    if value <= 0:
        raise BadRequest(f"{name} should be positive")
    if upper is not None and value > upper:
        raise BadRequest(f"{name} should be between 1 and {upper}")
    return value


def routes(service: Service) -> list[Route]:
    """Every route of upstream's server API, bound to `service`."""

    async def version(_: Request) -> Any:
        return {"version": __version__}

    async def new_gid(_: Request) -> Any:
        return {"gid": service.new_gid(), "dtm_result": consts.RESULT_SUCCESS}

    async def prepare(request: Request) -> Any:
        await service.prepare(await trans_request(request))

    async def submit(request: Request) -> Any:
        await service.submit(await trans_request(request))

    async def abort(request: Request) -> Any:
        await service.abort(await trans_request(request))

    async def force_stop(request: Request) -> Any:
        await service.force_stop(await trans_request(request))

    async def reset_next_cron_time(request: Request) -> Any:
        await service.reset_next_cron_time(await trans_request(request))

    async def register_branch(request: Request) -> Any:
        try:
            raw = _map_decoder.decode(await read_body(request))
        except msgspec.DecodeError as exc:
            raise BadRequest(f"malformed request body: {exc}") from None
        data = {
            k: "" if v is None else v if isinstance(v, str) else _encoder.encode(v).decode()
            for k, v in raw.items()
        }
        await service.register_branch(data)

    async def prepare_workflow(request: Request) -> Any:
        found = await service.prepare_workflow(await trans_request(request))
        return {"transaction": found.transaction, "progresses": found.branches}

    async def query(request: Request) -> Any:
        found = await service.query(request.query_params.get("gid", ""))
        return {"transaction": found.transaction, "branches": found.branches}

    async def all_(request: Request) -> Any:
        q = request.query_params
        where = ScanFilter(
            status=q.get("status") or None,
            trans_type=q.get("transType") or None,
            create_time_start=millis_to_datetime(q.get("createTimeStart", ""), "createTimeStart"),
            create_time_end=millis_to_datetime(q.get("createTimeEnd", ""), "createTimeEnd"),
        )
        page = await service.all(
            gid=q.get("gid", ""),
            position=q.get("position", ""),
            limit=_int_param(request, "limit", 100, upper=MAX_LIMIT),
            where=where,
        )
        return {"transactions": page.items, "next_position": page.next_position}

    async def reset_cron_time(request: Request) -> Any:
        raw = request.query_params.get("timeout", "")
        after = float(_int_param(request, "timeout", 1)) if raw else None
        count, remaining = await service.reset_cron_time(
            after=after, limit=_int_param(request, "limit", 100, upper=MAX_LIMIT)
        )
        return {"has_remaining": remaining, "succeed_count": count}

    async def subscribe(request: Request) -> Any:
        q = request.query_params
        await service.subscribe(q.get("topic", ""), q.get("url", ""), q.get("remark", ""))

    async def unsubscribe(request: Request) -> Any:
        q = request.query_params
        await service.unsubscribe(q.get("topic", ""), q.get("url", ""))

    async def delete_topic(request: Request) -> Any:
        await service.delete_topic(request.path_params["name"])

    async def scan_kv(request: Request) -> Any:
        q = request.query_params
        kvs, position = await service.scan_kv(
            q.get("cat", ""),
            position=q.get("position", ""),
            limit=_int_param(request, "limit", 100, upper=MAX_LIMIT),
        )
        return {"kv": kvs, "next_position": position}

    async def query_kv(request: Request) -> Any:
        q = request.query_params
        return {"kv": await service.query_kv(q.get("cat", ""), q.get("key", ""))}

    base = "/api/dtmsvr"
    table: list[tuple[str, Handler, list[str]]] = [
        ("/version", version, ["GET"]),
        ("/newGid", new_gid, ["GET"]),
        ("/prepare", prepare, ["POST"]),
        ("/submit", submit, ["POST"]),
        ("/abort", abort, ["POST"]),
        ("/forceStop", force_stop, ["POST"]),
        ("/registerBranch", register_branch, ["POST"]),
        ("/registerXaBranch", register_branch, ["POST"]),
        ("/registerTccBranch", register_branch, ["POST"]),
        ("/prepareWorkflow", prepare_workflow, ["POST"]),
        ("/query", query, ["GET"]),
        ("/all", all_, ["GET"]),
        ("/resetCronTime", reset_cron_time, ["GET"]),
        ("/resetNextCronTime", reset_next_cron_time, ["POST"]),
        ("/subscribe", subscribe, ["GET"]),
        ("/unsubscribe", unsubscribe, ["GET"]),
        ("/topic/{name}", delete_topic, ["DELETE"]),
        ("/scanKV", scan_kv, ["GET"]),
        ("/queryKV", query_kv, ["GET"]),
    ]
    return [Route(base + path, endpoint(fn), methods=methods) for path, fn, methods in table]
