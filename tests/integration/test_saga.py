"""SAGA over real HTTP: the shared server calls the business stub, tests read /query and
the stub's record of calls. Upstream's semantics (dtm-labs/dtm test/saga_*_test.go) unless
a test says this server differs on purpose.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness import (
    ERROR,
    FAILURE,
    OK,
    ONGOING,
    Answer,
    Call,
    DtmServer,
    Endpoints,
    closed_port_url,
    slow,
)

# A FAILURE answer whose reason the rollback_reason should carry, as upstream's
# TestSagaRollback ("Insufficient balance").
INSUFFICIENT = Answer(409, {"dtm_result": "FAILURE", "message": "Insufficient balance"})


def saga(gid: str, steps: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    """A saga request as the SDKs send it: one JSON payload per step."""
    payloads = options.pop("payloads", None)
    if payloads is None:
        payloads = [json.dumps({"amount": 30, "step": i}) for i in range(len(steps))]
    return {"gid": gid, "trans_type": "saga", "steps": steps, "payloads": payloads, **options}


def step(busi: Endpoints, action: str, compensate: str, **extra: str) -> dict[str, str]:
    return {"action": busi.url(action), "compensate": busi.url(compensate), **extra}


def steps(busi: Endpoints, *names: str) -> list[dict[str, str]]:
    """A step per stub name, each compensated by the stub `<name>-revert`."""
    return [step(busi, name, f"{name}-revert") for name in names]


def concurrent(orders: dict[str, list[int]]) -> str:
    """custom_data of a concurrent saga: step index -> the steps it waits for."""
    return json.dumps({"concurrent": True, "orders": orders})


def submit(dtm: DtmServer, body: dict[str, Any]) -> None:
    resp = dtm.post("submit", body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"dtm_result": "SUCCESS"}


def trans(dtm: DtmServer, gid: str) -> dict[str, Any]:
    found: dict[str, Any] = dtm.query(gid)["transaction"]
    return found


def wait_interval(dtm: DtmServer, gid: str, at_least: int, timeout: float = 10) -> None:
    """Until the transaction has backed off to `at_least` seconds (an error was saved)."""
    deadline = time.monotonic() + timeout
    while (trans(dtm, gid).get("next_cron_interval") or 0) < at_least:
        assert time.monotonic() < deadline, trans(dtm, gid)
        time.sleep(0.05)


# --- the normal path -----------------------------------------------------------------------


def test_two_steps_succeed_calling_actions_in_order(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out, into = "out", "in"
    body = saga(gid, steps(busi, out, into))
    submit(dtm, body)
    found = dtm.wait_status(gid, "succeed")

    first, second = busi.calls(out), busi.calls(into)
    assert len(first) == 1 and len(second) == 1
    assert first[0].at <= second[0].at
    for call, branch_id, payload in ((first[0], "01", 0), (second[0], "02", 1)):
        assert call.method == "POST"
        assert call.query == {
            "gid": gid,
            "trans_type": "saga",
            "branch_id": branch_id,
            "op": "action",
        }
        assert call.body == body["payloads"][payload].encode()
        assert {k.lower(): v for k, v in call.headers.items()}["content-type"] == (
            "application/json"
        )
    assert busi.calls(f"{out}-revert") == [] and busi.calls(f"{into}-revert") == []
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "prepared"),
        ("01", "action", "succeed"),
        ("02", "compensate", "prepared"),
        ("02", "action", "succeed"),
    ]
    assert found["transaction"]["trans_type"] == "saga"
    assert found["transaction"].get("rollback_reason", "") == ""
    assert [b["url"] for b in found["branches"]] == [
        busi.url(f"{out}-revert"),
        busi.url(out),
        busi.url(f"{into}-revert"),
        busi.url(into),
    ]


def test_zero_steps_succeed(dtm: DtmServer, gid: str) -> None:
    submit(dtm, saga(gid, []))
    found = dtm.wait_status(gid, "succeed")
    assert found["branches"] == []


def test_empty_urls_succeed_without_calls(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    steps = [{"action": busi.url(out), "compensate": ""}, {"action": "", "compensate": ""}]
    submit(dtm, saga(gid, steps))
    dtm.wait_status(gid, "succeed")
    assert len(busi.calls(out)) == 1
    assert len(busi.calls()) == 1, "nothing called for the empty URLs"
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "prepared"),
        ("01", "action", "succeed"),
        ("02", "compensate", "prepared"),
        ("02", "action", "succeed"),
    ]


def test_payload_is_sent_as_the_raw_body(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    raw = 'not JSON at all: {"a": 1}, ünïcode, "quotes", \\ backslash\nsecond line'
    submit(dtm, saga(gid, steps(busi, out), payloads=[raw]))
    dtm.wait_status(gid, "succeed")
    (call,) = busi.calls(out)
    assert call.method == "POST"
    assert call.body == raw.encode()


def test_branch_headers_are_sent_to_branches(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out, into = "out", "in"
    busi.program(into, FAILURE)
    headers = {"test_header": "test", "X-Tenant": "acme"}
    body = saga(gid, steps(busi, out, into), branch_headers=headers)
    submit(dtm, body)
    dtm.wait_status(gid, "failed")
    calls = [*busi.calls(out), *busi.calls(into), *busi.calls(f"{into}-revert")]
    calls += busi.calls(f"{out}-revert")
    assert len(calls) == 4
    for call in calls:
        lowered = {k.lower(): v for k, v in call.headers.items()}
        assert lowered["test_header"] == "test"
        assert lowered["x-tenant"] == "acme"


# --- failure and rollback ------------------------------------------------------------------


def test_failure_compensates_in_reverse_including_the_failed_step(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    names = ["a", "b", "c"]
    busi.program(names[1], INSUFFICIENT)
    submit(dtm, saga(gid, steps(busi, *names)))
    found = dtm.wait_status(gid, "failed")

    assert len(busi.calls(names[0])) == 1 and len(busi.calls(names[1])) == 1
    assert busi.calls(names[2]) == [], "a step after the failed one never starts"
    assert busi.calls(f"{names[2]}-revert") == [], "a step never started is not compensated"
    (undo_b,) = busi.calls(f"{names[1]}-revert")
    (undo_a,) = busi.calls(f"{names[0]}-revert")
    assert undo_b.at <= undo_a.at, "compensations run in reverse"
    for call, branch_id in ((undo_b, "02"), (undo_a, "01")):
        assert call.method == "POST"
        assert call.query == {
            "gid": gid,
            "trans_type": "saga",
            "branch_id": branch_id,
            "op": "compensate",
        }
        assert json.loads(call.body) == {"amount": 30, "step": int(branch_id) - 1}
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "succeed"),
        ("02", "compensate", "succeed"),
        ("02", "action", "failed"),
        ("03", "compensate", "prepared"),
        ("03", "action", "prepared"),
    ]
    assert "Insufficient balance" in found["transaction"]["rollback_reason"]


def test_failure_in_a_200_body_counts_as_failure(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    busi.program(out, Answer(200, {"dtm_result": "FAILURE", "message": "said in the body"}))
    submit(dtm, saga(gid, steps(busi, out)))
    found = dtm.wait_status(gid, "failed")
    assert len(busi.calls(out)) == 1, "a FAILURE is final, never retried"
    assert len(busi.calls(f"{out}-revert")) == 1
    assert "said in the body" in found["transaction"]["rollback_reason"]
    assert dtm.branch_rows(gid) == [("01", "compensate", "succeed"), ("01", "action", "failed")]


def test_compensation_errors_are_retried_until_it_succeeds(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out, into = "out", "in"
    busi.program(into, FAILURE)
    busi.program(f"{out}-revert", ERROR, OK)
    body = saga(gid, steps(busi, out, into), retry_interval=1)
    submit(dtm, body)
    busi.wait_calls(f"{out}-revert", 1)
    wait_interval(dtm, gid, 2)
    assert dtm.status(gid) == "aborting"
    dtm.wait_status(gid, "failed", timeout=10)
    assert len(busi.calls(f"{out}-revert")) == 2
    assert len(busi.calls(f"{into}-revert")) == 1, "a compensation that succeeded is not repeated"
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "succeed"),
        ("02", "compensate", "succeed"),
        ("02", "action", "failed"),
    ]


# --- retries of errors and ongoing answers --------------------------------------------------


def _retried_then_succeed(dtm: DtmServer, busi: Endpoints, gid: str, first: Answer) -> None:
    out, into = "out", "in"
    busi.program(out, first, OK)
    body = saga(gid, steps(busi, out, into), retry_interval=1)
    submit(dtm, body)
    busi.wait_calls(out, 1)
    time.sleep(0.3)
    assert dtm.status(gid) == "submitted"
    assert busi.calls(into) == [], "the next step waits for this one"
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "prepared"),
        ("01", "action", "prepared"),
        ("02", "compensate", "prepared"),
        ("02", "action", "prepared"),
    ]
    dtm.wait_status(gid, "succeed", timeout=10)
    calls = busi.calls(out)
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 0.8, "retried after the retry interval, not at once"
    assert len(busi.calls(into)) == 1
    assert busi.calls(f"{out}-revert") == []


def test_error_is_retried_then_succeeds(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    _retried_then_succeed(dtm, busi, gid, ERROR)


def test_ongoing_is_retried_then_succeeds(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    _retried_then_succeed(dtm, busi, gid, ONGOING)


class _LateBranch:
    """An HTTP branch started on a given port only when the test wants it up."""

    def __init__(self, port: int) -> None:
        self.calls: list[str] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                calls.append(self.path)
                body = b'{"dtm_result":"SUCCESS"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def late_branch() -> Iterator[list[_LateBranch]]:
    started: list[_LateBranch] = []
    yield started
    for branch in started:
        branch.close()


def test_down_branch_is_retried_until_it_is_up(
    dtm: DtmServer, gid: str, late_branch: list[_LateBranch]
) -> None:
    url = closed_port_url()
    port = urlsplit(url).port
    assert port is not None
    submit(dtm, saga(gid, [{"action": url, "compensate": ""}], retry_interval=1))
    wait_interval(dtm, gid, 2)
    assert dtm.status(gid) == "submitted"
    late_branch.append(_LateBranch(port))
    dtm.wait_status(gid, "succeed", timeout=10)
    assert len(late_branch[0].calls) == 1
    assert f"gid={gid}" in late_branch[0].calls[0]


# --- concurrent sagas -----------------------------------------------------------------------


def test_concurrent_branch_order_waits_for_predecessor(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    first, second = "first", "second"
    busi.program(first, slow(1.0))
    body = saga(gid, steps(busi, first, second), custom_data=concurrent({"1": [0]}))
    submit(dtm, body)
    dtm.wait_status(gid, "succeed")
    (a,) = busi.calls(first)
    (b,) = busi.calls(second)
    assert b.at - a.at >= 0.95, "step 1 starts only after step 0 answered"


def test_concurrent_independent_steps_run_in_parallel(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    names = ["a", "b", "c"]
    busi.program(names[0], slow(1.0))
    busi.program(names[1], slow(1.0))
    body = saga(gid, steps(busi, *names), custom_data=concurrent({"2": [0]}))
    started = time.monotonic()
    submit(dtm, body)
    dtm.wait_status(gid, "succeed")
    a, b, c = (busi.calls(n)[0] for n in names)
    assert abs(a.at - b.at) < 0.5, "independent steps start together"
    assert c.at - a.at >= 0.95, "step 2 waits for step 0"
    assert c.at - started < 1.9, "step 2 does not also wait for step 1 in sequence"


def test_concurrent_compensation_respects_reverse_orders(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    first, second = "first", "second"
    busi.program(second, INSUFFICIENT)
    busi.program(f"{second}-revert", slow(1.0))
    body = saga(gid, steps(busi, first, second), custom_data=concurrent({"1": [0]}))
    submit(dtm, body)
    found = dtm.wait_status(gid, "failed")
    (undo_second,) = busi.calls(f"{second}-revert")
    (undo_first,) = busi.calls(f"{first}-revert")
    assert undo_first.at - undo_second.at >= 0.95, "step 0 is undone after step 1 is undone"
    assert "Insufficient balance" in found["transaction"]["rollback_reason"]
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "succeed"),
        ("02", "compensate", "succeed"),
        ("02", "action", "failed"),
    ]


def test_concurrent_failure_does_not_compensate_steps_never_started(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    # Upstream's TestSagaConRollbackOrder: step 0 fails, step 1 (after 0) never runs.
    first, second = "first", "second"
    busi.program(first, FAILURE)
    body = saga(gid, steps(busi, first, second), custom_data=concurrent({"1": [0]}))
    submit(dtm, body)
    dtm.wait_status(gid, "failed")
    assert busi.calls(second) == [] and busi.calls(f"{second}-revert") == []
    assert len(busi.calls(f"{first}-revert")) == 1
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "failed"),
        ("02", "compensate", "prepared"),
        ("02", "action", "prepared"),
    ]


# --- options --------------------------------------------------------------------------------


def test_retry_limit_rolls_back_after_immediate_retries(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out, into = "out", "in"
    busi.program(into, ERROR)
    body = saga(gid, steps(busi, out, into), retry_limit=2, retry_interval=10)
    submit(dtm, body)
    found = dtm.wait_status(gid, "failed", timeout=10)
    calls = busi.calls(into)
    assert len(calls) == 3, "one call and retry_limit immediate retries"
    assert calls[-1].at - calls[0].at < 2, "the retries do not wait for the retry interval"
    assert found["transaction"]["rollback_reason"] == (
        "RetryCount is greater than RetryLimit, RetryLimit: 2"
    )
    # The erroring action may have done its work: it is compensated, as upstream does.
    assert len(busi.calls(f"{into}-revert")) == 1
    assert len(busi.calls(f"{out}-revert")) == 1
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "succeed"),
        ("02", "compensate", "succeed"),
        ("02", "action", "prepared"),
    ]


def test_retry_limit_not_reached_succeeds(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    busi.program(out, ERROR, ERROR, OK)
    body = saga(gid, steps(busi, out), retry_limit=3, wait_result=True)
    resp = dtm.post("submit", body)
    assert resp.status_code == 200, resp.text
    assert dtm.status(gid) == "succeed"
    assert len(busi.calls(out)) == 3
    assert busi.calls(f"{out}-revert") == []


def test_timeout_to_fail_rolls_back(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out, into = "out", "in"
    busi.program(out, ONGOING)
    body = saga(gid, steps(busi, out, into), timeout_to_fail=2, retry_interval=1)
    started = time.monotonic()
    submit(dtm, body)
    busi.wait_calls(out, 1)
    assert dtm.status(gid) == "submitted"
    found = dtm.wait_status(gid, "failed", timeout=10)
    assert time.monotonic() - started >= 1.9
    assert found["transaction"]["rollback_reason"] == "Timeout after 2 seconds"
    assert len(busi.calls(f"{out}-revert")) == 1
    assert busi.calls(into) == [] and busi.calls(f"{into}-revert") == []
    assert dtm.branch_rows(gid) == [
        ("01", "compensate", "succeed"),
        ("01", "action", "prepared"),
        ("02", "compensate", "prepared"),
        ("02", "action", "prepared"),
    ]


def test_timeout_to_fail_with_a_slow_branch(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out = "out"
    busi.program(out, slow(2.5, ERROR))
    body = saga(gid, steps(busi, out), timeout_to_fail=1, request_timeout=5, retry_interval=1)
    submit(dtm, body)
    found = dtm.wait_status(gid, "failed", timeout=10)
    assert found["transaction"]["rollback_reason"] == "Timeout after 1 seconds"
    assert len(busi.calls(out)) == 1
    assert len(busi.calls(f"{out}-revert")) == 1


def test_wait_result_success(dtm: DtmServer, busi: Endpoints, gid: str) -> None:
    out, into = "out", "in"
    busi.program(out, slow(0.5))
    body = saga(gid, steps(busi, out, into), wait_result=True)
    resp = dtm.post("submit", body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"dtm_result": "SUCCESS"}
    assert dtm.status(gid) == "succeed", "the answer came after the saga finished"
    assert len(busi.calls(into)) == 1


def test_wait_result_failure_answers_409_with_the_reason(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out, into = "out", "in"
    busi.program(into, INSUFFICIENT)
    body = saga(gid, steps(busi, out, into), wait_result=True)
    resp = dtm.post("submit", body)
    assert resp.status_code == 409, resp.text
    answer = resp.json()
    assert answer["dtm_result"] == "FAILURE"
    assert "Insufficient balance" in answer["message"]
    assert dtm.status(gid) == "failed"


def test_wait_result_error_answers_ongoing_then_succeeds(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    # Upstream answers FAILURE here though the saga goes on and succeeds; ONGOING is right.
    out = "out"
    busi.program(out, ERROR, OK)
    body = saga(gid, steps(busi, out), wait_result=True, retry_interval=1)
    resp = dtm.post("submit", body)
    assert resp.status_code == 425, resp.text
    assert resp.json()["dtm_result"] == "ONGOING"
    dtm.wait_status(gid, "succeed", timeout=10)
    assert len(busi.calls(out)) == 2
    assert busi.calls(f"{out}-revert") == []


def test_transaction_request_timeout_retries_a_slower_branch(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    out = "out"
    busi.program(out, slow(1.6), OK)
    body = saga(gid, steps(busi, out), request_timeout=1, retry_interval=1)
    submit(dtm, body)
    dtm.wait_status(gid, "succeed", timeout=10)
    calls = busi.calls(out)
    assert len(calls) == 2, "the first call timed out after 1 s and was retried"
    assert busi.calls(f"{out}-revert") == []


def test_transaction_request_timeout_lets_a_slow_branch_succeed(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    # Upstream's TestSagaGlobalTransWithRequestTimeout: longer than the server's 2 s.
    out = "out"
    busi.program(out, slow(2.5))
    body = saga(gid, [step(busi, out, "")], request_timeout=4, wait_result=True)
    resp = dtm.post("submit", body)
    assert resp.status_code == 200, resp.text
    assert dtm.status(gid) == "succeed"
    assert len(busi.calls(out)) == 1


def test_step_request_timeout_overrides_the_global_one(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    # This server's addition: a step map may carry its own "request_timeout" (seconds).
    patient, hasty = "patient", "hasty"
    busi.program(patient, slow(3.0))
    busi.program(hasty, slow(3.0), OK)
    with_own = saga(
        gid, [step(busi, patient, f"{patient}-revert", request_timeout="5")], retry_interval=1
    )
    control = saga(f"{gid}-ctl", steps(busi, hasty), retry_interval=1)
    submit(dtm, with_own)
    submit(dtm, control)
    dtm.wait_status(gid, "succeed", timeout=10)
    dtm.wait_status(f"{gid}-ctl", "succeed", timeout=10)
    assert len(busi.calls(patient)) == 1, "5 s per-step timeout: the 3 s branch succeeded"
    assert len(busi.calls(hasty)) == 2, "server's 2 s timeout: the 3 s branch was retried"


def test_step_request_timeout_must_be_positive_seconds(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    for i, bad in enumerate(["0", "-1", "soon", "1.5"]):
        body = saga(f"{gid}-{i}", [step(busi, "out", "", request_timeout=bad)])
        resp = dtm.post("submit", body)
        assert resp.status_code == 400, (bad, resp.text)
        assert "request_timeout" in resp.json()["message"]
        assert dtm.query(f"{gid}-{i}")["transaction"] is None


# --- repeated submits -----------------------------------------------------------------------


def test_repeated_submit_is_ignored_and_finished_saga_refuses_submit(
    dtm: DtmServer, busi: Endpoints, gid: str
) -> None:
    # Upstream's TestSagaAbnormal.
    out = "out"
    answered: list[Call] = []

    def record(call: Call) -> Answer:
        answered.append(call)
        return ONGOING if len(answered) == 1 else OK

    busi.program(out, record)
    body = saga(gid, steps(busi, out), retry_interval=1)
    submit(dtm, body)
    busi.wait_calls(out, 1)
    submit(dtm, body)  # while submitted: accepted, starts nothing new
    dtm.wait_status(gid, "succeed", timeout=10)
    resp = dtm.post("submit", body)
    assert resp.status_code == 409, resp.text
    assert resp.json()["dtm_result"] == "FAILURE"
    assert len(busi.calls(out)) == 2
