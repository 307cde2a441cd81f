"""Django views served by Django's own WSGI handler under werkzeug, with minimal settings
configured here (the test process has no other Django project). This module is also the
ROOT_URLCONF."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import django
import pytest
import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from dtm.errors import DuplicateError, FailureError, OngoingError
from dtm.web.django import branch_barrier, dtm_branch, dtm_response, trans_info
from tests.web.checks import check_all
from tests.web.conftest import serve_wsgi


@csrf_exempt
def info(request: HttpRequest) -> HttpResponse:
    return JsonResponse(dataclasses.asdict(trans_info(request)))


@csrf_exempt
def barrier(request: HttpRequest) -> HttpResponse:
    b = branch_barrier(request, dialect="sqlite")
    return JsonResponse(
        {"trans_type": b.trans_type, "gid": b.gid, "branch_id": b.branch_id, "op": b.op}
    )


@csrf_exempt
@dtm_branch
def ok(request: HttpRequest) -> None:
    return None


@csrf_exempt
@dtm_branch
def fail(request: HttpRequest) -> None:
    raise FailureError("no money")


@csrf_exempt
@dtm_branch
def ongoing(request: HttpRequest) -> None:
    raise OngoingError("later")


@csrf_exempt
@dtm_branch
def dup(request: HttpRequest) -> None:
    raise DuplicateError("again")


@csrf_exempt
@dtm_branch
def boom(request: HttpRequest) -> None:
    raise RuntimeError("boom")


@csrf_exempt
def plain_fail(request: HttpRequest) -> HttpResponse:
    """No decorator: only DtmMiddleware turns this into 409."""
    raise FailureError("no money")


@csrf_exempt
def plain_ongoing(request: HttpRequest) -> HttpResponse:
    raise OngoingError("later")


@csrf_exempt
@dtm_branch
def text(request: HttpRequest) -> HttpResponse:
    return HttpResponse("plain", status=202)


_views = {
    "info": info,
    "barrier": barrier,
    "ok": ok,
    "fail": fail,
    "ongoing": ongoing,
    "dup": dup,
    "boom": boom,
}
urlpatterns = [
    *(path(name, view) for name, view in _views.items()),
    path("plain/fail", plain_fail),
    path("plain/ongoing", plain_ongoing),
    path("text", text),
]


@pytest.fixture(scope="module")
def django_base() -> Iterator[str]:
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[
                "django.middleware.common.CommonMiddleware",
                "dtm.web.django.DtmMiddleware",
            ],
            INSTALLED_APPS=[],
            APPEND_SLASH=False,
            LOGGING_CONFIG=None,  # the test process's logging is pytest's
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    with serve_wsgi(get_wsgi_application()) as base:
        yield base


def test_answers_over_http(django_base: str) -> None:
    check_all(django_base)


def test_middleware_answers_undecorated_views(django_base: str) -> None:
    resp = requests.post(f"{django_base}/plain/fail", timeout=10)
    assert resp.status_code == 409
    assert resp.json() == {"dtm_result": "FAILURE", "message": "no money"}
    resp = requests.post(f"{django_base}/plain/ongoing", timeout=10)
    assert resp.status_code == 425
    assert resp.json() == {"dtm_result": "ONGOING", "message": "later"}


def test_dtm_branch_passes_responses_through(django_base: str) -> None:
    resp = requests.post(f"{django_base}/text", timeout=10)
    assert (resp.status_code, resp.text) == (202, "plain")
    with pytest.raises(KeyError):
        dtm_response(KeyError("k"))
