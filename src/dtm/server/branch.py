"""Outbound calls from the server to business branches, read as upstream reads them.

One aiohttp session (one connection pool) per process. A call's outcome is one of four:
success (HTTP 200), failure (409 or a body saying FAILURE), ongoing (425 or a body saying
ONGOING), or an error (anything else: other codes, timeouts, refused connections), which the
engine retries with back-off.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from dtm.protocol import consts

log = logging.getLogger(__name__)

# Enough of a branch's answer to explain a failure; more is noise in rollback_reason.
_MAX_BODY_KEPT = 1024


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    ONGOING = "ongoing"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CallResult:
    outcome: Outcome
    detail: str = ""


SUCCESS = CallResult(Outcome.SUCCESS)


@dataclass(frozen=True, slots=True)
class BranchCall:
    """Everything needed to call one branch operation."""

    url: str
    gid: str
    trans_type: str
    branch_id: str
    op: str
    payload: bytes = b""
    headers: Mapping[str, str] | None = None
    timeout: float = 3.0
    protocol: str = consts.PROTOCOL_HTTP


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
    """Calls branches over HTTP; gRPC and JSON-RPC branches plug in here later."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, skip_auto_headers=("User-Agent",)
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "BranchCaller.start() was not awaited"
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, call: BranchCall) -> CallResult:
        """Call one branch; never raises for the branch's own misbehaviour."""
        if not call.url:
            return SUCCESS  # an empty URL is a branch with nothing to do, as upstream
        if call.protocol == consts.PROTOCOL_GRPC and not call.url.startswith(
            ("http://", "https://")
        ):
            return CallResult(Outcome.ERROR, "gRPC branches are not supported by this server yet")
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
