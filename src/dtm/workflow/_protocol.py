"""The workflow's part of DTM's HTTP protocol, without I/O: operations of the client core.

prepareWorkflow answers the transaction and the results recorded so far; registerBranch
records one branch operation's result (its data travels in a JSON string, as upstream's
HTTP client sends it); submit carries the outcome in `req_extra`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec

from dtm.client._core import (
    HttpRequest,
    Op,
    Trans,
    call_dtm,
    check_answer,
    encode_json,
    exchange,
)
from dtm.errors import TransportError
from dtm.protocol import consts
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
    request = HttpRequest("POST", f"{trans.dtm}/prepareWorkflow", trans.body(), _JSON)
    response = check_answer((yield from exchange(request)), f"prepareWorkflow {trans.gid}")
    try:
        return _progresses_decoder.decode(response.body)
    except msgspec.DecodeError as exc:
        raise TransportError(f"prepareWorkflow {trans.gid}: unexpected answer: {exc}") from exc


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
    body = {"gid": gid, "trans_type": consts.WORKFLOW, "req_extra": extra}
    yield from call_dtm(dtm, "submit", msgspec.json.encode(body))


def branch_request(
    method: str,
    url: str,
    payload: Any,
    *,
    gid: str,
    branch_id: str,
    op: str,
    headers: Mapping[str, str],
) -> HttpRequest:
    """A call to a business URL with upstream's workflow query parameters; bytes are sent
    as they are, anything else as JSON."""
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
