"""The server's HTTP API over real HTTP: small endpoints, listings, operator actions
(forceStop, resetNextCronTime, resetCronTime), KV, bad input and the alert webhook.
Upstream's semantics (dtm-labs/dtm test/api_test.go) unless a test says this server
differs on purpose.

Tests that count rows or move cron times use a server of their own (`private_dtm`), so
other tests' transactions cannot change what they see.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.harness import ERROR, FAILURE, OK, ONGOING, DtmServer, Endpoints, slow

PrivateDtm = Callable[..., DtmServer]

# Long back-off: after one error the saga would wait 60 s, longer than any test here.
SLOW_RETRY = {"RetryInterval": 30, "TimeoutToFail": 90}


def saga(gid: str, *actions: str, **options: Any) -> dict[str, Any]:
    steps = [{"action": a, "compensate": ""} for a in actions]
    payloads = [json.dumps({"step": i}) for i in range(len(actions))]
    return {"gid": gid, "trans_type": "saga", "steps": steps, "payloads": payloads, **options}


def msg(gid: str, *actions: str, **options: Any) -> dict[str, Any]:
    steps = [{"action": a} for a in actions]
    payloads = [json.dumps({"step": i}) for i in range(len(actions))]
    return {"gid": gid, "trans_type": "msg", "steps": steps, "payloads": payloads, **options}


def ok(resp: requests.Response) -> None:
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"dtm_result": "SUCCESS"}


def refused(resp: requests.Response, code: int, *words: str) -> dict[str, Any]:
    """A refusal with `code` and a message naming what was wrong."""
    assert resp.status_code == code, resp.text
    body: dict[str, Any] = resp.json()
    assert body.get("message"), body
    for word in words:
        assert word in body["message"], body
    return body


def nothing_stored(dtm: DtmServer, gid: str) -> None:
    assert dtm.query(gid) == {"transaction": None, "branches": []}


def wait_interval(dtm: DtmServer, gid: str, interval: int, timeout: float = 10) -> None:
    """Until the transaction's back-off interval is `interval` (an error was saved)."""
    deadline = time.monotonic() + timeout
    while True:
        trans = dtm.query(gid)["transaction"]
        if trans and trans.get("next_cron_interval") == interval:
            return
        assert time.monotonic() < deadline, trans
        time.sleep(0.05)


# --- small endpoints -------------------------------------------------------------------------


def test_new_gid(dtm: DtmServer) -> None:
    first, second = dtm.get("newGid"), dtm.get("newGid")
    assert first.status_code == 200
    assert first.json()["dtm_result"] == "SUCCESS"
    assert first.json()["gid"] and second.json()["gid"]
    assert first.json()["gid"] != second.json()["gid"]


def test_version_ping_health(dtm: DtmServer) -> None:
    version = dtm.get("version")
    assert version.status_code == 200
    assert isinstance(version.json()["version"], str) and version.json()["version"]
    ping = requests.get(f"{dtm.base}/api/ping", timeout=10)
    assert ping.status_code == 200
    health = requests.get(f"{dtm.base}/api/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


def test_query(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm.post("submit", msg(gid, busi.url("a"), busi.url("b"))))
    found = dtm.wait_status(gid, "succeed")
    assert found["transaction"]["gid"] == gid
    assert found["transaction"]["trans_type"] == "msg"
    assert len(found["branches"]) == 2

    assert dtm.query(f"{gid}-unknown") == {"transaction": None, "branches": []}
    refused(dtm.get("query"), 400, "gid")
    refused(dtm.get("query", gid=""), 400, "gid")


# --- listing ---------------------------------------------------------------------------------


def test_all_pages_and_filters(private_dtm: PrivateDtm, busi: Endpoints, gid: str) -> None:
    server = private_dtm()
    before_ms = int(time.time() * 1000)
    gids = [f"{gid}-{i}" for i in range(5)]
    for g in gids[:3]:
        ok(server.post("submit", msg(g, busi.url(f"{g}-a"))))
        server.wait_status(g, "succeed")
    time.sleep(0.2)
    split_ms = int(time.time() * 1000)
    time.sleep(0.2)
    busi.program(f"{gids[3]}-a", FAILURE)
    ok(server.post("submit", saga(gids[3], busi.url(f"{gids[3]}-a"))))
    server.wait_status(gids[3], "failed")
    busi.program(f"{gids[4]}-qp", ONGOING)
    ok(
        server.post(
            "prepare",
            msg(gids[4], busi.url(f"{gids[4]}-a"), query_prepared=busi.url(f"{gids[4]}-qp")),
        )
    )
    after_ms = int(time.time() * 1000) + 1000

    def listing(**params: Any) -> dict[str, Any]:
        resp = server.get("all", **params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def gids_of(body: dict[str, Any]) -> list[str]:
        return [t["gid"] for t in body["transactions"]]

    newest_first = gids[::-1]
    assert gids_of(listing()) == newest_first
    assert listing()["next_position"] == ""

    # limit 1, page by page, to the end
    seen: list[str] = []
    position = ""
    for _ in range(10):
        page = listing(limit=1, position=position) if position else listing(limit=1)
        assert len(page["transactions"]) <= 1
        seen += gids_of(page)
        position = page["next_position"]
        if not position:
            break
    assert seen == newest_first

    first = listing(limit=1)
    assert gids_of(first) == newest_first[:1] and first["next_position"]
    second = listing(limit=1, position=first["next_position"])
    assert gids_of(second) == newest_first[1:2]
    assert second["next_position"] not in ("", first["next_position"])
    rest = listing(limit=1000, position=first["next_position"])
    assert gids_of(rest) == newest_first[1:] and rest["next_position"] == ""

    assert gids_of(listing(gid=gids[1])) == [gids[1]]
    assert gids_of(listing(gid=f"{gid}-none")) == []

    # filters
    assert gids_of(listing(status="succeed", transType="msg")) == newest_first[2:]
    assert gids_of(listing(transType="saga")) == [gids[3]]
    assert gids_of(listing(status="failed")) == [gids[3]]
    assert gids_of(listing(status="prepared", transType="msg")) == [gids[4]]
    assert gids_of(listing(status="succeed", transType="saga")) == []
    assert gids_of(listing(createTimeStart=before_ms - 60_000, createTimeEnd=after_ms)) == (
        newest_first
    )
    assert gids_of(listing(createTimeStart=split_ms)) == [gids[4], gids[3]]
    assert gids_of(listing(createTimeEnd=split_ms)) == newest_first[2:]
    old = listing(createTimeStart=before_ms - 600_000, createTimeEnd=before_ms - 300_000)
    assert old == {"transactions": [], "next_position": ""}
    filtered = listing(status="succeed", transType="msg", limit=2)
    assert gids_of(filtered) == newest_first[2:4] and filtered["next_position"]
    last = listing(status="succeed", transType="msg", limit=2, position=filtered["next_position"])
    assert gids_of(last) == newest_first[4:]

    for bad in ({"limit": "0"}, {"limit": "many"}, {"position": "x"}, {"createTimeStart": "y"}):
        refused(server.get("all", **bad), 400)


# --- operator actions ------------------------------------------------------------------------


def test_force_stop_while_a_branch_runs(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    first, second = "first", "second"
    busi.program(first, slow(1.5))
    body = saga(gid, busi.url(first), busi.url(second))
    body["steps"][0]["compensate"] = busi.url(f"{first}-revert")
    ok(dtm.post("submit", body))
    busi.wait_calls(first, 1)
    ok(dtm.post("forceStop", {"gid": gid}))
    assert dtm.status(gid) == "failed"
    time.sleep(2.5)  # the slow call answered meanwhile; nothing may follow it
    assert dtm.status(gid) == "failed"
    assert busi.calls(second) == []
    assert busi.calls(f"{first}-revert") == []
    assert len(busi.calls(first)) == 1


def test_force_stop_of_an_erroring_saga(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    busi.program(out, ERROR)
    ok(dtm.post("submit", saga(gid, busi.url(out), retry_interval=1)))
    busi.wait_calls(out, 1)
    ok(dtm.post("forceStop", {"gid": gid}))
    assert dtm.status(gid) == "failed"
    calls = len(busi.calls(out))
    time.sleep(2.5)  # more than the back-off: a saga still running would call again
    assert len(busi.calls(out)) == calls
    assert dtm.status(gid) == "failed"


def test_force_stop_of_a_finished_saga(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    ok(dtm.post("submit", saga(gid, busi.url("out"))))
    dtm.wait_status(gid, "succeed")
    body = refused(dtm.post("forceStop", {"gid": gid}), 409)
    assert body["dtm_result"] == "FAILURE"
    assert dtm.status(gid) == "succeed"
    refused(dtm.post("forceStop", {"gid": f"{gid}-unknown"}), 404)
    refused(dtm.post("forceStop", {}), 400)


def test_reset_next_cron_time_retries_at_once(
    private_dtm: PrivateDtm, busi: Endpoints, gid: str
) -> None:
    # Upstream's resetNextCronTime did not move the retry time; here it must.
    server = private_dtm(**SLOW_RETRY)
    out = "out"
    busi.program(out, ERROR, OK)
    ok(server.post("submit", saga(gid, busi.url(out))))
    busi.wait_calls(out, 1)
    wait_interval(server, gid, 60)
    time.sleep(0.5)
    assert len(busi.calls(out)) == 1 and server.status(gid) == "submitted"

    ok(server.post("resetNextCronTime", {"gid": gid}))
    server.wait_status(gid, "succeed", timeout=5)
    assert len(busi.calls(out)) == 2

    refused(server.post("resetNextCronTime", {"gid": gid}), 404)  # finished
    refused(server.post("resetNextCronTime", {"gid": f"{gid}-unknown"}), 404)
    refused(server.post("resetNextCronTime", {}), 400)


def test_reset_cron_time(private_dtm: PrivateDtm, busi: Endpoints, gid: str) -> None:
    server = private_dtm(**SLOW_RETRY)
    gids = [f"{gid}-0", f"{gid}-1"]
    for g in gids:
        busi.program(f"{g}-out", ERROR, OK)
        ok(server.post("submit", saga(g, busi.url(f"{g}-out"))))
    for g in gids:
        wait_interval(server, g, 60)

    def reset(**params: Any) -> dict[str, Any]:
        resp = server.get("resetCronTime", **params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def finished() -> list[str]:
        return [g for g in gids if server.status(g) == "succeed"]

    # default: only what is due later than 3 x TimeoutToFail (270 s) moves
    assert reset() == {"succeed_count": 0, "has_remaining": False}
    assert reset(timeout=10, limit=1) == {"succeed_count": 1, "has_remaining": True}
    deadline = time.monotonic() + 5
    while not finished():
        assert time.monotonic() < deadline, "the reset saga was not retried at once"
        time.sleep(0.05)
    time.sleep(0.5)
    assert len(finished()) == 1, "limit=1 moved one transaction only"

    assert reset(timeout=10, limit=10) == {"succeed_count": 1, "has_remaining": False}
    for g in gids:
        server.wait_status(g, "succeed", timeout=5)
    assert reset(timeout=10, limit=10) == {"succeed_count": 0, "has_remaining": False}


# --- KV (topics) -----------------------------------------------------------------------------


def test_scan_kv_and_query_kv(private_dtm: PrivateDtm, gid: str) -> None:
    server = private_dtm()
    topics = [f"{gid}-t{i}" for i in range(3)]
    for topic in topics:
        ok(server.get("subscribe", topic=topic, url="http://dtm/test1", remark="for test"))

    def scan(**params: Any) -> dict[str, Any]:
        resp = server.get("scanKV", cat="topics", **params)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    first = scan(limit=1)
    assert len(first["kv"]) == 1 and first["next_position"]
    second = scan(limit=1, position=first["next_position"])
    assert len(second["kv"]) == 1
    assert second["next_position"] not in ("", first["next_position"])
    rest = scan(limit=1000, position=first["next_position"])
    assert len(rest["kv"]) == 2 and rest["next_position"] == ""
    keys = [kv["k"] for kv in first["kv"] + rest["kv"]]
    assert sorted(keys) == sorted(topics)
    assert all(kv["cat"] == "topics" for kv in first["kv"] + rest["kv"])
    assert scan(limit=10)["next_position"] == ""
    refused(server.get("scanKV", cat="topics", position="x"), 400)

    found = server.get("queryKV", cat="topics", key=topics[1]).json()["kv"]
    assert len(found) == 1
    assert found[0]["k"] == topics[1] and found[0]["cat"] == "topics"
    assert found[0]["version"] == 1
    assert json.loads(found[0]["v"]) == [{"url": "http://dtm/test1", "remark": "for test"}]
    assert server.get("queryKV", cat="topics", key=f"{gid}-none").json() == {"kv": []}

    ok(server.get("subscribe", topic=topics[1], url="http://dtm/test2"))
    found = server.get("queryKV", cat="topics", key=topics[1]).json()["kv"]
    assert found[0]["version"] == 2
    assert [s["url"] for s in json.loads(found[0]["v"])] == ["http://dtm/test1", "http://dtm/test2"]


# --- bad input -------------------------------------------------------------------------------


def test_malformed_json_is_refused(dtm: DtmServer, gid: str) -> None:
    truncated = json.dumps(saga(gid, "http://127.0.0.1:1/x"))[:-5].encode()
    for op in ("submit", "prepare", "abort", "forceStop", "registerBranch"):
        resp = dtm.http.post(
            f"{dtm.api}/{op}",
            data=truncated,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        refused(resp, 400, "malformed")
    nothing_stored(dtm, gid)
    wrong_type = {"gid": gid, "trans_type": "saga", "steps": "not a list"}
    refused(dtm.post("submit", wrong_type), 400)
    refused(dtm.post("submit", [gid]), 400)
    nothing_stored(dtm, gid)


def test_gid_is_checked(dtm: DtmServer, gid: str) -> None:
    for op in ("submit", "prepare", "abort", "forceStop", "resetNextCronTime"):
        refused(dtm.post(op, {"trans_type": "saga", "steps": [], "payloads": []}), 400, "gid")
    long_gid = "g" * 129
    refused(dtm.post("submit", saga(long_gid)), 400, "128")
    nothing_stored(dtm, long_gid)
    refused(dtm.post("submit", saga(f"{gid} with space")), 400, "gid")
    longest = f"{gid}-".ljust(128, "x")
    ok(dtm.post("submit", saga(longest)))
    dtm.wait_status(longest, "succeed")


def test_unknown_trans_type_is_refused(dtm: DtmServer, gid: str) -> None:
    body = {"gid": gid, "trans_type": "sagaa", "steps": [], "payloads": []}
    refused(dtm.post("submit", body), 400, "trans_type")
    refused(dtm.post("prepare", body), 400, "trans_type")
    refused(dtm.post("submit", {"gid": gid}), 400, "trans_type")
    nothing_stored(dtm, gid)


def test_steps_and_payloads_must_match(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    body = saga(gid, busi.url("a"), busi.url("b"))
    body["payloads"] = body["payloads"][:1]
    refused(dtm.post("submit", body), 400, "payload")
    body = msg(gid, busi.url("a"))
    body["payloads"] = [*body["payloads"], "{}"]
    refused(dtm.post("submit", body), 400, "payload")
    nothing_stored(dtm, gid)
    time.sleep(0.2)
    assert busi.calls("a") == []


def test_submit_of_a_finished_gid_is_refused(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    body = saga(gid, busi.url("out"))
    ok(dtm.post("submit", body))
    dtm.wait_status(gid, "succeed")
    answer = refused(dtm.post("submit", body), 409)
    assert answer["dtm_result"] == "FAILURE"
    assert len(busi.calls("out")) == 1


def test_submit_with_another_trans_type_is_refused(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    ok(dtm.post("submit", msg(gid, busi.url("out"))))
    dtm.wait_status(gid, "succeed")
    answer = refused(dtm.post("submit", saga(gid, busi.url("other"))), 409)
    assert answer["dtm_result"] == "FAILURE"
    assert dtm.query(gid)["transaction"]["trans_type"] == "msg"
    assert busi.calls("other") == []

    other = f"{gid}-prepared"
    ok(dtm.post("prepare", {"gid": other, "trans_type": "tcc"}))
    answer = refused(dtm.post("submit", saga(other, busi.url("other"))), 409)
    assert dtm.query(other)["transaction"]["trans_type"] == "tcc"
    ok(dtm.post("abort", {"gid": other, "trans_type": "tcc"}))


def test_register_branch_errors(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    branch = {
        "gid": gid,
        "branch_id": "01",
        "trans_type": "tcc",
        "confirm": busi.url("confirm"),
        "cancel": busi.url("cancel"),
        "data": "{}",
    }
    answer = refused(dtm.post("registerBranch", branch), 409)
    assert answer["dtm_result"] == "FAILURE"
    nothing_stored(dtm, gid)

    ok(dtm.post("prepare", {"gid": gid, "trans_type": "tcc"}))
    for trans_type in ("saga", "nonsense", ""):
        refused(dtm.post("registerBranch", {**branch, "trans_type": trans_type}), 400)
    refused(dtm.post("registerBranch", {**branch, "branch_id": ""}), 400, "branch_id")
    assert dtm.query(gid)["branches"] == []
    ok(dtm.post("registerBranch", branch))
    assert [(b["branch_id"], b["op"]) for b in dtm.query(gid)["branches"]] == [
        ("01", "cancel"),
        ("01", "confirm"),
    ]
    ok(dtm.post("abort", {"gid": gid, "trans_type": "tcc"}))
    dtm.wait_status(gid, "failed")
    assert len(busi.calls("cancel")) == 1


def test_oversize_body_is_refused(dtm: DtmServer, gid: str) -> None:
    payload = "x" * (8 * 1024 * 1024 + 1)
    body = saga(gid, "http://127.0.0.1:1/x")
    body["payloads"] = [payload]
    resp = dtm.post("submit", body)
    assert resp.status_code == 413, resp.text[:200]
    assert "message" in resp.json()
    nothing_stored(dtm, gid)


# --- alert webhook ---------------------------------------------------------------------------


def test_alert_webhook_hears_of_a_failing_branch(
    private_dtm: PrivateDtm, busi: Endpoints, gid: str
) -> None:
    alert, out = "alert", "out"
    server = private_dtm(AlertWebHook=busi.url(alert), AlertRetryLimit=1)
    busi.program(out, ERROR)
    ok(server.post("submit", saga(gid, busi.url(out), retry_interval=1)))
    (call,) = busi.wait_calls(alert, 1, timeout=10)[:1]
    assert call.method == "POST"
    event = call.json()
    assert set(event) == {"gid", "status", "branch", "error", "retry_count"}
    assert event["gid"] == gid
    assert event["status"] == "submitted"
    assert event["branch"] == busi.url(out)
    assert "business broke" in event["error"]
    assert event["retry_count"] == 1
    ok(server.post("forceStop", {"gid": gid}))


def test_alert_webhook_waits_for_the_retry_limit(
    private_dtm: PrivateDtm, busi: Endpoints, gid: str
) -> None:
    alert, out = "alert", "out"
    server = private_dtm(AlertWebHook=busi.url(alert), AlertRetryLimit=2)
    busi.program(out, ERROR, OK)
    ok(server.post("submit", saga(gid, busi.url(out), retry_interval=1)))
    server.wait_status(gid, "succeed", timeout=10)
    assert busi.calls(alert) == [], "one error is below AlertRetryLimit=2"
