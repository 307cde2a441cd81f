"""The blocking client against a real server: the same scenarios as the asyncio client's,
since both drive one core; these prove the urllib3 transport and the `with` forms."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from dtm import DtmClient, FailureError, OngoingError, Tcc, TransportError, XaBranchInfo
from tests.harness import FAILURE, ONGOING, DtmServer, Endpoints, closed_port_url, slow


@pytest.fixture
def client(dtm: DtmServer) -> Iterator[DtmClient]:
    with DtmClient(dtm.api) as c:
        yield c


def test_saga_succeeds(client: DtmClient, busi: Endpoints, gid: str) -> None:
    saga = client.saga(gid, wait_result=True, retry_limit=3, branch_headers={"X-A": "b"})
    saga.add(busi.url("a1"), busi.url("c1"), {"n": 1}).add(busi.url("a2"), busi.url("c2"), None)
    saga.submit()
    found = client.query(gid)
    assert found.transaction is not None
    assert found.transaction.status == "succeed"
    assert json.loads(found.transaction.options)["retry_limit"] == 3
    assert busi.calls("a1")[0].json() == {"n": 1}
    assert busi.calls("a2")[0].headers.get("X-A") == "b"


def test_saga_rollback_raises_failure(client: DtmClient, busi: Endpoints, gid: str) -> None:
    busi.program("a2", FAILURE)
    saga = client.saga(gid, wait_result=True)
    saga.add(busi.url("a1"), busi.url("c1"), {}).add(busi.url("a2"), busi.url("c2"), {})
    with pytest.raises(FailureError):
        saga.submit()
    assert client.query(gid).transaction is not None
    assert busi.count("c1") == 1


def test_wait_result_ongoing(client: DtmClient, busi: Endpoints, gid: str) -> None:
    busi.program("a", ONGOING)
    saga = client.saga(gid, wait_result=True, request_timeout=1).add(busi.url("a"), "", {})
    with pytest.raises(OngoingError):
        saga.submit()


def test_parallel_group(client: DtmClient, busi: Endpoints, gid: str) -> None:
    for name in "abc":
        busi.program(name, slow(0.3))
    saga = client.saga(gid, wait_result=True)
    saga.add_parallel([(busi.url("a"), "", {}), (busi.url("b"), "", {})])
    saga.add(busi.url("c"), "", {})
    saga.submit()
    (a,), (b,), (c,) = (busi.calls(n) for n in "abc")
    assert abs(a.at - b.at) < 0.25
    assert c.at >= max(a.at, b.at) + 0.25


def test_msg(client: DtmClient, dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    msg = client.msg(gid).add(busi.url("m"), {"k": "v"})
    msg.prepare(busi.url("query"))
    assert dtm.status(gid) == "prepared"
    msg.submit()
    assert busi.wait_calls("m", 1)[0].json() == {"k": "v"}


def test_tcc_success_and_abort(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    with client.tcc(gid) as tcc:
        tcc.call_branch({"n": 1}, busi.url("try"), busi.url("confirm"), busi.url("cancel"))
    dtm.wait_status(gid, "succeed")
    assert busi.calls("try")[0].query["branch_id"] == "01"
    busi.wait_calls("confirm", 1)

    with pytest.raises(KeyError), client.tcc(f"{gid}-2") as tcc:
        tcc.call_branch({}, busi.url("try"), busi.url("confirm"), busi.url("cancel"))
        raise KeyError("boom")
    dtm.wait_status(f"{gid}-2", "failed")
    busi.wait_calls("cancel", 1)


def test_xa(client: DtmClient, dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    with client.xa(gid) as xa:
        xa.call_branch({}, busi.url("xa"))
        client.register_xa_branch(XaBranchInfo.from_query(busi.calls("xa")[0].query))
    dtm.wait_status(gid, "succeed")
    assert [c.query["op"] for c in busi.calls("xa")] == ["action", "commit"]


def test_unreachable_server(busi: Endpoints) -> None:
    url = closed_port_url().replace("/busi/down", "/api/dtmsvr")
    with DtmClient(url, timeout=2) as client:
        with pytest.raises(TransportError):
            client.new_gid()
        with pytest.raises(TransportError):
            client.saga("g").add(busi.url("a"), "", {}).submit()


def test_a_failed_abort_keeps_the_blocks_error(
    private_dtm: Callable[..., DtmServer], busi: Endpoints, gid: str
) -> None:
    server = private_dtm()
    client = DtmClient(server.api, timeout=2)
    with client, pytest.raises(RuntimeError, match="business") as raised, client.tcc(gid):
        server.kill()
        raise RuntimeError("business error")
    assert any("abort" in note for note in raised.value.__notes__)


def test_a_slow_branch_is_a_transport_error(
    client: DtmClient, dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("try", slow(3))
    impatient = DtmClient(dtm.api, timeout=0.5)
    with impatient, pytest.raises(TransportError), impatient.tcc(gid) as tcc:
        tcc.call_branch({}, busi.url("try"), busi.url("confirm"), busi.url("cancel"))
    dtm.wait_status(gid, "failed")


def test_tcc_decorator(client: DtmClient, dtm: DtmServer, busi: Endpoints) -> None:
    @client.tcc_transaction()
    def transfer(tcc: Tcc, amount: int) -> str:
        tcc.call_branch({"amount": amount}, busi.url("try"), busi.url("ok"), busi.url("undo"))
        return tcc.gid

    gid = transfer(5)
    dtm.wait_status(gid, "succeed")
    assert busi.calls("try")[0].query["gid"] == gid
