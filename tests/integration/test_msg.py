"""2-phase messages over real HTTP: prepare/submit, the query_prepared check-back, topics
and delay. Upstream's semantics (dtm-labs/dtm test/msg_*_test.go, test/topic_test.go)
unless a test says this server differs on purpose.

Topics are server-wide: their names start with the test's gid.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from tests.harness import ERROR, FAILURE, OK, ONGOING, Answer, DtmServer, Endpoints, slow


def msg(gid: str, busi: Endpoints, *actions: str, **options: Any) -> dict[str, Any]:
    """A message request as the SDKs send it; `actions` are stub names or topic:// URLs."""
    steps = [{"action": a if a.startswith("topic://") else busi.url(a)} for a in actions]
    payloads = [json.dumps({"amount": 30, "step": i}) for i in range(len(actions))]
    return {
        "gid": gid,
        "trans_type": "msg",
        "steps": steps,
        "payloads": payloads,
        "query_prepared": busi.url("qp"),
        **options,
    }


def ok(resp: requests.Response) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"dtm_result": "SUCCESS"}


def assert_action_calls(
    busi: Endpoints, body: dict[str, Any], *expected: tuple[str, str, int]
) -> None:
    """Each (stub, branch_id, step) was called once, as that branch's action with the
    step's payload."""
    for name, branch_id, i in expected:
        (call,) = busi.calls(name)
        assert call.method == "POST"
        assert call.query == {
            "gid": body["gid"],
            "trans_type": "msg",
            "branch_id": branch_id,
            "op": "action",
        }
        assert call.body == body["payloads"][i].encode()


def subscribe(dtm: DtmServer, topic: str, url: str, remark: str = "") -> requests.Response:
    return dtm.get("subscribe", topic=topic, url=url, remark=remark)


# --- prepare and submit ---------------------------------------------------------------------


def test_prepare_then_submit_calls_actions(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out, into = "out", "in"
    body = msg(gid, busi, out, into)
    ok(dtm.post("prepare", body))
    assert dtm.status(gid) == "prepared"
    ok(dtm.post("prepare", body))  # a repeated prepare is harmless
    assert dtm.branch_rows(gid) == [("01", "action", "prepared"), ("02", "action", "prepared")]
    time.sleep(0.3)
    assert busi.calls(out) == [] and busi.calls(into) == []

    ok(dtm.post("submit", body))
    found = dtm.wait_status(gid, "succeed")
    assert_action_calls(busi, body, (out, "01", 0), (into, "02", 1))
    assert dtm.branch_rows(gid) == [("01", "action", "succeed"), ("02", "action", "succeed")]
    assert found["transaction"]["query_prepared"] == busi.url("qp")
    assert busi.calls("qp") == [], "a submitted message is never checked back"

    resp = dtm.post("prepare", body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["dtm_result"] == "FAILURE"


def test_submit_without_prepare(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    ok(dtm.post("submit", msg(gid, busi, out)))
    dtm.wait_status(gid, "succeed")
    assert len(busi.calls(out)) == 1
    assert dtm.branch_rows(gid) == [("01", "action", "succeed")]


def test_actions_run_in_order(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    names = ["a", "b", "c"]
    busi.program(names[0], slow(0.5))
    busi.program(names[1], slow(0.5))
    ok(dtm.post("submit", msg(gid, busi, *names)))
    dtm.wait_status(gid, "succeed")
    a, b, c = (busi.calls(n)[0] for n in names)
    assert b.at - a.at >= 0.45 and c.at - b.at >= 0.45, "each action waits for the one before"
    assert [x.query["branch_id"] for x in (a, b, c)] == ["01", "02", "03"]


def test_concurrent_actions_run_together(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    names = ["a", "b", "c"]
    for name in names:
        busi.program(name, slow(1.0))
    started = time.monotonic()
    ok(dtm.post("submit", msg(gid, busi, *names, concurrent=True)))
    dtm.wait_status(gid, "succeed")
    assert time.monotonic() - started < 2.5
    calls = [busi.calls(n)[0] for n in names]
    assert max(c.at for c in calls) - min(c.at for c in calls) < 0.5
    assert dtm.branch_rows(gid) == [
        ("01", "action", "succeed"),
        ("02", "action", "succeed"),
        ("03", "action", "succeed"),
    ]


def test_failing_action_is_retried_never_rolled_back(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out, into = "out", "in"
    busi.program(into, FAILURE, ERROR, OK)
    ok(dtm.post("submit", msg(gid, busi, out, into, retry_interval=1)))
    busi.wait_calls(into, 1)
    time.sleep(0.3)
    assert dtm.status(gid) == "submitted", "a committed message cannot roll back"
    dtm.wait_status(gid, "succeed", timeout=15)
    assert len(busi.calls(into)) == 3
    assert len(busi.calls(out)) == 1, "an action that succeeded is not called again"
    assert dtm.branch_rows(gid) == [("01", "action", "succeed"), ("02", "action", "succeed")]


def test_abort_of_a_prepared_msg_fails_it(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    body = msg(gid, busi, out)
    ok(dtm.post("prepare", body))
    ok(dtm.post("abort", body))
    assert dtm.status(gid) == "failed"
    time.sleep(0.5)
    assert busi.calls(out) == [] and busi.calls("qp") == []
    resp = dtm.post("submit", body)
    assert resp.status_code == 409, "a failed message cannot be submitted"
    assert busi.calls(out) == []


# --- query_prepared check-back --------------------------------------------------------------


def _prepare_left_alone(dtm: DtmServer, busi: Endpoints, gid: str, *answers: Answer) -> str:
    out = "out"
    busi.program("qp", *answers)
    ok(dtm.post("prepare", msg(gid, busi, out, timeout_to_fail=1)))
    return out


def test_check_back_success_submits(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    started = time.monotonic()
    out = _prepare_left_alone(dtm, busi, gid, OK)
    (check,) = busi.wait_calls("qp", 1)
    assert check.at - started >= 0.9, "asked only once timeout_to_fail passed"
    assert check.method == "GET"
    assert check.query == {"gid": gid, "trans_type": "msg", "branch_id": "00", "op": "msg"}
    assert check.body == b""
    dtm.wait_status(gid, "succeed")
    assert len(busi.calls(out)) == 1
    assert len(busi.calls("qp")) == 1


def test_check_back_failure_fails(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = _prepare_left_alone(dtm, busi, gid, FAILURE)
    found = dtm.wait_status(gid, "failed")
    assert len(busi.calls("qp")) == 1
    time.sleep(0.5)
    assert busi.calls(out) == []
    assert dtm.branch_rows(gid) == [("01", "action", "prepared")]
    assert "business said no" in found["transaction"]["rollback_reason"]


def test_check_back_ongoing_asks_again(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = _prepare_left_alone(dtm, busi, gid, ONGOING, ONGOING, OK)
    busi.wait_calls("qp", 2)
    assert dtm.status(gid) == "prepared"
    assert busi.calls(out) == []
    dtm.wait_status(gid, "succeed", timeout=10)
    checks = busi.calls("qp")
    assert len(checks) == 3
    assert all(c.query["branch_id"] == "00" and c.query["op"] == "msg" for c in checks)
    assert len(busi.calls(out)) == 1


def test_check_back_error_asks_again(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = _prepare_left_alone(dtm, busi, gid, ERROR, OK)
    busi.wait_calls("qp", 1)
    assert dtm.status(gid) == "prepared"
    dtm.wait_status(gid, "succeed", timeout=10)
    assert len(busi.calls("qp")) == 2
    assert len(busi.calls(out)) == 1


# --- topics ---------------------------------------------------------------------------------


def test_topic_fans_out_to_every_subscriber(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    topic = f"{gid}-topic"
    one, two, last = "one", "two", "last"
    ok(subscribe(dtm, topic, busi.url(one), "first"))
    ok(subscribe(dtm, topic, busi.url(two), "second"))
    body = msg(gid, busi, f"topic://{topic}", last)
    ok(dtm.post("submit", body))
    found = dtm.wait_status(gid, "succeed")
    assert [(b["branch_id"], b["url"]) for b in found["branches"]] == [
        ("01-01", busi.url(one)),
        ("01-02", busi.url(two)),
        ("02", busi.url(last)),
    ]
    assert_action_calls(busi, body, (one, "01-01", 0), (two, "01-02", 0), (last, "02", 1))


def test_unsubscribe_stops_routing_to_that_url(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    topic = f"{gid}-topic"
    one, two = "one", "two"
    ok(subscribe(dtm, topic, busi.url(one)))
    ok(subscribe(dtm, topic, busi.url(two)))
    ok(dtm.get("unsubscribe", topic=topic, url=busi.url(two)))
    resp = dtm.get("unsubscribe", topic=topic, url=busi.url(two))
    assert resp.status_code == 404, resp.text
    ok(dtm.post("submit", msg(gid, busi, f"topic://{topic}")))
    found = dtm.wait_status(gid, "succeed")
    assert [(b["branch_id"], b["url"]) for b in found["branches"]] == [("01", busi.url(one))]
    assert len(busi.calls(one)) == 1
    assert busi.calls(two) == []


def test_deleted_topic_is_not_routed(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    # Upstream keeps routing a deleted topic from its cache; here the message is refused.
    topic = f"{gid}-topic"
    one = "one"
    ok(subscribe(dtm, topic, busi.url(one)))
    resp = requests.delete(f"{dtm.api}/topic/{topic}", timeout=10)
    ok(resp)
    resp = dtm.post("submit", msg(gid, busi, f"topic://{topic}"))
    assert resp.status_code == 400, resp.text
    assert topic in resp.json()["message"]
    assert dtm.query(gid) == {"transaction": None, "branches": []}
    time.sleep(0.3)
    assert busi.calls(one) == []
    resp = requests.delete(f"{dtm.api}/topic/{topic}", timeout=10)
    assert resp.status_code == 404, resp.text


def test_unknown_topic_is_refused(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    resp = dtm.post("submit", msg(gid, busi, f"topic://{gid}-nobody"))
    assert resp.status_code == 400, resp.text
    assert dtm.query(gid)["transaction"] is None


def test_subscribe_errors(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    topic, url = f"{gid}-topic", busi.url("one")
    ok(subscribe(dtm, topic, url))
    again = subscribe(dtm, topic, url)
    assert again.status_code == 409, again.text
    assert "exists" in again.json()["message"]
    assert subscribe(dtm, "", url).status_code == 400
    assert subscribe(dtm, topic, "").status_code == 400
    kv = dtm.get("queryKV", cat="topics", key=topic).json()["kv"]
    assert len(kv) == 1
    assert [s["url"] for s in json.loads(kv[0]["v"])] == [url]


# --- delay ----------------------------------------------------------------------------------


def test_delayed_msg_waits_before_calling_actions(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out = "out"
    started = time.monotonic()
    ok(dtm.post("submit", msg(gid, busi, out, custom_data=json.dumps({"delay": 2}))))
    time.sleep(1.0)
    assert busi.calls(out) == []
    assert dtm.status(gid) == "submitted"
    (call,) = busi.wait_calls(out, 1, timeout=10)
    assert call.at - started >= 1.9
    dtm.wait_status(gid, "succeed")
