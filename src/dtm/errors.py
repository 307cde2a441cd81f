"""One exception tree for DTM's result vocabulary, shared by server and SDK.

DtmError
├── FailureError      the transaction or branch failed: HTTP 409, result FAILURE
├── OngoingError      not finished yet, ask again later: HTTP 425, result ONGOING
├── DuplicateError    the request repeats one already done (barrier, msg do_and_submit)
└── TransportError    the peer could not be reached or answered nonsense; retry
"""

from __future__ import annotations


class DtmError(Exception):
    """Root of every error this package raises on purpose."""


class FailureError(DtmError):
    """A definite failure: the transaction rolls back, retrying will not help."""


class OngoingError(DtmError):
    """Not finished yet: the same request is expected to be retried later."""


class DuplicateError(DtmError):
    """A repeated request that was already applied."""


class TransportError(DtmError):
    """The other side was unreachable or answered outside the protocol; retrying may help."""
