"""The sans-I/O core of the SDK: every request the SDK makes, and how every answer is read.

Nothing here does I/O. An operation is a generator (`Op`) that yields requests
(`HttpRequest`, or `GrpcRequest` when the server address is a gRPC one) and is sent back
their responses; the asyncio and the blocking transports only drive it
(`dtm.client._transport`). So the protocol (bodies, query parameters, result codes, branch
ids, the order of calls) is written once and the sync and async clients cannot drift apart.
The gRPC messages themselves are built in `_grpc`, imported only by gRPC clients.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar
from urllib.parse import urlencode

import msgspec

from dtm.errors import FailureError, OngoingError, TransportError
from dtm.protocol import consts
from dtm.protocol.grpc_calls import parse_url
from dtm.protocol.messages import TransOptions, TransRequest
from dtm.protocol.records import TransBranch, TransGlobal

T = TypeVar("T")

_JSON = {"Content-Type": "application/json"}
# Beyond a transaction's request timeout, how long a `wait_result` submit may be held: the
# server waits one branch call plus its own margin.
_WAIT_MARGIN = 10.0
# How much of an unexpected answer an exception message quotes.
_QUOTED = 300


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request, complete: the URL already carries its query string."""

    method: str
    url: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds this request may need at least (a `wait_result` submit is held by the server);
    # the transport uses the larger of it and the client's timeout.
    min_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer as the core needs it; transports read the whole body."""

    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded as JSON; `TransportError` when it is not JSON."""
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError as exc:
            raise TransportError(f"answer is not JSON: {self.text[:_QUOTED]!r}") from exc


@dataclass(frozen=True, slots=True)
class GrpcRequest:
    """One unary gRPC call whose request and reply messages travel as raw bytes."""

    target: str  # host:port
    method: str  # /package.Service/Method
    body: bytes
    metadata: tuple[tuple[str, str], ...] = ()
    min_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class GrpcResponse:
    """A gRPC outcome: the status code's name ("OK", "ABORTED", ...), its details, and the
    reply message's bytes (empty unless OK). Transports report every status, even
    "UNAVAILABLE" for a server they could not reach: reading it is the core's job."""

    code: str
    details: str = ""
    body: bytes = b""


Request: TypeAlias = HttpRequest | GrpcRequest
Response: TypeAlias = HttpResponse | GrpcResponse

Op: TypeAlias = Generator[Request, Response, T]
"""A protocol operation: yields requests, receives their responses, returns a result."""


def exchange(request: HttpRequest) -> Op[HttpResponse]:
    """Send one HTTP request (as a step of an operation) and take its response."""
    response = yield request
    if not isinstance(response, HttpResponse):
        raise TypeError(f"transport answered an HTTP request with {type(response).__name__}")
    return response


def exchange_grpc(request: GrpcRequest) -> Op[GrpcResponse]:
    """Make one gRPC call (as a step of an operation) and take its outcome."""
    response = yield request
    if not isinstance(response, GrpcResponse):
        raise TypeError(f"transport answered a gRPC call with {type(response).__name__}")
    return response


def is_grpc(dtm: str) -> bool:
    """Whether `dtm` is a gRPC server address (`host:port`, upstream's dtmgrpc form) rather
    than an HTTP API URL."""
    return "://" not in dtm


class QueryResult(msgspec.Struct, kw_only=True):
    """What `query` answers: the global transaction (None when the gid is unknown) and its
    branch operations, as the server stores them."""

    transaction: TransGlobal | None = None
    branches: list[TransBranch] = msgspec.field(default_factory=list)


_query_decoder = msgspec.json.Decoder(QueryResult)


def encode_json(value: Any) -> bytes:
    """JSON of a payload; msgspec also takes dataclasses, Structs, datetimes, bytes (base64,
    as Go encodes []byte)."""
    try:
        return msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"payload is not JSON-serialisable: {exc}") from exc


def _result_of(body: bytes) -> str | None:
    """The `dtm_result` of a JSON object body, or None."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(decoded, dict):
        result = decoded.get("dtm_result")
        return result if isinstance(result, str) else None
    return None


def check_answer(response: HttpResponse, what: str) -> HttpResponse:
    """Read an answer of the DTM server or of a business branch into DTM's results.

    409 or `dtm_result: FAILURE` is a definite failure, 425 or `ONGOING` means "ask again
    later" (both as upstream, which also accepts 200 with the result in the body from older
    services). Anything else that is not 200 is a `TransportError`: the outcome is unknown
    and retrying may help. The result field is parsed, not searched for as a substring as
    upstream does, so a message that merely mentions FAILURE is not a failure.
    """
    result = _result_of(response.body)
    if response.status == consts.HTTP_FAILURE or (
        response.status == 200 and result == consts.RESULT_FAILURE
    ):
        raise FailureError(f"{what}: {response.text[:_QUOTED]}")
    if response.status == consts.HTTP_ONGOING or (
        response.status == 200 and result == consts.RESULT_ONGOING
    ):
        raise OngoingError(f"{what}: {response.text[:_QUOTED]}")
    if response.status != 200:
        raise TransportError(f"{what}: HTTP {response.status}: {response.text[:_QUOTED]}")
    return response


def _with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


# --- calls to the DTM server ---------------------------------------------------------------


def new_gid(dtm: str) -> Op[str]:
    """A gid made by the server (`GET /newGid`, or gRPC `NewGid`)."""
    if is_grpc(dtm):
        from dtm.client import _grpc

        request = GrpcRequest(dtm, _grpc.method_of("newGid"), b"")
        reply = _grpc.check_status((yield from exchange_grpc(request)), "NewGid")
        return _grpc.gid_of(reply.body)
    response = check_answer((yield from exchange(HttpRequest("GET", f"{dtm}/newGid"))), "newGid")
    decoded = response.json()
    gid = decoded.get("gid") if isinstance(decoded, dict) else None
    if not isinstance(gid, str) or not gid:
        raise TransportError(f"newGid answered no gid: {response.text[:_QUOTED]}")
    return gid


def query(dtm: str, gid: str) -> Op[QueryResult]:
    """The stored transaction and branches of `gid` (`GET /query`)."""
    if not gid:
        raise ValueError("query needs a gid")
    if is_grpc(dtm):
        raise NotImplementedError(
            "DTM's gRPC API has no query: make a client of the server's HTTP API for it"
        )
    request = HttpRequest("GET", _with_query(f"{dtm}/query", {"gid": gid}))
    response = check_answer((yield from exchange(request)), f"query {gid}")
    try:
        return _query_decoder.decode(response.body)
    except msgspec.DecodeError as exc:
        raise TransportError(f"query {gid}: unexpected answer: {exc}") from exc


def call_dtm(dtm: str, operation: str, body: bytes, *, min_timeout: float = 0.0) -> Op[None]:
    """POST one of the server's operations (prepare, submit, abort, registerBranch...) as
    JSON to the HTTP API."""
    request = HttpRequest("POST", f"{dtm}/{operation}", body, _JSON, min_timeout)
    check_answer((yield from exchange(request)), operation)


def call_dtm_grpc(dtm: str, operation: str, body: bytes, *, min_timeout: float = 0.0) -> Op[None]:
    """Call one of the server's operations over gRPC, `body` the serialised message."""
    from dtm.client import _grpc

    request = GrpcRequest(dtm, _grpc.method_of(operation), body, min_timeout=min_timeout)
    _grpc.check_status((yield from exchange_grpc(request)), operation)


# --- the global transaction as the client builds it -----------------------------------------


class BranchIdGen:
    """Branch ids of TCC and XA branches: the parent's id followed by "01", "02", ...

    Upstream's BranchIDGen and its limits: at most 99 sub-branches, ids under 20 characters,
    because the server stores branch ids in a short column.
    """

    def __init__(self, parent: str = "") -> None:
        self.parent = parent
        self._count = 0

    def next(self) -> str:
        if self._count >= 99:
            raise ValueError("a transaction has at most 99 sub-branches")
        if len(self.parent) >= 20:
            raise ValueError(f"branch id {self.parent!r} is too long to nest further")
        self._count += 1
        return f"{self.parent}{self._count:02d}"


@dataclass(slots=True)
class Trans:
    """The global transaction a mode object builds: upstream's `TransBase`, as sent.

    Its protocol follows the server address: an HTTP API URL sends JSON and calls branches
    over HTTP; a gRPC address (`host:port`) sends `dtmgimp` messages, and its branches are
    gRPC methods whose payloads are serialised protobuf messages (`bin_payloads`).
    """

    dtm: str
    gid: str
    trans_type: str
    options: TransOptions
    steps: list[dict[str, str]] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)
    bin_payloads: list[bytes] = field(default_factory=list)
    custom_data: str = ""
    query_prepared: str = ""
    rollback_reason: str = ""
    branch_ids: BranchIdGen = field(default_factory=BranchIdGen)

    @property
    def grpc(self) -> bool:
        return is_grpc(self.dtm)

    def encode_payload(self, payload: Any) -> str | bytes:
        """A branch payload as this protocol carries it: JSON text, or message bytes."""
        if self.grpc:
            from dtm.client import _grpc

            return _grpc.payload_bytes(payload)
        return encode_json(payload).decode()

    def add_payload(self, payload: Any) -> None:
        """The payload of the step just appended to `steps`."""
        encoded = self.encode_payload(payload)
        if isinstance(encoded, bytes):
            self.bin_payloads.append(encoded)
        else:
            self.payloads.append(encoded)

    def body(self) -> bytes:
        """Upstream's JSON: TransBase with TransOptions inlined; empty fields left out as Go's
        `omitempty` does, except `concurrent` and `protocol`, which upstream always sends."""
        o = self.options
        request = TransRequest(
            gid=self.gid,
            trans_type=self.trans_type,
            steps=self.steps or None,
            payloads=self.payloads or None,
            custom_data=self.custom_data or None,
            query_prepared=self.query_prepared or None,
            protocol=consts.PROTOCOL_HTTP,
            rollback_reason=self.rollback_reason or None,
            wait_result=o.wait_result or None,
            timeout_to_fail=o.timeout_to_fail or None,
            request_timeout=o.request_timeout or None,
            retry_interval=o.retry_interval or None,
            branch_headers=dict(o.branch_headers) or None,
            concurrent=o.concurrent,
            retry_limit=o.retry_limit or None,
        )
        fields = msgspec.structs.asdict(request)
        return msgspec.json.encode({k: v for k, v in fields.items() if v is not None})

    def ensure_gid(self) -> Op[None]:
        """Ask the server for a gid when the caller gave none."""
        if not self.gid:
            self.gid = yield from new_gid(self.dtm)

    def call(self, operation: str) -> Op[None]:
        """Send the whole transaction to `operation`, as upstream's TransCallDtm.

        A `wait_result` submit is held by the server for up to the request timeout (plus a
        margin), so the request's timeout is stretched past that.
        """
        yield from self.ensure_gid()
        wait = 0.0
        if operation == "submit" and self.options.wait_result:
            wait = float(self.options.request_timeout) + _WAIT_MARGIN
        if self.grpc:
            from dtm.client import _grpc

            body = _grpc.dtm_request(self)
            yield from call_dtm_grpc(self.dtm, operation, body, min_timeout=wait)
        else:
            yield from call_dtm(self.dtm, operation, self.body(), min_timeout=wait)

    def register_branch(
        self, branch_id: str, added: Mapping[str, str], payload: str | bytes | None = None
    ) -> Op[None]:
        """`registerBranch` with the gid and type of this transaction (TCC, XA); `payload`
        (from `encode_payload`) is the branch's data: `data` in the JSON, `BusiPayload`
        over gRPC."""
        if self.grpc:
            from dtm.client import _grpc

            busi = payload if isinstance(payload, bytes) else b""
            body = _grpc.branch_request(self, branch_id, added, busi)
            yield from call_dtm_grpc(self.dtm, "registerBranch", body)
            return
        data = {"gid": self.gid, "trans_type": self.trans_type, "branch_id": branch_id}
        data.update(added)
        if isinstance(payload, str):
            data["data"] = payload
        yield from call_dtm(self.dtm, "registerBranch", msgspec.json.encode(data))

    def request_branch(
        self, method: str, url: str, payload: Any, branch_id: str, op: str
    ) -> Op[HttpResponse]:
        """Call a business branch the way the server would.

        HTTP: upstream's query parameters (`dtm`, `gid`, `branch_id`, `trans_type`, `op`,
        and `phase2_url` for XA), the branch headers, the payload as JSON. gRPC: `url` is
        `host:port/package.Service/Method`, the same information in `dtm-*` metadata, the
        payload as the request message; the answer is given as a 200 whose body is the
        reply message's bytes.
        """
        if self.grpc:
            return (yield from self._request_grpc_branch(url, payload, branch_id, op))
        params = {
            "dtm": self.dtm,
            "gid": self.gid,
            "branch_id": branch_id,
            "trans_type": self.trans_type,
            "op": op,
        }
        if self.trans_type == consts.XA:
            params["phase2_url"] = url
        headers = {**_JSON, **self.options.branch_headers}
        request = HttpRequest(method, _with_query(url, params), encode_json(payload), headers)
        response = yield from exchange(request)
        return check_answer(response, f"{op} {url}")

    def _request_grpc_branch(
        self, url: str, payload: Any, branch_id: str, op: str
    ) -> Op[HttpResponse]:
        from dtm.client import _grpc

        target, method = parse_url(url)
        metadata = _grpc.branch_metadata(self, branch_id, op, url)
        request = GrpcRequest(target, method, _grpc.payload_bytes(payload), metadata)
        reply = _grpc.check_status((yield from exchange_grpc(request)), f"{op} {url}")
        return HttpResponse(200, reply.body)


def options_of(
    *,
    wait_result: bool = False,
    timeout_to_fail: int = 0,
    request_timeout: int = 0,
    retry_interval: int = 0,
    retry_limit: int = 0,
    branch_headers: Mapping[str, str] | None = None,
    concurrent: bool = False,
) -> TransOptions:
    """Validated protocol options; times are whole seconds, as upstream's server takes."""
    for name, value in (
        ("timeout_to_fail", timeout_to_fail),
        ("request_timeout", request_timeout),
        ("retry_interval", retry_interval),
        ("retry_limit", retry_limit),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} should be a whole number of seconds >= 0, not {value!r}")
    return TransOptions(
        wait_result=wait_result,
        timeout_to_fail=timeout_to_fail,
        request_timeout=request_timeout,
        retry_interval=retry_interval,
        retry_limit=retry_limit,
        branch_headers=dict(branch_headers or {}),
        concurrent=concurrent,
    )
