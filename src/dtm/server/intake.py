"""Turns API requests into records, rejecting bad input before anything is stored.

Limits follow upstream's SQL columns (gid and branch ids 128, URLs 1024 characters), so a
transaction accepted here fits every store.
"""

from __future__ import annotations

import msgspec

from dtm.protocol import consts
from dtm.protocol.messages import TransOptions, TransRequest, encode_options
from dtm.protocol.records import TransBranch, TransGlobal
from dtm.server.engine.msg import delay_of
from dtm.server.stores.base import Store
from dtm.server.topics import subscribers

MAX_GID = 128
MAX_URL = 1024
MAX_BRANCH_ID = 128
MAX_OP = 45
MAX_TEXT = 1024  # rollback_reason, result: upstream's varchar(1024)
# Longest interval, timeout or delay accepted (ten years): beyond it only overflow waits.
MAX_SECONDS = 10 * 365 * 24 * 3600
MAX_RETRY_LIMIT = 1_000_000
_PROTOCOLS = {"", consts.PROTOCOL_HTTP, consts.PROTOCOL_GRPC, consts.PROTOCOL_JSONRPC}


class BadRequest(ValueError):
    """The request cannot be accepted as it is; the message says what to fix."""


class _SagaCustom(msgspec.Struct):
    orders: dict[int, list[int]] = msgspec.field(default_factory=dict)
    concurrent: bool = False


def check_gid(gid: str) -> str:
    if not gid:
        raise BadRequest("gid is required")
    if len(gid) > MAX_GID:
        raise BadRequest(f"gid is longer than {MAX_GID} characters")
    if any(c.isspace() or not c.isprintable() for c in gid):
        raise BadRequest("gid may not contain white space or control characters")
    return gid


def check_url(url: str, what: str) -> str:
    if len(url) > MAX_URL:
        raise BadRequest(f"{what} is longer than {MAX_URL} characters")
    if any(c.isspace() for c in url):
        raise BadRequest(f"{what} may not contain white space")
    return url


def check_trans_type(trans_type: str) -> str:
    if trans_type not in consts.TRANS_TYPES:
        raise BadRequest(
            f"unknown trans_type {trans_type!r}; expected one of {sorted(consts.TRANS_TYPES)}"
        )
    return trans_type


def check_seconds(value: int, name: str) -> int:
    if not 0 <= value <= MAX_SECONDS:
        raise BadRequest(f"{name} should be between 0 and {MAX_SECONDS} seconds")
    return value


def _check_options(options: TransOptions) -> None:
    for name in ("timeout_to_fail", "request_timeout", "retry_interval"):
        check_seconds(getattr(options, name), name)
    if not 0 <= options.retry_limit <= MAX_RETRY_LIMIT:
        raise BadRequest(f"retry_limit should be between 0 and {MAX_RETRY_LIMIT}")
    if not 0 <= options.retry_count <= MAX_RETRY_LIMIT:
        raise BadRequest(f"retry_count should be between 0 and {MAX_RETRY_LIMIT}")


def _payloads(req: TransRequest) -> list[bytes]:
    steps = req.steps or []
    if req.bin_payloads is not None:
        payloads = list(req.bin_payloads)
    else:
        payloads = [p.encode() for p in req.payloads or []]
    payloads += [s["data"].encode() for s in steps if s.get("data")]
    if len(payloads) != len(steps):
        raise BadRequest(
            f"{len(steps)} steps but {len(payloads)} payloads: give one payload per step"
        )
    return payloads


def _saga_branches(gid: str, req: TransRequest, options: TransOptions) -> list[TransBranch]:
    steps = req.steps or []
    payloads = _payloads(req)
    if req.custom_data:
        try:
            custom = msgspec.json.decode(req.custom_data, type=_SagaCustom)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"custom_data of a saga is not valid: {exc}") from None
        for later, preds in custom.orders.items():
            if not all(0 <= i < len(steps) for i in (later, *preds)):
                raise BadRequest(f"branch order {later}: {preds} names a step that does not exist")
    branches = []
    for i, (step, payload) in enumerate(zip(steps, payloads, strict=True)):
        branch_id = f"{i + 1:02d}"
        _step_timeout(step, branch_id, options)
        for op in (consts.OP_COMPENSATE, consts.OP_ACTION):
            branches.append(
                TransBranch(
                    gid=gid,
                    branch_id=branch_id,
                    op=op,
                    status=consts.PREPARED,
                    url=check_url(step.get(op, ""), f"step {i + 1} {op}"),
                    bin_data=payload,
                )
            )
    return branches


def _step_timeout(step: dict[str, str], branch_id: str, options: TransOptions) -> None:
    """A step may carry its own `request_timeout` (seconds), this server's addition."""
    raw = step.get("request_timeout")
    if raw is None:
        return
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_SECONDS:
        raise BadRequest(
            f"step {branch_id} request_timeout should be whole seconds, 1 to {MAX_SECONDS}"
        )
    options.branch_request_timeouts[branch_id] = int(raw)


async def _msg_branches(
    store: Store, gid: str, req: TransRequest, options: TransOptions
) -> list[TransBranch]:
    steps = req.steps or []
    payloads = _payloads(req)
    branches = []
    for i, (step, payload) in enumerate(zip(steps, payloads, strict=True)):
        branch_id = f"{i + 1:02d}"
        _step_timeout(step, branch_id, options)
        action = check_url(step.get(consts.OP_ACTION, ""), f"step {i + 1} action")
        if action.startswith(consts.MSG_TOPIC_PREFIX):
            topic = action.removeprefix(consts.MSG_TOPIC_PREFIX)
            urls = [s.url for s in await subscribers(store, topic)]
            if not urls:
                raise BadRequest(f"topic {topic!r} not found or has no subscribers")
        else:
            urls = [action]
        for j, url in enumerate(urls):
            sub_id = branch_id if len(urls) == 1 else f"{branch_id}-{j + 1:02d}"
            if len(urls) > 1 and branch_id in options.branch_request_timeouts:
                options.branch_request_timeouts[sub_id] = options.branch_request_timeouts[branch_id]
            branches.append(
                TransBranch(
                    gid=gid,
                    branch_id=sub_id,
                    op=consts.OP_ACTION,
                    status=consts.PREPARED,
                    url=url,
                    bin_data=payload,
                )
            )
    return branches


async def new_transaction(
    store: Store, req: TransRequest, status: str
) -> tuple[TransGlobal, list[TransBranch], TransOptions]:
    """The records a prepare or submit would create, validated."""
    gid = check_gid(req.gid)
    trans_type = check_trans_type(req.trans_type)
    protocol = req.protocol or consts.PROTOCOL_HTTP
    if protocol not in _PROTOCOLS:
        raise BadRequest(f"unknown protocol {protocol!r}")
    options = req.options()
    _check_options(options)
    if trans_type == consts.SAGA:
        branches = _saga_branches(gid, req, options)
    elif trans_type == consts.MSG:
        branches = await _msg_branches(store, gid, req, options)
    else:
        branches = []
    if trans_type == consts.MSG:
        check_seconds(delay_of(req.custom_data or ""), "delay")
    encoded_options = encode_options(options)
    trans = TransGlobal(
        gid=gid,
        trans_type=trans_type,
        status=status,
        query_prepared=check_url(req.query_prepared or "", "query_prepared"),
        protocol=protocol,
        options=encoded_options,
        custom_data=req.custom_data or "",
        rollback_reason=(req.rollback_reason or "")[:MAX_TEXT],
    )
    return trans, branches, options


def position(text: str) -> str:
    """A listing position as the store gave it: the id of a row, or "" for the start."""
    if text and not (text.isascii() and text.isdigit() and int(text) < 2**63):
        raise BadRequest("position should be a value of next_position")
    return text


def millis(text: str, name: str) -> int | None:
    """`createTimeStart=1700000000000`: milliseconds since the epoch, as upstream."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > 253402300799999:
        raise BadRequest(f"{name} should be milliseconds since the epoch, before year 10000")
    return int(text)


def msg_delay(trans: TransGlobal) -> int:
    return delay_of(trans.custom_data) if trans.trans_type == consts.MSG else 0


def registered_branches(
    data: dict[str, str], *, payload: bytes | None = None
) -> tuple[str, str, list[TransBranch]]:
    """(gid, trans_type, operations) of a registerBranch request; the payload is
    `data["data"]` unless given as bytes (gRPC's BusiPayload)."""
    gid = check_gid(data.get("gid", ""))
    trans_type = data.get("trans_type", "")
    branch_id = data.get("branch_id", "")
    if not branch_id or len(branch_id) > MAX_BRANCH_ID:
        raise BadRequest(f"branch_id is required, at most {MAX_BRANCH_ID} characters")
    if payload is None:
        payload = data.get("data", "").encode()

    def op(name: str, url: str, status: str = consts.PREPARED) -> TransBranch:
        return TransBranch(
            gid=gid,
            branch_id=branch_id,
            op=name,
            status=status,
            url=check_url(url, f"{name} url"),
            bin_data=payload,
        )

    if trans_type == consts.TCC:
        ops = [
            op(consts.OP_CANCEL, data.get(consts.OP_CANCEL, "")),
            op(consts.OP_CONFIRM, data.get(consts.OP_CONFIRM, "")),
        ]
    elif trans_type == consts.XA:
        ops = [
            op(consts.OP_ROLLBACK, data.get("url", "")),
            op(consts.OP_COMMIT, data.get("url", "")),
        ]
    elif trans_type == consts.WORKFLOW:
        name, status = data.get("op", ""), data.get("status", "")
        if not name or len(name) > MAX_OP:
            raise BadRequest(f"op is required, at most {MAX_OP} characters")
        if status not in (consts.PREPARED, consts.SUCCEED, consts.FAILED):
            raise BadRequest("status should be prepared, succeed or failed")
        ops = [op(name, "", status)]
    else:
        raise BadRequest(
            f"unknown trans type: {trans_type!r}; registerBranch takes tcc, xa or workflow"
        )
    return gid, trans_type, ops
