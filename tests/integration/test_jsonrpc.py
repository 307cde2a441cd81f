"""JSON-RPC: upstream's endpoint `/api/json-rpc` for the server API, and branches called as
JSON-RPC methods (protocol json-rpc, a URL with `method`), over a real server process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dtm.protocol import consts
from dtm.server.branch import read_jsonrpc_answer
from dtm.server.calls import Outcome
from tests.harness import Answer, Call, DtmServer, Endpoints

BUSINESS_NO = -23977  # any code but FAILURE and ONGOING: an error, retried


def rpc(dtm: DtmServer, method: str, params: Any = None, *, rid: Any = "no-use") -> dict[str, Any]:
    """One JSON-RPC call to the server; every answer is HTTP 200, as upstream."""
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": rid}
    resp = dtm.http.post(f"{dtm.base}/api/json-rpc", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    assert answer["jsonrpc"] == "2.0"
    return answer


def ok(dtm: DtmServer, method: str, params: Any = None) -> Any:
    answer = rpc(dtm, method, params)
    assert "error" not in answer, answer
    assert answer["id"] == "no-use"
    return answer["result"]


def error_code(answer: dict[str, Any]) -> int:
    assert "result" not in answer, answer
    code: int = answer["error"]["code"]
    assert answer["error"]["message"]
    return code


def branch(result: Any = None, *, code: int | None = None) -> Callable[[Call], Answer]:
    """A JSON-RPC business method: answers `result`, or an error with `code`."""

    def answer(call: Call) -> Answer:
        req = call.json()
        doc: dict[str, Any] = {"jsonrpc": "2.0", "id": req["id"]}
        if code is None:
            doc["result"] = result
        else:
            doc["error"] = {"code": code, "message": "business answered an error"}
        return Answer(200, doc)

    return answer


def method_url(busi: Endpoints, name: str) -> str:
    return f"{busi.url(name)}?method={name}"


def saga(gid: str, busi: Endpoints, *names: str) -> dict[str, Any]:
    return {
        "gid": gid,
        "trans_type": consts.SAGA,
        "protocol": consts.PROTOCOL_JSONRPC,
        "steps": [
            {"action": method_url(busi, n), "compensate": method_url(busi, f"{n}Revert")}
            for n in names
        ],
        "payloads": [json.dumps({"amount": 30, "step": n}) for n in names],
        "branch_headers": {"X-Trace": "jrpc-test"},
    }


def test_saga_through_jsonrpc_with_jsonrpc_branches(dtm: DtmServer, busi: Endpoints) -> None:
    gid = ok(dtm, "newGid")["gid"]
    busi.program("TransOut", branch({"done": True}))
    busi.program("TransIn", branch())
    assert ok(dtm, "submit", saga(gid, busi, "TransOut", "TransIn")) is None
    dtm.wait_status(gid, consts.SUCCEED)

    (out,) = busi.calls("TransOut")
    assert out.method == "POST"
    assert out.query == {"method": "TransOut"}
    assert out.headers["X-Trace"] == "jrpc-test"
    req = out.json()
    assert req["jsonrpc"] == "2.0"
    assert req["method"] == "TransOut"
    assert isinstance(req["id"], str) and req["id"]
    assert req["params"] == {
        "amount": 30,
        "step": "TransOut",
        "gid": gid,
        "trans_type": consts.SAGA,
        "branch_id": "01",
        "op": consts.OP_ACTION,
    }
    (into,) = busi.calls("TransIn")
    assert into.json()["params"]["branch_id"] == "02"
    assert into.json()["id"] != req["id"]
    assert busi.count("TransOutRevert") == busi.count("TransInRevert") == 0


def test_failure_code_rolls_the_saga_back(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("TransIn", branch(code=consts.JRPC_CODE_FAILURE))
    ok(dtm, "submit", saga(gid, busi, "TransOut", "TransIn"))
    found = dtm.wait_status(gid, consts.FAILED)
    assert "business answered an error" in found["transaction"]["rollback_reason"]
    assert busi.count("TransIn") == 1  # a failure is not retried
    (revert,) = busi.calls("TransOutRevert")
    assert revert.json()["params"]["op"] == consts.OP_COMPENSATE
    assert revert.json()["method"] == "TransOutRevert"


@pytest.mark.parametrize("code", [consts.JRPC_CODE_ONGOING, BUSINESS_NO])
def test_ongoing_and_other_errors_are_retried(
    dtm: DtmServer, busi: Endpoints, gid: str, code: int
) -> None:
    busi.program("TransOut", branch(code=code), branch())
    ok(dtm, "submit", saga(gid, busi, "TransOut"))
    dtm.wait_status(gid, consts.SUCCEED)
    assert busi.count("TransOut") == 2
    assert busi.count("TransOutRevert") == 0


def test_http_level_answer_is_read_first(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    busi.program("TransOut", Answer(409, {"dtm_result": "FAILURE"}))
    ok(dtm, "submit", saga(gid, busi, "TransOut"))
    dtm.wait_status(gid, consts.FAILED)
    assert busi.count("TransOut") == 1


def test_msg_prepared_and_submitted_through_jsonrpc(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("Deliver", branch())
    msg = {
        "gid": gid,
        "trans_type": consts.MSG,
        "protocol": consts.PROTOCOL_JSONRPC,
        "steps": [{"action": method_url(busi, "Deliver")}, {"action": busi.url("plain")}],
        "payloads": [json.dumps({"amount": 30}), json.dumps({"amount": 40})],
        "query_prepared": busi.url("QueryPrepared"),
    }
    assert ok(dtm, "prepare", msg) is None
    assert dtm.status(gid) == consts.PREPARED
    assert ok(dtm, "submit", {"gid": gid, "trans_type": consts.MSG}) is None
    dtm.wait_status(gid, consts.SUCCEED)
    (deliver,) = busi.calls("Deliver")
    assert deliver.json()["params"] == {
        "amount": 30,
        "gid": gid,
        "trans_type": consts.MSG,
        "branch_id": "01",
        "op": consts.OP_ACTION,
    }
    # A URL without `method` in a json-rpc transaction is plain HTTP, as upstream.
    (plain,) = busi.calls("plain")
    assert plain.query["gid"] == gid and plain.query["op"] == consts.OP_ACTION
    assert plain.json() == {"amount": 40}
    assert busi.count("QueryPrepared") == 0


def test_query_prepared_is_called_as_jsonrpc(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    """A prepared message left alone is checked back after TimeoutToFail (3s here)."""
    busi.program("QueryPrepared", branch())
    msg = {
        "gid": gid,
        "trans_type": consts.MSG,
        "protocol": consts.PROTOCOL_JSONRPC,
        "steps": [{"action": method_url(busi, "Deliver")}],
        "payloads": [json.dumps({"amount": 30})],
        "query_prepared": method_url(busi, "QueryPrepared"),
    }
    ok(dtm, "prepare", msg)
    dtm.wait_status(gid, consts.SUCCEED, timeout=20)
    check = busi.calls("QueryPrepared")[0].json()
    assert check["method"] == "QueryPrepared"
    assert check["params"] == {
        "gid": gid,
        "trans_type": consts.MSG,
        "branch_id": consts.CHECKBACK_BRANCH_ID,
        "op": consts.OP_MSG,
    }
    assert busi.count("Deliver") == 1


def test_query_through_jsonrpc(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm, "submit", saga(gid, busi, "TransOut"))
    dtm.wait_status(gid, consts.SUCCEED)
    found = ok(dtm, "query", {"gid": gid})
    assert found == dtm.query(gid)
    assert found["transaction"]["protocol"] == consts.PROTOCOL_JSONRPC
    assert ok(dtm, "query", {"gid": uuid.uuid4().hex}) == {"transaction": None, "branches": []}


def test_failure_answered_with_its_code(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm, "submit", saga(gid, busi, "TransOut"))
    dtm.wait_status(gid, consts.SUCCEED)
    prepare = rpc(dtm, "prepare", {"gid": gid, "trans_type": consts.SAGA})
    assert error_code(prepare) == consts.JRPC_CODE_FAILURE
    abort = rpc(dtm, "abort", {"gid": gid, "trans_type": consts.SAGA})
    assert error_code(abort) == consts.JRPC_CODE_FAILURE
    assert abort["id"] == "no-use"


def test_repeated_submit_of_a_finished_msg_is_failure(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    msg = {
        "gid": gid,
        "trans_type": consts.MSG,
        "protocol": consts.PROTOCOL_JSONRPC,
        "steps": [{"action": method_url(busi, "Deliver")}],
        "payloads": ["{}"],
    }
    busi.program("Deliver", branch())
    ok(dtm, "prepare", msg)
    ok(dtm, "abort", {"gid": gid, "trans_type": consts.MSG})
    assert dtm.status(gid) == consts.FAILED
    assert error_code(rpc(dtm, "submit", msg)) == consts.JRPC_CODE_FAILURE
    assert busi.count("Deliver") == 0


def test_protocol_errors(dtm: DtmServer) -> None:
    url = f"{dtm.base}/api/json-rpc"
    resp = dtm.http.post(url, data=b"hello", timeout=10)
    assert resp.status_code == 200
    assert resp.json()["id"] is None
    assert error_code(resp.json()) == -32700

    assert error_code(rpc(dtm, "not-exists")) == -32601
    wrong_version = dtm.http.post(
        url, json={"jsonrpc": "1.0", "method": "newGid", "id": "x"}, timeout=10
    ).json()
    assert error_code(wrong_version) == -32600
    assert error_code(rpc(dtm, "newGid", rid="")) == -32600
    assert error_code(rpc(dtm, "newGid", rid=None)) == -32600
    batch = dtm.http.post(url, json=[{"jsonrpc": "2.0", "method": "newGid", "id": 1}])
    assert error_code(batch.json()) == -32600

    assert rpc(dtm, "newGid", rid=7)["id"] == 7  # numeric ids are echoed
    assert error_code(rpc(dtm, "submit")) == -32602  # no params
    assert error_code(rpc(dtm, "registerBranch", {"gid": "g", "trans_type": 3})) == -32602
    assert error_code(rpc(dtm, "abort", {"gid": uuid.uuid4().hex})) == -32602


def test_register_branch_through_jsonrpc(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm, "prepare", {"gid": gid, "trans_type": consts.TCC, "protocol": "json-rpc"})
    branch_data = {
        "gid": gid,
        "trans_type": consts.TCC,
        "branch_id": "01",
        "data": json.dumps({"amount": 30}),
        "confirm": method_url(busi, "Confirm"),
        "cancel": method_url(busi, "Cancel"),
    }
    busi.program("Confirm", branch())
    assert ok(dtm, "registerBranch", branch_data) is None
    ok(dtm, "submit", {"gid": gid, "trans_type": consts.TCC})
    dtm.wait_status(gid, consts.SUCCEED)
    (confirm,) = busi.calls("Confirm")
    assert confirm.json()["params"]["op"] == consts.OP_CONFIRM
    assert confirm.json()["params"]["amount"] == 30


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (b'{"jsonrpc":"2.0","id":"1","result":null}', Outcome.SUCCESS),
        (b'{"jsonrpc":"2.0","id":"1","result":1,"error":null}', Outcome.SUCCESS),
        (b'{"jsonrpc":"2.0","id":"1","error":{"code":-32901}}', Outcome.FAILURE),
        (b'{"jsonrpc":"2.0","id":"1","error":{"code":-32902.0}}', Outcome.ONGOING),
        (b'{"jsonrpc":"2.0","id":"1","error":{"code":-32603}}', Outcome.ERROR),
        (b'{"jsonrpc":"2.0","id":"1","error":"broken"}', Outcome.ERROR),
        (b"not json", Outcome.ERROR),
        (b"[1]", Outcome.ERROR),
    ],
)
def test_reading_jsonrpc_answers(body: bytes, outcome: Outcome) -> None:
    assert read_jsonrpc_answer(body, body.decode()).outcome is outcome
