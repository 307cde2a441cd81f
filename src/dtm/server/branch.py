"""Outbound calls from the server to business branches, read as upstream reads them.

One aiohttp session (one connection pool) per process. A call's outcome is one of four:
success (HTTP 200), failure (409 or a body saying FAILURE), ongoing (425 or a body saying
ONGOING), or an error (anything else: other codes, timeouts, refused connections), which the
engine retries with back-off.

JSON-RPC branches (protocol json-rpc, an http(s) URL containing `method`) are POSTed a
JSON-RPC 2.0 request; the HTTP reading above comes first, then the answer's `error`:
-32901 is failure, -32902 ongoing, any other an error.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgspec

from dtm.protocol import consts
from dtm.server.calls import SUCCESS, BranchCall, CallResult, Outcome
from dtm.server.grpc_branch import ChannelPool

log = logging.getLogger(__name__)

# Enough of a branch's answer to explain a failure; more is noise in rollback_reason.
_MAX_BODY_KEPT = 1024


def read_http_answer(status: int, body: str) -> CallResult:
    """Upstream's reading of an HTTP answer; ONGOING wins over FAILURE, as there."""
    if status == consts.HTTP_ONGOING or consts.RESULT_ONGOING in body:
        return CallResult(Outcome.ONGOING, body)
    if status == consts.HTTP_FAILURE or consts.RESULT_FAILURE in body:
        return CallResult(Outcome.FAILURE, body)
    if status != 200:
        return CallResult(Outcome.ERROR, f"HTTP {status}: {body}")
    return SUCCESS


class BranchCaller:
    """Calls branches over HTTP, JSON-RPC and gRPC; owns the connection pools of each."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._grpc: ChannelPool | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",)
        )
        # grpc.aio channels belong to the loop that makes them: the pool is made here,
        # inside the running loop, and makes each channel on first use.
        self._grpc = ChannelPool()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "BranchCaller.start() was not awaited"
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._grpc is not None:
            await self._grpc.close()
            self._grpc = None

    async def call(self, call: BranchCall) -> CallResult:
        """Call one branch; never raises for the branch's own misbehaviour."""
        if not call.url:
            return SUCCESS  # an empty URL is a branch with nothing to do, as upstream
        if call.protocol == consts.PROTOCOL_GRPC and not call.url.startswith(
            ("http://", "https://")
        ):
            assert self._grpc is not None, "BranchCaller.start() was not awaited"
            return await self._grpc.call(call)
        if (
            call.protocol == consts.PROTOCOL_JSONRPC
            and "method" in call.url  # upstream's test: other URLs are plain HTTP
            and call.url.startswith(("http://", "https://"))
        ):
            return await self._call_jsonrpc(call)
        return await self._call_http(call)

    async def _call_http(self, call: BranchCall) -> CallResult:
        params = {
            "gid": call.gid,
            "trans_type": call.trans_type,
            "branch_id": call.branch_id,
            "op": call.op,
        }
        headers = {"Content-Type": "application/json"}
        if call.headers:
            headers.update(call.headers)
        # Upstream sends a body only when there is one (XA branches always POST).
        method = "POST" if call.payload or call.trans_type == consts.XA else "GET"
        try:
            async with self.session.request(
                method,
                call.url,
                params=params,
                data=call.payload if method == "POST" else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=call.timeout),
            ) as resp:
                raw = await resp.read()
                body = raw[:_MAX_BODY_KEPT].decode("utf-8", "replace")
                return read_http_answer(resp.status, body)
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s calling {call.url}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return CallResult(Outcome.ERROR, f"calling {call.url}: {type(exc).__name__}: {exc}")

    async def _call_jsonrpc(self, call: BranchCall) -> CallResult:
        try:
            params = msgspec.json.decode(call.payload) if call.payload else {}
        except msgspec.DecodeError as exc:
            return CallResult(Outcome.ERROR, f"json-rpc branch payload is not JSON: {exc}")
        if not isinstance(params, dict):
            return CallResult(Outcome.ERROR, "json-rpc branch payload is not a JSON object")
        params.update(gid=call.gid, trans_type=call.trans_type, branch_id=call.branch_id)
        params["op"] = call.op
        method = parse_qs(urlsplit(call.url).query).get("method", [""])[0]
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": uuid.uuid4().hex}
        headers = {"Content-Type": "application/json"}
        if call.headers:
            headers.update(call.headers)
        try:
            async with self.session.post(
                call.url,
                data=msgspec.json.encode(request),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=call.timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            return CallResult(Outcome.ERROR, f"timeout after {call.timeout:g}s calling {call.url}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return CallResult(Outcome.ERROR, f"calling {call.url}: {type(exc).__name__}: {exc}")
        body = raw[:_MAX_BODY_KEPT].decode("utf-8", "replace")
        result = read_http_answer(status, body)
        if result.outcome is not Outcome.SUCCESS:
            return result
        return read_jsonrpc_answer(raw, body)


def read_jsonrpc_answer(raw: bytes, detail: str) -> CallResult:
    """The `error` of a JSON-RPC answer that HTTP read as a success."""
    try:
        answer: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return CallResult(Outcome.ERROR, f"json-rpc answer is not JSON: {detail}")
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is None:
        if not isinstance(answer, dict):
            return CallResult(Outcome.ERROR, f"json-rpc answer is not an object: {detail}")
        return SUCCESS
    code = error.get("code") if isinstance(error, dict) else None
    if code == consts.JRPC_CODE_FAILURE:
        return CallResult(Outcome.FAILURE, detail)
    if code == consts.JRPC_CODE_ONGOING:
        return CallResult(Outcome.ONGOING, detail)
    return CallResult(Outcome.ERROR, f"json-rpc error: {detail}")
