"""Builds the ASGI application; its lifespan owns the store, the branch caller, the
processor and its recovery loop, so nothing global outlives one app."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dtm.server.api import grpc as grpc_api
from dtm.server.api import jsonrpc
from dtm.server.api.http import json_response, routes
from dtm.server.api.openapi import build_openapi
from dtm.server.branch import BranchCaller
from dtm.server.config import Config
from dtm.server.engine.run import EngineContext
from dtm.server.engine.schedule import Schedule
from dtm.server.housekeeping import Housekeeper
from dtm.server.processor import Processor
from dtm.server.service import Service
from dtm.server.stores import make_store
from dtm.server.stores.base import Store, StoreUnavailable

log = logging.getLogger(__name__)


def schedule_of(conf: Config) -> Schedule:
    return Schedule(
        retry_interval=conf.RetryInterval,
        max_retry_interval=conf.MaxRetryInterval,
        jitter=conf.RetryJitter,
        request_timeout=conf.RequestTimeout,
    )


class Alerter:
    """Posts to `AlertWebHook` when a branch keeps failing; a dead hook is only logged."""

    def __init__(self, url: str, caller: BranchCaller) -> None:
        self.url = url
        self.caller = caller

    async def __call__(self, event: dict[str, object]) -> None:
        session = self.caller.session
        try:
            async with session.post(
                self.url, json=event, timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.error("alert webhook %s failed: %s", self.url, exc)


def create_app(conf: Config, *, store: Store | None = None) -> Starlette:
    store = store or make_store(conf.Store)
    caller = BranchCaller()
    schedule = schedule_of(conf)
    ctx = EngineContext(
        store=store,
        caller=caller,
        schedule=schedule,
        timeout_to_fail=conf.TimeoutToFail,
        alert_retry_limit=conf.AlertRetryLimit,
        alert=Alerter(conf.AlertWebHook, caller) if conf.AlertWebHook else None,
        defer_branch_saves=conf.UpdateBranchSync == 0,
    )
    processor = Processor(
        ctx,
        cron_interval=conf.TransCronInterval,
        lock_lease=max(float(conf.RetryInterval), conf.RequestTimeout + 1.0),
    )
    service = Service(store, processor, schedule, timeout_to_fail=conf.TimeoutToFail)
    housekeeper = Housekeeper(
        store, retention=conf.Store.FinishedDataExpire, interval=conf.PurgeInterval
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await store.open()
        if conf.Store.AutoMigrate:
            await store.migrate()
        await caller.start()
        grpc_server, grpc_port = await grpc_api.start_server(
            service, host=conf.HttpHost, port=conf.GrpcPort
        )
        log.info("grpc listening on %s:%d", conf.HttpHost, grpc_port)
        processor.start_cron()
        housekeeper.start()
        try:
            yield
        finally:
            await grpc_server.stop(grace=2)
            await housekeeper.stop()
            await processor.stop()
            await caller.close()
            await store.close()

    async def ping(_: Request) -> Response:
        return json_response({"msg": "pong"})

    async def health(_: Request) -> Response:
        try:
            await store.ping()
        except StoreUnavailable as exc:
            return json_response({"status": "unavailable", "store": str(exc)}, 503)
        return json_response({"status": "ok"})

    openapi_doc = build_openapi()

    async def openapi(_: Request) -> Response:
        return json_response(openapi_doc)

    app_routes = [
        *jsonrpc.routes(service),
        Route("/api/ping", ping, methods=["GET", "POST", "HEAD"]),
        Route("/api/health", health, methods=["GET"]),
        Route("/api/dtmsvr/openapi.json", openapi, methods=["GET"]),
        *routes(service),
    ]
    app = Starlette(routes=app_routes, lifespan=lifespan)
    app.state.service = service
    return app
