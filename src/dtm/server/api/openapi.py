"""OpenAPI 3.1 description of the server's HTTP API, served at /api/dtmsvr/openapi.json.

`POST /api/json-rpc` (upstream's JSON-RPC 2.0 endpoint) is one operation here, its methods
an enum; its codes are in dtm.server.api.jsonrpc. Request bodies and records are generated
from the msgspec types the server decodes and encodes with, so they cannot drift from the
code. Paths, parameters and answers are written here by hand;
tests/integration/test_openapi.py checks them against the routes the app serves and fuzzes a
live server against them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dtm import __version__
from dtm.protocol import consts
from dtm.protocol.messages import TransRequest
from dtm.protocol.records import KV, TransBranch, TransGlobal
from dtm.server.api import jsonrpc
from dtm.server.api.http import MAX_BODY, MAX_LIMIT

__all__ = ["build_openapi"]

BASE = "/api/dtmsvr"
JSON = "application/json"

_REF = "#/components/schemas/{name}"
_RECORDS: tuple[type[msgspec.Struct], ...] = (TransGlobal, TransBranch, KV)
_STATUSES = ", ".join(
    [consts.PREPARED, consts.SUBMITTED, consts.ABORTING, consts.SUCCEED, consts.FAILED]
)

# Meaning of fields the type alone does not tell; applied to the generated schemas.
_FIELD_NOTES: dict[str, dict[str, str]] = {
    "TransRequest": {
        "gid": "Global transaction id chosen by the client (see newGid): at most 128 "
        "characters, no white space or control characters. Required by every operation.",
        "trans_type": f"One of {', '.join(sorted(consts.TRANS_TYPES))}.",
        "steps": "Saga: one object per step with `action` and `compensate` URLs. Msg: one "
        "object per step with an `action` URL or `topic://<name>`. A step may carry `data` "
        "(its payload) and `request_timeout` (whole seconds, this server's addition).",
        "payloads": "One payload per step (the step's JSON body), unless steps carry `data`.",
        "bin_payloads": "One binary payload per step, base64 encoded (gRPC clients' form); "
        "used instead of `payloads` when given.",
        "custom_data": "JSON text. Saga: `orders` and `concurrent`; msg: `delay` seconds.",
        "query_prepared": "URL the server calls to ask whether a prepared message should "
        "be submitted or failed; for a workflow, the URL that resumes it.",
        "protocol": "http (default), grpc or json-rpc.",
        "req_extra": "A workflow submit carries `status` (succeed or failed), "
        "`rollback_reason` and `result` here.",
        "wait_result": "Answer only when the transaction has finished, or ONGOING after "
        "the request timeout plus a short margin.",
        "timeout_to_fail": "Seconds after which an unfinished transaction is rolled back "
        "(a prepared message is checked back through query_prepared instead); 0 means the "
        "server's TimeoutToFail, and no timeout for a saga.",
        "request_timeout": "Seconds one branch call may take; 0 means the server's.",
        "retry_interval": "Seconds before the first retry; 0 means the server's.",
        "branch_headers": "HTTP headers added to every branch call.",
        "retry_limit": "Attempts after which a branch stops being retried; 0 is no limit.",
    },
    "TransGlobal": {
        "status": f"One of {_STATUSES}.",
        "options": "The transaction's options as JSON text; empty when all are defaults.",
        "next_cron_interval": "Seconds between the next retries.",
        "owner": "The processor that holds the transaction's lease.",
    },
    "TransBranch": {
        "bin_data": "The branch's payload, base64 encoded.",
        "op": "action, compensate, confirm, cancel, commit, rollback or a workflow step name.",
        "status": f"One of {consts.PREPARED}, {consts.SUCCEED}, {consts.FAILED}.",
    },
    "KV": {"cat": "Category; topics are in `topics`.", "version": "Bumped on every change."},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _is_datetime(t: msgspec.inspect.Type) -> bool:
    if isinstance(t, msgspec.inspect.DateTimeType):
        return True
    return isinstance(t, msgspec.inspect.UnionType) and any(
        isinstance(u, msgspec.inspect.DateTimeType) for u in t.types
    )


def _generated_schemas() -> dict[str, Any]:
    """Schemas of the msgspec types; msgspec leaves datetimes as bare strings, so they are
    marked `date-time` here (the encoder writes RFC 3339)."""
    _, schemas = msgspec.json.schema_components([TransRequest, *_RECORDS], ref_template=_REF)
    for cls in _RECORDS:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        props = schemas[cls.__name__]["properties"]
        for f in info.fields:
            if _is_datetime(f.type):
                prop = props[f.encode_name]
                for branch in prop.get("anyOf", [prop]):
                    if branch.get("type") == "string":
                        branch["format"] = "date-time"
                prop["description"] = "RFC 3339 time, null when not set."
    for name, notes in _FIELD_NOTES.items():
        props = schemas[name]["properties"]
        for field, text in notes.items():
            props[field]["description"] = text  # KeyError here: a note outlived its field
    return schemas


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _result(value: str) -> dict[str, Any]:
    return {"type": "string", "const": value}


def _hand_schemas() -> dict[str, Any]:
    return {
        "Success": _obj(["dtm_result"], dtm_result=_result(consts.RESULT_SUCCESS)),
        "Failure": _obj(
            ["dtm_result", "message"],
            dtm_result=_result(consts.RESULT_FAILURE),
            message={"type": "string"},
        ),
        "Ongoing": _obj(
            ["dtm_result", "message"],
            dtm_result=_result(consts.RESULT_ONGOING),
            message={"type": "string"},
        ),
        "Error": _obj(["message"], message={"type": "string", "description": "What went wrong."}),
        "RegisterBranchRequest": {
            "type": "object",
            "description": "Upstream's string map. Values other than strings are taken as their "
            "JSON text, null as the empty string; nested objects and arrays are refused.",
            "properties": {
                "gid": {"type": "string"},
                "trans_type": {"type": "string", "description": "tcc, xa or workflow."},
                "branch_id": {"type": "string", "description": "At most 128 characters."},
                "data": {"type": "string", "description": "The branch's payload."},
                "confirm": {"type": "string", "description": "TCC: the confirm URL."},
                "cancel": {"type": "string", "description": "TCC: the cancel URL."},
                "url": {"type": "string", "description": "XA: the commit and rollback URL."},
                "op": {"type": "string", "description": "Workflow: the step's name."},
                "status": {
                    "type": "string",
                    "description": "Workflow: prepared, succeed or failed.",
                },
            },
            "additionalProperties": {"type": ["string", "integer", "number", "boolean", "null"]},
        },
        "Query": _obj(
            ["transaction", "branches"],
            transaction={
                "anyOf": [_ref("TransGlobal"), {"type": "null"}],
                "description": "null when no transaction has this gid.",
            },
            branches={"type": "array", "items": _ref("TransBranch")},
        ),
        "Workflow": _obj(
            ["transaction", "progresses"],
            transaction=_ref("TransGlobal"),
            progresses={
                "type": "array",
                "items": _ref("TransBranch"),
                "description": "Steps the workflow has recorded so far.",
            },
        ),
        "Page": _obj(
            ["transactions", "next_position"],
            transactions={"type": "array", "items": _ref("TransGlobal")},
            next_position={
                "type": "string",
                "description": "Pass as `position` for the next page; empty when none is left.",
            },
        ),
        "KVPage": _obj(
            ["kv", "next_position"],
            kv={"type": "array", "items": _ref("KV")},
            next_position={"type": "string"},
        ),
    }


def _response(description: str, schema: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _responses() -> dict[str, Any]:
    return {
        "Success": _response('Done: `{"dtm_result":"SUCCESS"}`.', _ref("Success")),
        "BadRequest": _response(
            "The request cannot be accepted as it is; nothing was stored.", _ref("Error")
        ),
        "NotFound": _response("No such transaction, topic or subscriber.", _ref("Error")),
        "Failure": _response(
            "FAILURE: the transaction's state does not allow this, or the request conflicts "
            "with what is stored; retrying will not help.",
            _ref("Failure"),
        ),
        "TooLarge": _response(f"The body is over {MAX_BODY} bytes.", _ref("Error")),
        "Ongoing": _response(
            "ONGOING: not finished yet, or changed concurrently; ask again later.", _ref("Ongoing")
        ),
        "StoreUnavailable": _response(
            "The store cannot be reached; nothing was acknowledged.", _ref("Error")
        ),
        "InternalError": _response("A bug in the server; the log has the details.", _ref("Error")),
    }


_CODES = {
    "400": "BadRequest",
    "404": "NotFound",
    "409": "Failure",
    "413": "TooLarge",
    "425": "Ongoing",
    "500": "InternalError",
    "503": "StoreUnavailable",
}


def _answers(ok: dict[str, Any] | None, *codes: str) -> dict[str, Any]:
    """200 (the SUCCESS document unless `ok` is given) plus the shared error answers."""
    out: dict[str, Any] = {"200": ok or {"$ref": "#/components/responses/Success"}}
    for code in (*codes, "500"):
        out[code] = {"$ref": f"#/components/responses/{_CODES[code]}"}
    return out


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    required = schema.pop("required", False)
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _limit() -> dict[str, Any]:
    return _query("limit", "Page size.", type="integer", minimum=1, maximum=MAX_LIMIT, default=100)


def _position() -> dict[str, Any]:
    return _query(
        "position",
        "`next_position` of the previous page; empty for the first.",
        type="string",
        pattern="^[0-9]*$",
    )


def _post(
    operation_id: str,
    summary: str,
    description: str,
    *codes: str,
    body: str = "TransRequest",
    ok: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A POST taking a JSON body: such a route can also answer 400 and 413."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": description,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref(body)}}},
            "responses": _answers(ok, "400", "413", *codes),
        }
    }


def _op(
    operation_id: str,
    summary: str,
    description: str,
    ok: dict[str, Any] | None,
    *codes: str,
    parameters: list[dict[str, Any]] | None = None,
    method: str = "get",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "responses": _answers(ok, *codes),
    }
    if parameters:
        op["parameters"] = parameters
    return {method: op}


def _register(operation_id: str, alias: bool) -> dict[str, Any]:
    text = (
        "Adds a branch to a prepared TCC, XA or workflow transaction: TCC stores its "
        "confirm and cancel URLs, XA its URL for commit and rollback, a workflow one step "
        "with its outcome. Registering the same branch again changes nothing. FAILURE when "
        "the transaction is not (or no longer) prepared."
    )
    if alias:
        text += " An alias of registerBranch kept for old SDKs."
    return _post(
        operation_id, "Register a branch", text, "409", "503", body="RegisterBranchRequest"
    )


def _paths() -> dict[str, Any]:
    def required(name: str, description: str) -> dict[str, Any]:
        return _query(name, description, type="string", minLength=1, required=True)

    def ping(operation_id: str) -> dict[str, Any]:
        return {
            "operationId": operation_id,
            "summary": "Liveness",
            "description": "Answers without touching the store: the process is up.",
            "responses": {
                "200": _response("Up.", _obj(["msg"], msg={"type": "string", "const": "pong"}))
            },
        }

    return {
        "/api/ping": {
            "get": ping("ping"),
            "post": ping("pingPost"),
            "head": ping("pingHead"),
        },
        "/api/health": {
            "get": {
                "operationId": "health",
                "summary": "Readiness",
                "description": "One round trip to the store: 200 when it answers, 503 when "
                "it does not.",
                "responses": {
                    "200": _response(
                        "The store answers.",
                        _obj(["status"], status={"type": "string", "const": "ok"}),
                    ),
                    "503": _response(
                        "The store does not answer.",
                        _obj(
                            ["status", "store"],
                            status={"type": "string", "const": "unavailable"},
                            store={"type": "string", "description": "The store's error."},
                        ),
                    ),
                },
            }
        },
        f"{BASE}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "description": "The OpenAPI 3.1 description of this API, built at start.",
                "responses": {"200": _response("The document.", {"type": "object"})},
            }
        },
        f"{BASE}/version": _op(
            "version",
            "Server version",
            "The version of this server.",
            _response("The version.", _obj(["version"], version={"type": "string"})),
        ),
        f"{BASE}/newGid": _op(
            "newGid",
            "New gid",
            "A new unique global transaction id (32 hex characters); nothing is stored.",
            _response(
                "A fresh gid.",
                _obj(
                    ["gid", "dtm_result"],
                    gid={"type": "string"},
                    dtm_result=_result(consts.RESULT_SUCCESS),
                ),
            ),
        ),
        f"{BASE}/prepare": _post(
            "prepare",
            "Prepare a transaction",
            "Stores a transaction in status prepared: a 2-phase message before its local "
            "transaction commits, or a TCC or XA transaction before its branches register. "
            "Preparing a prepared transaction again succeeds; FAILURE once it has moved on "
            "or when the gid belongs to another transaction type. Nothing is stored unless "
            "the answer is 200.",
            "404",
            "409",
            "503",
        ),
        f"{BASE}/submit": _post(
            "submit",
            "Submit a transaction",
            "Stores a saga or message as submitted (or moves a prepared one to submitted) "
            "and starts calling its branches; a delayed message waits for its delay. A "
            "repeated submit succeeds without starting anything. A workflow submit records "
            "the outcome given in `req_extra`. With `wait_result` the answer waits for the "
            "outcome: SUCCESS, FAILURE with the rollback reason, or ONGOING; without it, "
            "nothing is stored unless the answer is 200.",
            "404",
            "409",
            "425",
            "503",
        ),
        f"{BASE}/abort": _post(
            "abort",
            "Abort a transaction",
            "Rolls back a prepared TCC or XA transaction (cancel or rollback of every "
            "registered branch), or fails a prepared message; repeating it on an aborting "
            "transaction succeeds. FAILURE for any other transaction type or status.",
            "404",
            "409",
            "425",
            "503",
        ),
        f"{BASE}/forceStop": _post(
            "forceStop",
            "Force a transaction to failed",
            "Marks an unfinished transaction failed without calling any branch, so it is "
            "never retried again; an operator's last resort. FAILURE when it has finished.",
            "404",
            "409",
            "425",
            "503",
        ),
        f"{BASE}/registerBranch": _register("registerBranch", alias=False),
        f"{BASE}/registerXaBranch": _register("registerXaBranch", alias=True),
        f"{BASE}/registerTccBranch": _register("registerTccBranch", alias=True),
        f"{BASE}/prepareWorkflow": _post(
            "prepareWorkflow",
            "Prepare or resume a workflow",
            "Stores a workflow transaction in status prepared, or finds the existing one, "
            "and answers it with the steps recorded so far so the client can resume. "
            "FAILURE when the gid belongs to another transaction type.",
            "409",
            "503",
            ok=_response("The workflow and its recorded steps.", _ref("Workflow")),
        ),
        f"{BASE}/query": _op(
            "query",
            "One transaction",
            "The transaction and its branch operations in the order they were added; "
            "`transaction` is null and `branches` empty when the gid is unknown.",
            _response("The transaction, or null.", _ref("Query")),
            "400",
            "503",
            parameters=[required("gid", "The global transaction id.")],
        ),
        f"{BASE}/all": _op(
            "all",
            "List transactions",
            "Transactions newest first, a page at a time, optionally filtered. With `gid` "
            "the page holds that one transaction, or none.",
            _response("One page.", _ref("Page")),
            "400",
            "503",
            parameters=[
                _query("gid", "Only this transaction; filters and paging are not applied."),
                _position(),
                _limit(),
                _query("status", f"Only this status ({_STATUSES})."),
                _query("transType", "Only this transaction type."),
                _query(
                    "createTimeStart",
                    "Created at or after, in milliseconds since the epoch.",
                    type="string",
                    pattern="^[0-9]*$",
                ),
                _query(
                    "createTimeEnd",
                    "Created at or before, in milliseconds since the epoch.",
                    type="string",
                    pattern="^[0-9]*$",
                ),
            ],
        ),
        f"{BASE}/resetCronTime": _op(
            "resetCronTime",
            "Retry postponed transactions now",
            "Makes unfinished transactions scheduled later than `timeout` seconds from now "
            "due at once, up to `limit` of them: after an outage of a branch, retries "
            "happen now instead of after long back-offs.",
            _response(
                "How many were made due, and whether more may remain.",
                _obj(
                    ["has_remaining", "succeed_count"],
                    has_remaining={"type": "boolean"},
                    succeed_count={"type": "integer", "minimum": 0},
                ),
            ),
            "400",
            "503",
            parameters=[
                _query(
                    "timeout",
                    "Seconds; default three times the server's TimeoutToFail.",
                    type="integer",
                    minimum=1,
                ),
                _limit(),
            ],
        ),
        f"{BASE}/resetNextCronTime": _post(
            "resetNextCronTime",
            "Retry one transaction now",
            "Makes one unfinished transaction due at once. 404 when no unfinished "
            "transaction has the gid.",
            "404",
            "503",
        ),
        f"{BASE}/subscribe": _op(
            "subscribe",
            "Subscribe a URL to a topic",
            "Adds a subscriber to a topic (creating the topic); a message step whose action "
            "is `topic://<name>` calls every subscriber. FAILURE when the URL is subscribed "
            "already.",
            None,
            "400",
            "409",
            "503",
            parameters=[
                required("topic", "Topic name."),
                required("url", "Subscriber URL: at most 1024 characters, no white space."),
                _query("remark", "Free text kept with the subscriber."),
            ],
        ),
        f"{BASE}/unsubscribe": _op(
            "unsubscribe",
            "Unsubscribe a URL from a topic",
            "Removes a subscriber; the topic stays, possibly empty. 404 when the topic or "
            "the subscriber does not exist.",
            None,
            "400",
            "404",
            "409",
            "503",
            parameters=[required("topic", "Topic name."), required("url", "Subscriber URL.")],
        ),
        f"{BASE}/topic/{{name}}": _op(
            "deleteTopic",
            "Delete a topic",
            "Deletes a topic and all its subscribers; messages already submitted keep the "
            "branches they were given.",
            None,
            "404",
            "503",
            method="delete",
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "Topic name.",
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                }
            ],
        ),
        f"{BASE}/scanKV": _op(
            "scanKV",
            "List key-value pairs",
            "Key-value pairs of one category (topics are category `topics`), newest first, "
            "a page at a time.",
            _response("One page.", _ref("KVPage")),
            "400",
            "503",
            parameters=[_query("cat", "Category."), _position(), _limit()],
        ),
        f"{BASE}/queryKV": _op(
            "queryKV",
            "Find key-value pairs",
            "Pairs with this category and key; an empty or missing parameter matches any.",
            _response("The pairs found.", _obj(["kv"], kv={"type": "array", "items": _ref("KV")})),
            "503",
            parameters=[_query("cat", "Category."), _query("key", "Key.")],
        ),
    }


def _jsonrpc_schemas() -> dict[str, Any]:
    rid = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "number"}]}
    return {
        "JsonRpcRequest": {
            "type": "object",
            "required": ["jsonrpc", "method", "id"],
            "properties": {
                "jsonrpc": {"type": "string", "const": "2.0"},
                "method": {"type": "string", "enum": list(jsonrpc.METHOD_NAMES)},
                "params": {
                    "description": "The body the method's HTTP route takes: a TransRequest "
                    "(prepare, submit, abort, forceStop, prepareWorkflow, resetNextCronTime), "
                    "a string map (registerBranch: null values are the empty string, others "
                    'are refused), `{"gid": ...}` (query); newGid takes none.',
                    "anyOf": [
                        _ref("TransRequest"),
                        _ref("RegisterBranchRequest"),
                        _obj(["gid"], gid={"type": "string"}),
                        {"type": "null"},
                    ],
                },
                "id": {**rid, "description": "Echoed in the answer; required, as upstream."},
            },
        },
        "JsonRpcAnswer": {
            "type": "object",
            "required": ["jsonrpc", "id"],
            "properties": {
                "jsonrpc": {"type": "string", "const": "2.0"},
                "id": {"anyOf": [*rid["anyOf"], {"type": "null"}]},
                "result": {
                    "description": 'newGid: `{"gid"}`; query: a Query; prepareWorkflow: a '
                    "Workflow; null for the others."
                },
                "error": _obj(
                    ["code", "message"],
                    code={
                        "type": "integer",
                        "description": f"{consts.JRPC_CODE_FAILURE} FAILURE, "
                        f"{consts.JRPC_CODE_ONGOING} ONGOING, {jsonrpc.PARSE_ERROR} parse "
                        f"error, {jsonrpc.INVALID_REQUEST} invalid request, "
                        f"{jsonrpc.METHOD_NOT_FOUND} method not found, "
                        f"{jsonrpc.INVALID_PARAMS} invalid params (or no such transaction), "
                        f"{jsonrpc.INTERNAL_ERROR} store unavailable or internal error.",
                    },
                    message={"type": "string"},
                ),
            },
            "oneOf": [{"required": ["result"]}, {"required": ["error"]}],
        },
    }


def _jsonrpc_paths() -> dict[str, Any]:
    not_sent = "Not sent by this route, which answers 200 with a JSON-RPC error instead: "
    return {
        jsonrpc.PATH: {
            "post": {
                "operationId": "jsonRpc",
                "summary": "JSON-RPC 2.0",
                "description": "Upstream's JSON-RPC endpoint: the server API's operations "
                "as methods. Every answer is HTTP 200 with `result` or `error`, as upstream; "
                "FAILURE and ONGOING are the error codes -32901 and -32902.",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("JsonRpcRequest")}},
                },
                "responses": {
                    "200": _response("The JSON-RPC answer.", _ref("JsonRpcAnswer")),
                    "400": _response(not_sent + "-32600, -32601, -32602 or -32700.", _ref("Error")),
                    "413": {"$ref": "#/components/responses/TooLarge"},
                    "503": _response(not_sent + "-32603.", _ref("Error")),
                },
            }
        }
    }


def build_openapi() -> dict[str, Any]:
    """The whole document, fresh on each call; the app builds it once at start."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DTM server",
            "version": __version__,
            "description": "The HTTP API of dtm-py, wire-compatible with upstream DTM: "
            "global transactions (saga, 2-phase message, TCC, XA, workflow), their "
            "branches, message topics, and operations. Results travel as "
            '`{"dtm_result": ...}`: SUCCESS with 200, FAILURE with 409, ONGOING with 425.',
            "license": {"name": "BSD-3-Clause", "identifier": "BSD-3-Clause"},
        },
        "paths": {**_paths(), **_jsonrpc_paths()},
        "components": {
            "schemas": {**_generated_schemas(), **_hand_schemas(), **_jsonrpc_schemas()},
            "responses": _responses(),
        },
    }
