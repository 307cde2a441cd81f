"""One exception tree for DTM's result vocabulary, shared by server and SDK.

DtmError
├── FailureError      the transaction or branch failed: HTTP 409, result FAILURE, gRPC ABORTED
├── OngoingError      not finished yet, ask again later: HTTP 425, result ONGOING,
│                     gRPC FAILED_PRECONDITION
├── DuplicateError    the request repeats one already done (barrier, msg do_and_submit)
└── TransportError    the peer could not be reached or answered nonsense; retry

Each class says how it travels (`result`, `http_status`, `grpc_code`), so code that answers
DTM by hand, in a framework the SDK has no helper for, need not repeat upstream's table.
"""

from __future__ import annotations

from typing import ClassVar


class DtmError(Exception):
    """Root of every error this package raises on purpose."""

    result: ClassVar[str | None] = None
    """The `dtm_result` string upstream uses for this outcome, if it has one."""
    http_status: ClassVar[int | None] = None
    """The HTTP status a branch answers to report this outcome to DTM, if any."""
    grpc_code: ClassVar[str | None] = None
    """The name of the gRPC status code that reports this outcome (`grpc.StatusCode[...]`)."""


class FailureError(DtmError):
    """A definite failure: the transaction rolls back, retrying will not help."""

    result = "FAILURE"
    http_status = 409
    grpc_code = "ABORTED"


class OngoingError(DtmError):
    """Not finished yet: the same request is expected to be retried later."""

    result = "ONGOING"
    http_status = 425
    grpc_code = "FAILED_PRECONDITION"


class DuplicateError(DtmError):
    """A repeated request that was already applied."""

    result = "DUPLICATED"


class TransportError(DtmError):
    """The other side was unreachable or answered outside the protocol; retrying may help."""
