"""Durable workflows against the real server and the business stub: branches recorded,
phase 2 run, outcomes submitted, and an unfinished workflow resumed by the server's call-back
with its recorded results replayed."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from dtm.errors import FailureError, TransportError
from dtm.workflow import BranchInfo, Phase2, SyncPhase2, SyncWorkflow, Workflow, Workflows
from tests.harness import ERROR, FAILURE, Answer, DtmServer, Endpoints, slow


def answer(body: str) -> Answer:
    return Answer(200, body)


@asynccontextmanager
async def callback_app(
    target: Callable[[], Workflows | None],
) -> AsyncIterator[str]:
    """The app's call-back endpoint, served in the test's own loop: it hands each call to
    whatever `Workflows` `target` returns at that moment (the "restarted process")."""

    async def handle(request: web.Request) -> web.Response:
        workflows = target()
        if workflows is None:
            return web.json_response({"message": "not up yet"}, status=503)
        status, body = await workflows.handle_callback_request(request.query, await request.read())
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/workflow", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}/workflow"
    finally:
        await runner.cleanup()


async def test_success_records_branches_commits_and_submits(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("out", answer('{"out":1}'))
    seen: list[BranchInfo] = []

    async def confirm(p: Phase2) -> None:
        await p.call(busi.url("confirm"), {"b": p.info.branch_id})

    async def local(info: BranchInfo) -> bytes:
        seen.append(info)
        return b"local result"

    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:

        @workflows.register("transfer")
        async def transfer(wf: Workflow, data: bytes) -> bytes:
            wf.on_rollback(lambda p: p.call(busi.url("out-revert")))
            out = await wf.call(busi.url("out"), {"amount": 30})
            await wf.call(busi.url("in"), {"amount": 30}, on_commit=confirm)
            done = await wf.do(local)
            return out.body + b"|" + done + b"|" + data

        result = await workflows.execute("transfer", gid, b"input")
        assert result == b'{"out":1}|local result|input'
        # A finished workflow answers its stored result without running again.
        assert await workflows.execute("transfer", gid, b"input") == result

    trans = dtm.query(gid)["transaction"]
    assert trans["status"] == "succeed"
    assert base64.b64decode(trans["result"]) == result
    assert trans["query_prepared"] == busi.url("callback")
    assert dtm.branch_records(gid) == [
        ("01", "action", "succeed", b'{"out":1}'),
        ("02", "action", "succeed", b'{"dtm_result": "SUCCESS"}'),
        ("03", "action", "succeed", b"local result"),
        ("02", "commit", "succeed", b""),
    ]
    (out,) = busi.calls("out")
    assert out.query == {"gid": gid, "trans_type": "workflow", "branch_id": "01", "op": "action"}
    assert out.json() == {"amount": 30}
    (confirm_call,) = busi.calls("confirm")
    assert confirm_call.query["op"] == "commit"
    assert confirm_call.query["branch_id"] == "02"
    assert confirm_call.json() == {"b": "02"}
    assert busi.count("out-revert") == 0
    assert [(i.gid, i.branch_id, i.op) for i in seen] == [(gid, "03", "action")]


async def test_failure_rolls_back_in_reverse_and_submits_failed(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("c", FAILURE)
    order: list[str] = []

    def undo_local(p: SyncPhase2) -> None:  # a sync phase-2 callable, in a worker thread
        order.append(f"local {p.info.branch_id} {p.info.op}")

    async def undo_a(p: Phase2) -> None:
        order.append(f"a {p.info.branch_id}")
        await p.call(busi.url("a-revert"))

    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:

        async def wf_fn(wf: Workflow, data: bytes) -> None:
            await wf.call(busi.url("a"), on_rollback=undo_a)
            await wf.do(lambda info: b"ok", on_rollback=undo_local)
            wf.on_rollback(lambda p: order.append("c"))  # c fails: nothing to undo
            await wf.call(busi.url("c"))
            order.append("never")

        workflows.register("fails", wf_fn)
        with pytest.raises(FailureError, match="business said no"):
            await workflows.execute("fails", gid)

    assert order == ["local 02 rollback", "a 01"]
    trans = dtm.query(gid)["transaction"]
    assert trans["status"] == "failed"
    assert "business said no" in trans["rollback_reason"]
    recorded = dtm.branch_records(gid)
    assert recorded[:3] == [
        ("01", "action", "succeed", b'{"dtm_result": "SUCCESS"}'),
        ("02", "action", "succeed", b"ok"),
        ("03", "action", "failed", recorded[2][3]),
    ]
    assert b"business said no" in recorded[2][3]
    assert recorded[3:] == [("02", "rollback", "succeed", b""), ("01", "rollback", "succeed", b"")]
    (revert,) = busi.calls("a-revert")
    assert revert.query["op"] == "rollback"
    assert revert.query["branch_id"] == "01"


async def test_unfinished_workflow_is_resumed_by_the_call_back(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("b1", answer("first"))
    busi.program("b2", ERROR, answer("second"))
    local_runs: list[str] = []
    restarted: Workflows | None = None

    def local_step(info: BranchInfo) -> str:
        local_runs.append(info.branch_id)
        return "L"

    def register(workflows: Workflows) -> None:
        @workflows.register("resumable")
        async def resumable(wf: Workflow, data: bytes) -> bytes:
            one = await wf.call(busi.url("b1"), data)
            local = await wf.do(local_step)
            two = await wf.call(busi.url("b2"), data)
            return one.body + local + two.body

    async with callback_app(lambda: restarted) as url:
        first = Workflows(dtm.api, callback_url=url, retry_interval=1)
        register(first)
        with pytest.raises(TransportError, match="500"):
            await first.execute("resumable", gid, b"payload")
        await first.aclose()  # the process "dies"; the workflow stays prepared
        assert dtm.status(gid) == "prepared"

        restarted = Workflows(dtm.api, callback_url=url)
        register(restarted)
        async with restarted:
            found = await asyncio.to_thread(dtm.wait_status, gid, "succeed")

    assert busi.count("b1") == 1  # replayed from the record, not called again
    assert busi.count("b2") == 2
    assert local_runs == ["02"]
    assert base64.b64decode(found["transaction"]["result"]) == b"firstLsecond"
    assert dtm.branch_records(gid) == [
        ("01", "action", "succeed", b"first"),
        ("02", "action", "succeed", b"L"),
        ("03", "action", "succeed", b"second"),
    ]
    resumed = busi.calls("b2")[1]
    assert resumed.body == b"payload"
    assert resumed.query["branch_id"] == "03"


async def test_sync_function_runs_in_a_thread(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("s1", answer("one"))

    def sync_fn(wf: SyncWorkflow, data: bytes) -> str:
        branch = wf.branch().on_commit(lambda p: p.call(busi.url("s1-confirm")))
        one = branch.call(busi.url("s1"), {"x": 1})
        two = wf.do(lambda info: info.branch_id.encode())
        return f"{one.text}-{two.decode()}-{data.decode()}"

    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:
        workflows.register("sync", sync_fn)
        assert await workflows.execute("sync", gid, b"d") == b"one-02-d"

    assert dtm.status(gid) == "succeed"
    assert busi.count("s1-confirm") == 1
    assert dtm.branch_records(gid)[-1] == ("01", "commit", "succeed", b"")


async def test_registry_rejects_unknown_and_duplicate_names(dtm: DtmServer) -> None:
    async with Workflows(dtm.api, callback_url="http://127.0.0.1:1/cb") as workflows:

        async def fn(wf: Workflow, data: bytes) -> None:
            return None

        workflows.register("one", fn)
        with pytest.raises(ValueError, match="already registered"):
            workflows.register("one", fn)
        with pytest.raises(LookupError):
            await workflows.execute("two", "g1")
    with pytest.raises(ValueError, match="callback_url"):
        Workflows(dtm.api, callback_url="nowhere")


async def test_branch_takes_one_action(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:

        async def twice(wf: Workflow, data: bytes) -> None:
            branch = wf.branch()
            await branch.call(busi.url("x"))
            await branch.call(busi.url("x"))

        workflows.register("twice", twice)
        with pytest.raises(RuntimeError, match="already has its action"):
            await workflows.execute("twice", gid)
        # Left prepared (a programming error is not a failure): settle it for the server.
    resp = dtm.post(
        "submit",
        {"gid": gid, "trans_type": "workflow", "req_extra": {"status": "failed"}},
    )
    assert resp.status_code == 200, resp.text


async def test_call_back_during_a_run_is_told_to_come_later(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("slow", slow(1.0))
    async with Workflows(dtm.api, callback_url=busi.url("callback")) as workflows:

        async def slow_fn(wf: Workflow, data: bytes) -> None:
            await wf.call(busi.url("slow"))

        workflows.register("slow", slow_fn)
        run = asyncio.create_task(workflows.execute("slow", gid))
        await asyncio.to_thread(busi.wait_calls, "slow", 1)
        status, body = await workflows.handle_callback_request(
            {"gid": gid, "op": "slow", "branch_id": "00"}, b""
        )
        assert (status, json.loads(body)["dtm_result"]) == (425, "ONGOING")
        assert await run == b""
        # Once finished, a late call-back just finds the outcome.
        status, _ = await workflows.handle_callback_request({"gid": gid, "op": "slow"}, b"")
        assert status == 200
    assert busi.count("slow") == 1
    assert dtm.status(gid) == "succeed"


def test_public_names() -> None:
    import dtm.workflow

    assert sorted(dtm.workflow.__all__) == dtm.workflow.__all__
    for name in dtm.workflow.__all__:
        assert hasattr(dtm.workflow, name), name
