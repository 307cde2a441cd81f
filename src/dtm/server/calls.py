"""What a branch call is and what came of it, whatever the protocol (HTTP, JSON-RPC, gRPC)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from dtm.protocol import consts


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
