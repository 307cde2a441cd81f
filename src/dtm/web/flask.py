"""Flask helpers.

    app = Flask(__name__)
    register_dtm_error_handlers(app)

    @app.post("/TransIn")
    @dtm_branch
    def trans_in() -> None:
        branch_barrier().call(connect(), lambda c: ...)   # None answers 200 SUCCESS

`trans_info()` and `branch_barrier()` read the current `flask.request`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

from dtm.barrier import BranchBarrier
from dtm.web._core import HANDLED, TransInfo, answer

__all__ = [
    "branch_barrier",
    "dtm_branch",
    "dtm_response",
    "register_dtm_error_handlers",
    "trans_info",
]

_P = ParamSpec("_P")


def trans_info() -> TransInfo:
    """The transaction info DTM put in the current request's query parameters."""
    return TransInfo.from_query(request.args)


def branch_barrier(*, dialect: str | None = None, table: str | None = None) -> BranchBarrier:
    """The current request's sub-transaction barrier."""
    return trans_info().barrier(dialect=dialect, table=table)


def dtm_response(exc: BaseException | None = None) -> Response:
    """The answer DTM expects for a branch that ended with `exc` (None: success).

    Raises `exc` itself when it is not one of DTM's results, so Flask answers 500.
    """
    status, body = answer(exc)
    response = jsonify(body)
    response.status_code = status
    return response


def register_dtm_error_handlers(app: Flask) -> None:
    """Answer FailureError with 409 FAILURE, OngoingError with 425 ONGOING and
    DuplicateError with 200 SUCCESS, in every view of `app`."""
    for exc_type in HANDLED:
        app.register_error_handler(exc_type, dtm_response)


def dtm_branch(view: Callable[_P, Any]) -> Callable[_P, ResponseReturnValue]:
    """Make a (synchronous) view a DTM branch: a None return answers 200 SUCCESS, and FailureError,
    OngoingError and DuplicateError answer as `register_dtm_error_handlers` does (so the
    decorator works without the handlers). Any other return value is Flask's to render."""

    @functools.wraps(view)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> ResponseReturnValue:
        try:
            result = view(*args, **kwargs)
        except HANDLED as exc:
            return dtm_response(exc)
        if result is None:
            return dtm_response()
        rv: ResponseReturnValue = result
        return rv

    return wrapper
