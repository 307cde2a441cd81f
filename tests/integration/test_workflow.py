"""The server's side of workflows over real HTTP.

A workflow's own code runs in the app: it asks `prepareWorkflow` for the transaction and
the progress recorded so far, records each branch's result with `registerBranch`, and
submits the outcome in `req_extra`. The server keeps that record and calls the app back
at `query_prepared` when a workflow was left unfinished, so that it resumes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from tests.harness import ERROR, OK, DtmServer, Endpoints


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ok(resp: requests.Response) -> None:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text}"
    assert resp.json().get("dtm_result") == "SUCCESS", resp.text


def prepare_body(gid: str, callback: str, *, name: str = "wf1", data: str = "") -> dict[str, Any]:
    """What upstream's HTTP workflow client posts: its TransBase, custom_data carrying the
    workflow's name and input (Go encodes []byte as base64)."""
    return {
        "gid": gid,
        "trans_type": "workflow",
        "query_prepared": callback,
        "custom_data": json.dumps({"name": name, "data": b64(data)}),
        "protocol": "http",
        # A short interval so an unfinished workflow is called back within a test.
        "retry_interval": 1,
    }


def prepare_workflow(dtm: DtmServer, body: dict[str, Any]) -> dict[str, Any]:
    resp = dtm.post("prepareWorkflow", body)
    assert resp.status_code == 200, resp.text
    reply: dict[str, Any] = resp.json()
    return reply


def record(
    dtm: DtmServer, gid: str, branch_id: str, op: str, *, status: str, data: str
) -> requests.Response:
    body = {
        "gid": gid,
        "trans_type": "workflow",
        "branch_id": branch_id,
        "op": op,
        "status": status,
        "data": data,
    }
    return dtm.post("registerBranch", body)


def submit(
    dtm: DtmServer, gid: str, status: str, *, result: str = "", reason: str = ""
) -> requests.Response:
    extra = {"status": status, "result": result, "rollback_reason": reason}
    return dtm.post("submit", {"gid": gid, "trans_type": "workflow", "req_extra": extra})


def test_prepare_workflow_answers_the_new_transaction(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    body = prepare_body(gid, busi.url("callback"), data='{"amount":30}')
    reply = prepare_workflow(dtm, body)

    assert reply["progresses"] == []
    trans = reply["transaction"]
    assert trans["gid"] == gid
    assert trans["trans_type"] == "workflow"
    assert trans["status"] == "prepared"
    assert trans["query_prepared"] == busi.url("callback")
    assert trans["protocol"] == "http"
    assert json.loads(trans["custom_data"]) == {"name": "wf1", "data": b64('{"amount":30}')}
    assert trans["create_time"]
    assert dtm.status(gid) == "prepared"
    ok(submit(dtm, gid, "succeed"))


def test_progress_is_recorded_and_replayed(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    body = prepare_body(gid, busi.url("callback"))
    first = prepare_workflow(dtm, body)
    ok(record(dtm, gid, "01", "action", status="succeed", data="result1"))
    ok(record(dtm, gid, "02", "action", status="failed", data="insufficient balance"))
    ok(record(dtm, gid, "02", "rollback", status="succeed", data=""))

    again = prepare_workflow(dtm, body)

    trans = again["transaction"]
    assert trans["status"] == "prepared"
    assert trans["create_time"] == first["transaction"]["create_time"]
    progresses = [
        (p["branch_id"], p["op"], p["status"], base64.b64decode(p.get("bin_data", "")))
        for p in again["progresses"]
    ]
    assert progresses == [
        ("01", "action", "succeed", b"result1"),
        ("02", "action", "failed", b"insufficient balance"),
        ("02", "rollback", "succeed", b""),
    ]
    assert again["progresses"][0]["bin_data"] == b64("result1")
    ok(submit(dtm, gid, "failed", reason="insufficient balance"))


def test_submit_succeed_stores_the_result_and_keeps_the_record(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    body = prepare_body(gid, busi.url("callback"), data="input")
    created = prepare_workflow(dtm, body)["transaction"]
    ok(record(dtm, gid, "01", "action", status="succeed", data="result1"))

    ok(submit(dtm, gid, "succeed", result=b64("the answer")))

    trans = dtm.query(gid)["transaction"]
    assert trans["status"] == "succeed"
    assert trans["result"] == b64("the answer")
    assert trans.get("rollback_reason", "") == ""
    assert trans["finish_time"]
    # Upstream rewrote the row from the submit request and lost these.
    assert trans["create_time"] == created["create_time"]
    assert trans["query_prepared"] == busi.url("callback")
    assert trans["custom_data"] == body["custom_data"]
    # A workflow resumed after it finished learns the outcome from prepareWorkflow.
    again = prepare_workflow(dtm, body)
    assert again["transaction"]["status"] == "succeed"
    assert again["transaction"]["result"] == b64("the answer")


def test_submit_failed_stores_the_reason(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    body = prepare_body(gid, busi.url("callback"))
    created = prepare_workflow(dtm, body)["transaction"]
    ok(record(dtm, gid, "01", "action", status="failed", data="FAILURE: no stock"))

    ok(submit(dtm, gid, "failed", reason="no stock"))

    trans = dtm.query(gid)["transaction"]
    assert trans["status"] == "failed"
    assert trans["rollback_reason"] == "no stock"
    assert trans["rollback_time"]
    assert trans["create_time"] == created["create_time"]
    assert trans["query_prepared"] == busi.url("callback")
    again = prepare_workflow(dtm, body)
    assert again["transaction"]["status"] == "failed"
    assert again["transaction"]["rollback_reason"] == "no stock"


def test_finished_workflow_takes_no_more_progress_or_outcomes(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare_workflow(dtm, prepare_body(gid, busi.url("callback")))
    ok(submit(dtm, gid, "succeed"))

    late = record(dtm, gid, "01", "action", status="succeed", data="too late")
    assert late.status_code == 409, late.text
    assert late.json()["dtm_result"] == "FAILURE"
    ok(submit(dtm, gid, "succeed"))  # the app retrying its own submit
    other = submit(dtm, gid, "failed", reason="changed my mind")
    assert other.status_code == 409, other.text
    assert dtm.status(gid) == "succeed"
    assert dtm.query(gid)["branches"] == []


def test_unfinished_workflow_is_called_back(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    body = prepare_body(gid, busi.url("callback"), name="transfer", data='{"amount":30}')
    prepare_workflow(dtm, body)
    ok(record(dtm, gid, "01", "action", status="succeed", data="result1"))

    (call, *_) = busi.wait_calls("callback", 1, timeout=10)

    assert call.method == "POST"
    assert call.query == {"gid": gid, "trans_type": "workflow", "branch_id": "00", "op": "transfer"}
    assert call.body == b'{"amount":30}'
    # The app resumes, replays the recorded branch and submits: no more call-backs then.
    ok(submit(dtm, gid, "succeed", result=b64("done")))
    seen = len(busi.calls("callback"))
    dtm.wait_status(gid, "succeed")
    # Well past the interval (and the lease) in which another call-back would come.
    with pytest.raises(AssertionError):
        busi.wait_calls("callback", seen + 1, timeout=3.5)


def test_failing_callback_is_retried_with_back_off(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    busi.program("callback", ERROR, OK)
    prepare_workflow(dtm, prepare_body(gid, busi.url("callback"), data="x"))

    first, second = busi.wait_calls("callback", 2, timeout=12)[:2]

    # Interval 1 s, doubled after the error: the second call comes about 2 s later.
    assert second.at - first.at >= 1.5, second.at - first.at
    assert second.query == first.query
    assert second.body == first.body == b"x"
    assert dtm.status(gid) == "prepared"
    ok(submit(dtm, gid, "succeed"))


def test_workflow_without_input_is_called_back_with_get(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    prepare_workflow(dtm, prepare_body(gid, busi.url("callback"), name="nodata"))

    (call, *_) = busi.wait_calls("callback", 1, timeout=10)

    assert call.method == "GET"
    assert call.body == b""
    assert call.query["op"] == "nodata"
    ok(submit(dtm, gid, "failed", reason="gave up"))
