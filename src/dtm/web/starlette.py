"""Starlette and FastAPI helpers (a FastAPI app is a Starlette app).

    app = FastAPI()
    add_dtm_exception_handlers(app)

    @app.post("/TransIn")
    def trans_in(info: TransInfo = Depends(trans_info)) -> dict[str, str]:
        with connect() as conn:
            info.barrier().call(conn, lambda c: ...)
        return success()

`trans_info` and `branch_barrier` take only the request, so they serve both as FastAPI
dependencies and as plain calls in Starlette endpoints.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dtm.barrier import BranchBarrier
from dtm.protocol import consts
from dtm.web._core import HANDLED, TransInfo, answer

__all__ = [
    "add_dtm_exception_handlers",
    "branch_barrier",
    "dtm_response",
    "success",
    "trans_info",
]


def trans_info(request: Request) -> TransInfo:
    """The transaction info DTM put in the request's query parameters."""
    return TransInfo.from_query(request.query_params)


def branch_barrier(request: Request) -> BranchBarrier:
    """The request's sub-transaction barrier, its dialect detected from the connection.

    For another dialect or table, use `trans_info(request).barrier(dialect=..., table=...)`.
    """
    return trans_info(request).barrier()


def success() -> dict[str, str]:
    """The body of a successful branch answer: `{"dtm_result": "SUCCESS"}`."""
    return {"dtm_result": consts.RESULT_SUCCESS}


def dtm_response(exc: BaseException | None = None) -> JSONResponse:
    """The answer DTM expects for a branch that ended with `exc` (None: success).

    Raises `exc` itself when it is not one of DTM's results, so the framework answers 500.
    """
    status, body = answer(exc)
    return JSONResponse(body, status_code=status)


async def _handle(request: Request, exc: Exception) -> Response:
    return dtm_response(exc)


def add_dtm_exception_handlers(app: Starlette) -> None:
    """Answer FailureError with 409 FAILURE, OngoingError with 425 ONGOING and
    DuplicateError with 200 SUCCESS, in every route of `app` (FastAPI's too)."""
    for exc_type in HANDLED:
        app.add_exception_handler(exc_type, _handle)
