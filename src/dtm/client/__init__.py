"""The DTM SDK: clients for DTM's HTTP API and its transaction modes.

`AsyncDtmClient` (asyncio, aiohttp) and `DtmClient` (blocking, urllib3) have the same API;
both drive one sans-I/O core, so they speak the protocol identically. Errors are those of
`dtm.errors`: `FailureError` (409 / FAILURE), `OngoingError` (425 / ONGOING),
`TransportError` (no answer, or an answer outside the protocol).
"""

from __future__ import annotations

from dtm.client._core import BranchIdGen, HttpResponse, QueryResult
from dtm.client._modes import SagaStep, TransOptionsArgs, XaBranchInfo
from dtm.client._settings import ClientSettings
from dtm.client.aio import AsyncDtmClient, AsyncMsg, AsyncSaga, AsyncTcc, AsyncXa
from dtm.client.sync import DtmClient, Msg, Saga, Tcc, Xa

__all__ = [
    "AsyncDtmClient",
    "AsyncMsg",
    "AsyncSaga",
    "AsyncTcc",
    "AsyncXa",
    "BranchIdGen",
    "ClientSettings",
    "DtmClient",
    "HttpResponse",
    "Msg",
    "QueryResult",
    "Saga",
    "SagaStep",
    "Tcc",
    "TransOptionsArgs",
    "Xa",
    "XaBranchInfo",
]
