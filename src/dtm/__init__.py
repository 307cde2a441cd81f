"""dtm-py: the Python implementation of DTM, the distributed transaction manager.

This package's top level is the SDK facade: the clients, their transaction modes and the
exception tree. The server lives in `dtm.server` and is never imported from here.
"""

from __future__ import annotations

from dtm.barrier import BranchBarrier
from dtm.client import (
    AsyncDtmClient,
    AsyncMsg,
    AsyncSaga,
    AsyncTcc,
    AsyncXa,
    DtmClient,
    Msg,
    QueryResult,
    Saga,
    SagaStep,
    Tcc,
    Xa,
    XaBranchInfo,
)
from dtm.errors import DtmError, DuplicateError, FailureError, OngoingError, TransportError

__version__ = "0.1.0"

__all__ = [
    "AsyncDtmClient",
    "AsyncMsg",
    "AsyncSaga",
    "AsyncTcc",
    "AsyncXa",
    "BranchBarrier",
    "DtmClient",
    "DtmError",
    "DuplicateError",
    "FailureError",
    "Msg",
    "OngoingError",
    "QueryResult",
    "Saga",
    "SagaStep",
    "Tcc",
    "TransportError",
    "Xa",
    "XaBranchInfo",
    "__version__",
]
