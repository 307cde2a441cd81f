"""Interceptors around a workflow's branch calls, against the real server and the business
stub: a header reaching actions and phase-2 calls, the order of a chain, answers made up
without a call, replay on resume without the chain, and a raised FailureError."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dtm.errors import FailureError
from dtm.workflow import (
    CallInfo,
    CallNext,
    HttpRequest,
    HttpResponse,
    Interceptor,
    Phase2,
    SyncPhase2,
    SyncWorkflow,
    Workflow,
    Workflows,
)
from tests.harness import FAILURE, Answer, DtmServer, Endpoints


def with_header(request: HttpRequest, name: str, value: str) -> HttpRequest:
    return dataclasses.replace(request, headers={**request.headers, name: value})


class Tracer:
    """Adds `X-Trace: gid/branch/op` to every call and logs each call with its status."""

    def __init__(self) -> None:
        self.log: list[tuple[CallInfo, str, int]] = []

    async def __call__(
        self, info: CallInfo, request: HttpRequest, call_next: CallNext
    ) -> HttpResponse:
        trace = f"{info.gid}/{info.branch_id}/{info.op}"
        response = await call_next(with_header(request, "X-Trace", trace))
        self.log.append((info, request.url.split("?")[0], response.status))
        return response


async def test_header_reaches_actions_and_rollbacks(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("b", FAILURE)
    tracer = Tracer()

    async def undo_a(p: Phase2) -> None:
        await p.call(busi.url("a-revert"))

    async with Workflows(
        dtm.api, callback_url=busi.url("callback"), interceptors=[tracer]
    ) as workflows:

        @workflows.register("traced")
        async def traced(wf: Workflow, data: bytes) -> None:
            await wf.call(busi.url("a"), on_rollback=undo_a)
            await wf.do(lambda info: b"local")  # no HTTP call: not intercepted
            await wf.call(busi.url("b"))

        with pytest.raises(FailureError, match="business said no"):
            await workflows.execute("traced", gid)

    assert busi.calls("a")[0].headers["X-Trace"] == f"{gid}/01/action"
    assert busi.calls("b")[0].headers["X-Trace"] == f"{gid}/03/action"
    assert busi.calls("a-revert")[0].headers["X-Trace"] == f"{gid}/01/rollback"
    # Only the branch calls: none of the calls to the DTM server.
    assert tracer.log == [
        (CallInfo("traced", gid, "01", "action"), busi.url("a"), 200),
        (CallInfo("traced", gid, "03", "action"), busi.url("b"), 409),
        (CallInfo("traced", gid, "01", "rollback"), busi.url("a-revert"), 200),
    ]
    assert dtm.status(gid) == "failed"


async def test_first_interceptor_is_outermost(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("x", Answer(200, "body"))
    events: list[str] = []

    def named(name: str) -> Interceptor:
        async def interceptor(
            info: CallInfo, request: HttpRequest, call_next: CallNext
        ) -> HttpResponse:
            events.append(f"{name}>")
            chain = request.headers.get("X-Chain")
            request = with_header(request, "X-Chain", f"{chain},{name}" if chain else name)
            response = await call_next(request)
            events.append(f"{name}<")
            return HttpResponse(response.status, response.body + f"+{name}".encode())

        return interceptor

    async with Workflows(
        dtm.api, callback_url=busi.url("callback"), interceptors=[named("a"), named("b")]
    ) as workflows:

        async def one_call(wf: Workflow, data: bytes) -> bytes:
            return (await wf.call(busi.url("x"))).body

        workflows.register("ordered", one_call)
        assert await workflows.execute("ordered", gid) == b"body+b+a"

    assert events == ["a>", "b>", "b<", "a<"]
    assert busi.calls("x")[0].headers["X-Chain"] == "a,b"
    # What is recorded is what the whole chain answered.
    assert dtm.branch_records(gid) == [("01", "action", "succeed", b"body+b+a")]


async def test_interceptor_answers_without_calling(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    cache = {busi.url("cached"): b"from cache"}

    async def cached(info: CallInfo, request: HttpRequest, call_next: CallNext) -> HttpResponse:
        hit = cache.get(request.url.split("?")[0])
        return HttpResponse(200, hit) if hit is not None else await call_next(request)

    async with Workflows(
        dtm.api, callback_url=busi.url("callback"), interceptors=[cached]
    ) as workflows:

        async def two_calls(wf: Workflow, data: bytes) -> bytes:
            one = await wf.call(busi.url("cached"))
            two = await wf.call(busi.url("live"))
            return one.body + b"|" + two.body

        workflows.register("cached", two_calls)
        result = await workflows.execute("cached", gid)

    assert result == b'from cache|{"dtm_result": "SUCCESS"}'
    assert busi.count("cached") == 0
    assert busi.count("live") == 1
    assert dtm.branch_records(gid)[0] == ("01", "action", "succeed", b"from cache")


async def test_replay_after_resume_skips_the_chain(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("b1", Answer(200, "first"))
    busi.program("b2", Answer(200, "second"))

    async def tag_then_break(
        info: CallInfo, request: HttpRequest, call_next: CallNext
    ) -> HttpResponse:
        if info.branch_id == "02":
            raise RuntimeError("injected outage")
        response = await call_next(request)
        return HttpResponse(response.status, response.body + b"+tagged")

    def register(workflows: Workflows) -> None:
        async def resumable(wf: Workflow, data: bytes) -> bytes:
            one = await wf.call(busi.url("b1"))
            two = await wf.call(busi.url("b2"))
            return one.body + b"|" + two.body

        workflows.register("resumable", resumable)

    # A long retry interval keeps the server's call-back out of the test: it resumes itself.
    options: dict[str, Any] = {"callback_url": busi.url("callback"), "retry_interval": 60}
    async with Workflows(dtm.api, interceptors=[tag_then_break], **options) as first:
        register(first)
        # Not a FailureError: nothing recorded for branch 02, the workflow left prepared.
        with pytest.raises(RuntimeError, match="injected outage"):
            await first.execute("resumable", gid)
    assert dtm.status(gid) == "prepared"
    assert busi.count("b2") == 0

    tracer = Tracer()
    async with Workflows(dtm.api, interceptors=[tracer], **options) as resumed:
        register(resumed)
        assert await resumed.execute("resumable", gid) == b"first+tagged|second"

    assert busi.count("b1") == 1
    assert busi.count("b2") == 1
    assert [(info.branch_id, info.op) for info, _, _ in tracer.log] == [("02", "action")]
    assert busi.calls("b2")[0].headers["X-Trace"] == f"{gid}/02/action"
    assert dtm.status(gid) == "succeed"


async def test_interceptor_raising_failure_rolls_back(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    async def reject_02(info: CallInfo, request: HttpRequest, call_next: CallNext) -> HttpResponse:
        if (info.branch_id, info.op) == ("02", "action"):
            raise FailureError("injected failure")
        return await call_next(request)

    async def undo_a(p: Phase2) -> None:
        await p.call(busi.url("a-revert"))

    async with Workflows(
        dtm.api, callback_url=busi.url("callback"), interceptors=[reject_02]
    ) as workflows:

        async def fails(wf: Workflow, data: bytes) -> None:
            await wf.call(busi.url("a"), on_rollback=undo_a)
            await wf.call(busi.url("b"))

        workflows.register("rejected", fails)
        with pytest.raises(FailureError, match="injected failure"):
            await workflows.execute("rejected", gid)

    assert busi.count("b") == 0
    assert busi.count("a-revert") == 1
    assert dtm.status(gid) == "failed"
    assert dtm.branch_records(gid) == [
        ("01", "action", "succeed", b'{"dtm_result": "SUCCESS"}'),
        ("02", "action", "failed", b"injected failure"),
        ("01", "rollback", "succeed", b""),
    ]


async def test_sync_workflow_calls_are_intercepted(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    tracer = Tracer()

    def confirm(p: SyncPhase2) -> None:  # a blocking phase-2 callable, in a worker thread
        p.call(busi.url("s-confirm"))

    def sync_fn(wf: SyncWorkflow, data: bytes) -> str:
        return wf.call(busi.url("s"), on_commit=confirm).text

    async with Workflows(
        dtm.api, callback_url=busi.url("callback"), interceptors=[tracer]
    ) as workflows:
        workflows.register("sync", sync_fn)
        await workflows.execute("sync", gid)

    assert busi.calls("s")[0].headers["X-Trace"] == f"{gid}/01/action"
    assert busi.calls("s-confirm")[0].headers["X-Trace"] == f"{gid}/01/commit"
    assert [(info.workflow, info.op) for info, _, _ in tracer.log] == [
        ("sync", "action"),
        ("sync", "commit"),
    ]
    assert dtm.status(gid) == "succeed"
