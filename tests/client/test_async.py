"""The asyncio client against a real server and the business stub: every mode end to end,
and what the server stored (so the requests carried upstream's JSON fields)."""

from __future__ import annotations

import json

import msgspec
import pytest

from dtm import (
    AsyncDtmClient,
    AsyncTcc,
    FailureError,
    OngoingError,
    SagaStep,
    TransportError,
    XaBranchInfo,
)
from tests.harness import FAILURE, ONGOING, DtmServer, Endpoints, closed_port_url, slow


async def test_saga_succeeds_and_stores_upstream_fields(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(
            gid,
            wait_result=True,
            retry_interval=7,
            timeout_to_fail=60,
            retry_limit=5,
            branch_headers={"X-Tenant": "t1"},
        )
        saga.add(busi.url("a1"), busi.url("c1"), {"amount": 30})
        saga.add(busi.url("a2"), busi.url("c2"), {"amount": 30}, request_timeout=5)
        await saga.submit()
        found = await client.query(gid)

    assert found.transaction is not None
    trans = found.transaction
    assert (trans.gid, trans.trans_type, trans.status, trans.protocol) == (
        gid,
        "saga",
        "succeed",
        "http",
    )
    options = json.loads(trans.options)
    assert options["retry_interval"] == 7
    assert options["timeout_to_fail"] == 60
    assert options["retry_limit"] == 5
    assert options["branch_headers"] == {"X-Tenant": "t1"}
    assert options["branch_request_timeouts"] == {"02": 5}
    assert trans.custom_data == ""  # sequential: no orders sent
    ops = {(b.branch_id, b.op): b for b in found.branches}
    assert ops["01", "action"].url == busi.url("a1")
    assert ops["01", "compensate"].url == busi.url("c1")
    assert json.loads(ops["02", "action"].bin_data) == {"amount": 30}
    assert all(b.status == "succeed" for b in found.branches if b.op == "action")
    (call,) = busi.calls("a1")
    assert call.json() == {"amount": 30}
    assert call.headers.get("X-Tenant") == "t1"
    assert call.query["op"] == "action"
    assert busi.calls("a1")[0].at < busi.calls("a2")[0].at
    assert busi.count("c1") == busi.count("c2") == 0


async def test_saga_rolls_back_and_wait_result_raises_failure(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("a2", FAILURE)
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(gid, wait_result=True)
        saga.add(busi.url("a1"), busi.url("c1"), {"n": 1})
        saga.add(busi.url("a2"), busi.url("c2"), {"n": 2})
        with pytest.raises(FailureError):
            await saga.submit()
        found = await client.query(gid)
    assert found.transaction is not None
    assert found.transaction.status == "failed"
    assert busi.count("c1") == 1
    assert busi.calls("c1")[0].query["op"] == "compensate"


async def test_wait_result_raises_ongoing_when_unfinished(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("a1", ONGOING)
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(gid, wait_result=True, request_timeout=1)
        saga.add(busi.url("a1"), busi.url("c1"), {})
        with pytest.raises(OngoingError):
            await saga.submit()
        found = await client.query(gid)
    assert found.transaction is not None
    assert found.transaction.status == "submitted"


async def test_parallel_groups_run_between_their_neighbours(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    for name in ("a", "b", "c", "d"):
        busi.program(name, slow(0.4))
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(gid, wait_result=True)
        saga.add(busi.url("a"), "", {"step": "a"})
        saga.add_parallel(
            [
                SagaStep(busi.url("b"), "", {"step": "b"}),
                (busi.url("c"), "", {"step": "c"}),
            ]
        )
        saga.add(busi.url("d"), "", {"step": "d"})
        await saga.submit()
        found = await client.query(gid)

    assert found.transaction is not None
    assert json.loads(found.transaction.custom_data) == {
        "orders": {"1": [0], "2": [0], "3": [1, 2]},
        "concurrent": True,
    }
    (a,), (b,), (c,), (d,) = (busi.calls(n) for n in "abcd")
    assert b.at >= a.at + 0.35 and c.at >= a.at + 0.35  # after a finished
    assert abs(b.at - c.at) < 0.3  # together
    assert d.at >= max(b.at, c.at) + 0.35  # after both finished


async def test_concurrent_with_explicit_orders(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(gid, concurrent=True, wait_result=True)
        for name in ("x", "y", "z"):
            saga.add(busi.url(name), "", {})
        saga.add_branch_order(2, after=[0, 1])
        await saga.submit()
        found = await client.query(gid)
    assert found.transaction is not None
    assert json.loads(found.transaction.custom_data) == {
        "orders": {"2": [0, 1]},
        "concurrent": True,
    }
    assert busi.calls("z")[0].at > max(busi.calls("x")[0].at, busi.calls("y")[0].at)


async def test_server_made_gid(dtm: DtmServer, busi: Endpoints) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga()
        saga.add(busi.url("a"), busi.url("c"), {})
        assert saga.gid == ""
        await saga.submit()
        assert saga.gid
        dtm.wait_status(saga.gid, "succeed")
        assert await client.new_gid() != saga.gid


async def test_msg_prepare_then_submit(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        msg = client.msg(gid)
        msg.add(busi.url("m1"), {"order": 1}).add(busi.url("m2"), {"order": 2})
        await msg.prepare(busi.url("query"))
        found = await client.query(gid)
        assert found.transaction is not None
        assert found.transaction.status == "prepared"
        assert found.transaction.query_prepared == busi.url("query")
        assert busi.count("m1") == 0
        await msg.submit()
    dtm.wait_status(gid, "succeed")
    assert busi.calls("m1")[0].json() == {"order": 1}
    assert busi.calls("m2")[0].query["op"] == "action"


async def test_msg_topic_and_delay(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    topic = f"t-{busi.prefix}"
    assert dtm.get("subscribe", topic=topic, url=busi.url("sub"), remark="").ok
    async with AsyncDtmClient(dtm.api) as client:
        msg = client.msg(gid, delay=1)
        msg.add_topic(topic, {"hello": "topic"})
        await msg.submit()
        found = await client.query(gid)
    assert found.transaction is not None
    assert json.loads(found.transaction.custom_data) == {"delay": 1}
    (call,) = busi.wait_calls("sub", 1)
    assert call.json() == {"hello": "topic"}


async def test_tcc_success(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with (
        AsyncDtmClient(dtm.api) as client,
        client.tcc(gid, branch_headers={"X-Trace": "abc"}) as tcc,
    ):
        for n in (1, 2):
            answer = await tcc.call_branch(
                {"n": n}, busi.url(f"try{n}"), busi.url(f"confirm{n}"), busi.url(f"cancel{n}")
            )
            assert answer.json() == {"dtm_result": "SUCCESS"}
    dtm.wait_status(gid, "succeed")
    try1, try2 = busi.calls("try1")[0], busi.calls("try2")[0]
    assert try1.query == {
        "dtm": dtm.api,
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": "01",
        "op": "try",
    }
    assert try2.query["branch_id"] == "02"
    assert try1.json() == {"n": 1}
    assert try1.headers.get("X-Trace") == "abc"
    assert busi.count("confirm1") == busi.count("confirm2") == 1
    assert busi.count("cancel1") == busi.count("cancel2") == 0


async def test_tcc_aborts_on_exception(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        with pytest.raises(RuntimeError, match="out of stock"):
            async with client.tcc(gid) as tcc:
                await tcc.call_branch({}, busi.url("try"), busi.url("confirm"), busi.url("cancel"))
                raise RuntimeError("out of stock")
        found = dtm.wait_status(gid, "failed")
    assert "out of stock" in found["transaction"]["rollback_reason"]
    busi.wait_calls("cancel", 1)
    assert busi.count("confirm") == 0


async def test_tcc_try_failure_aborts(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("try2", FAILURE)
    async with AsyncDtmClient(dtm.api) as client:
        with pytest.raises(FailureError):
            async with client.tcc(gid) as tcc:
                await tcc.call_branch({}, busi.url("try1"), busi.url("ok1"), busi.url("undo1"))
                await tcc.call_branch({}, busi.url("try2"), busi.url("ok2"), busi.url("undo2"))
    dtm.wait_status(gid, "failed")
    busi.wait_calls("undo1", 1)
    busi.wait_calls("undo2", 1)


async def test_nested_tcc_from_a_branch(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        async with client.tcc(gid) as tcc:
            await tcc.call_branch({}, busi.url("outer"), busi.url("oc"), busi.url("ox"))
            # What the service behind "outer" does with its request's query parameters:
            inner = client.tcc_from_query(busi.calls("outer")[0].query)
            assert (inner.gid, inner.branch_id) == (gid, "01")
            await inner.call_branch({}, busi.url("inner"), busi.url("ic"), busi.url("ix"))
        found = await client.query(gid)
    assert busi.calls("inner")[0].query["branch_id"] == "0101"
    assert {b.branch_id for b in found.branches} == {"01", "0101"}
    busi.wait_calls("ic", 1)


async def test_xa_commits_registered_branches(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client, client.xa(gid) as xa:
        await xa.call_branch({"n": 1}, busi.url("xa1"))
        call = busi.calls("xa1")[0]
        assert call.query["phase2_url"] == busi.url("xa1")
        assert call.query["op"] == "action"
        # The branch's local part, once prepared, registers itself:
        await client.register_xa_branch(XaBranchInfo.from_query(call.query))
    dtm.wait_status(gid, "succeed")
    commits = [c for c in busi.calls("xa1") if c.query["op"] == "commit"]
    assert len(commits) == 1


async def test_xa_rolls_back_on_exception(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        with pytest.raises(ValueError, match="no"):
            async with client.xa(gid) as xa:
                await xa.call_branch({}, busi.url("xa"))
                await client.register_xa_branch(XaBranchInfo.from_query(busi.calls("xa")[0].query))
                raise ValueError("no")
    dtm.wait_status(gid, "failed")
    assert [c.query["op"] for c in busi.calls("xa")] == ["action", "rollback"]


async def test_query_of_an_unknown_gid(dtm: DtmServer) -> None:
    async with AsyncDtmClient(dtm.api) as client:
        found = await client.query("no-such-gid")
    assert found.transaction is None
    assert found.branches == []


async def test_unreachable_server_is_a_transport_error(busi: Endpoints) -> None:
    url = closed_port_url().replace("/busi/down", "/api/dtmsvr")
    async with AsyncDtmClient(url, timeout=2) as client:
        with pytest.raises(TransportError):
            await client.new_gid()
        saga = client.saga("g1")
        saga.add(busi.url("a"), busi.url("c"), {})
        with pytest.raises(TransportError):
            await saga.submit()


async def test_query_results_are_protocol_records(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    from dtm.protocol.records import TransBranch, TransGlobal

    async with AsyncDtmClient(dtm.api) as client:
        saga = client.saga(gid, wait_result=True).add(busi.url("a"), busi.url("c"), [1, 2])
        await saga.submit()
        found = await client.query(gid)
    assert isinstance(found.transaction, TransGlobal)
    assert all(isinstance(b, TransBranch) for b in found.branches)
    assert msgspec.json.decode(found.branches[0].bin_data) == [1, 2]


async def test_a_slow_branch_is_a_transport_error(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("try", slow(3))
    async with AsyncDtmClient(dtm.api, timeout=0.5) as client:
        with pytest.raises(TransportError, match="timed out"):
            async with client.tcc(gid) as tcc:
                await tcc.call_branch({}, busi.url("try"), busi.url("confirm"), busi.url("cancel"))
    dtm.wait_status(gid, "failed")


async def test_tcc_decorator_makes_one_transaction_per_call(
    dtm: DtmServer, busi: Endpoints
) -> None:
    async with AsyncDtmClient(dtm.api) as client:

        @client.tcc_transaction(timeout_to_fail=30)
        async def transfer(tcc: AsyncTcc, amount: int) -> str:
            await tcc.call_branch(
                {"amount": amount}, busi.url("try"), busi.url("confirm"), busi.url("cancel")
            )
            return tcc.gid

        first, second = await transfer(10), await transfer(20)
        assert first != second

        @client.tcc_transaction()
        async def failing(tcc: AsyncTcc) -> None:
            raise FailureError("no funds")

        with pytest.raises(FailureError):
            await failing()
    for gid in (first, second):
        dtm.wait_status(gid, "succeed")
    assert [c.json() for c in busi.calls("try")] == [{"amount": 10}, {"amount": 20}]
