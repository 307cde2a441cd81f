"""Django helpers.

    @csrf_exempt
    @dtm_branch
    def trans_in(request: HttpRequest) -> None:
        branch_barrier(request).call(connect(), lambda c: ...)   # None answers 200 SUCCESS

`DtmMiddleware` (add "dtm.web.django.DtmMiddleware" to MIDDLEWARE) answers DTM's
exceptions from every view instead; `dtm_branch` is enough for the views it decorates.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec

from django.http import HttpRequest, HttpResponse, JsonResponse

from dtm.barrier import BranchBarrier
from dtm.web._core import HANDLED, TransInfo, answer

__all__ = ["DtmMiddleware", "branch_barrier", "dtm_branch", "dtm_response", "trans_info"]

_P = ParamSpec("_P")


def trans_info(request: HttpRequest) -> TransInfo:
    """The transaction info DTM put in the request's query parameters."""
    return TransInfo.from_query(request.GET)


def branch_barrier(
    request: HttpRequest, *, dialect: str | None = None, table: str | None = None
) -> BranchBarrier:
    """The request's sub-transaction barrier."""
    return trans_info(request).barrier(dialect=dialect, table=table)


def dtm_response(exc: BaseException | None = None) -> JsonResponse:
    """The answer DTM expects for a branch that ended with `exc` (None: success).

    Raises `exc` itself when it is not one of DTM's results, so Django answers 500.
    """
    status, body = answer(exc)
    return JsonResponse(body, status=status)


def dtm_branch(
    view: Callable[Concatenate[HttpRequest, _P], HttpResponse | None],
) -> Callable[Concatenate[HttpRequest, _P], HttpResponse]:
    """Make a (synchronous) view a DTM branch: a None return answers 200 SUCCESS, and
    FailureError, OngoingError and DuplicateError answer 409 / 425 / 200 with DTM's body."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, /, *args: _P.args, **kwargs: _P.kwargs) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except HANDLED as exc:
            return dtm_response(exc)
        return dtm_response() if response is None else response

    return wrapper


class DtmMiddleware:
    """Answers FailureError, OngoingError and DuplicateError raised by any view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Django's hook: a response for DTM's exceptions, None (Django's 500) for others."""
        if isinstance(exception, HANDLED):
            return dtm_response(exception)
        return None
