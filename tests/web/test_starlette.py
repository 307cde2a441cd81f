from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dtm.barrier import BranchBarrier
from dtm.errors import DuplicateError, FailureError, OngoingError
from dtm.web import TransInfo
from dtm.web.starlette import (
    add_dtm_exception_handlers,
    branch_barrier,
    dtm_response,
    success,
    trans_info,
)
from tests.web.checks import check_all
from tests.web.conftest import serve_asgi


def barrier_fields(barrier: BranchBarrier) -> dict[str, str]:
    return {
        "trans_type": barrier.trans_type,
        "gid": barrier.gid,
        "branch_id": barrier.branch_id,
        "op": barrier.op,
    }


def fastapi_app() -> FastAPI:
    app = FastAPI()
    add_dtm_exception_handlers(app)

    @app.post("/info")
    def info(info: TransInfo = Depends(trans_info)) -> dict[str, Any]:  # noqa: B008
        return dataclasses.asdict(info)

    @app.post("/barrier")
    def barrier(barrier: BranchBarrier = Depends(branch_barrier)) -> dict[str, str]:  # noqa: B008
        return barrier_fields(barrier)

    @app.post("/ok")
    def ok() -> dict[str, str]:
        return success()

    @app.post("/fail")
    def fail() -> None:
        raise FailureError("no money")

    @app.post("/ongoing")
    async def ongoing() -> None:
        raise OngoingError("later")

    @app.post("/dup")
    def dup() -> None:
        raise DuplicateError("again")

    @app.post("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    return app


def starlette_app() -> Starlette:
    async def info(request: Request) -> JSONResponse:
        return JSONResponse(dataclasses.asdict(trans_info(request)))

    async def barrier(request: Request) -> JSONResponse:
        return JSONResponse(barrier_fields(branch_barrier(request)))

    async def ok(request: Request) -> JSONResponse:
        return dtm_response()

    async def fail(request: Request) -> JSONResponse:
        raise FailureError("no money")

    async def ongoing(request: Request) -> JSONResponse:
        raise OngoingError("later")

    async def dup(request: Request) -> JSONResponse:
        raise DuplicateError("again")

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    endpoints = {
        "info": info,
        "barrier": barrier,
        "ok": ok,
        "fail": fail,
        "ongoing": ongoing,
        "dup": dup,
        "boom": boom,
    }
    app = Starlette(routes=[Route(f"/{n}", e, methods=["POST"]) for n, e in endpoints.items()])
    add_dtm_exception_handlers(app)
    return app


@pytest.mark.parametrize("make_app", [fastapi_app, starlette_app])
def test_answers_over_http(make_app: Any) -> None:
    with serve_asgi(make_app()) as base:
        check_all(base)


def test_dtm_response_reraises_other_exceptions() -> None:
    with pytest.raises(KeyError):
        dtm_response(KeyError("k"))
