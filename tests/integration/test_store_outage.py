"""The store goes away and comes back, under a running server, on every server store.

Each driver's store is a private instance (tests/services.py) the test stops cleanly or
SIGKILLs, then starts again on the same port and data. Meanwhile the server must answer
clearly (503 with a message, never an acknowledgement it could not store), stay up, and
by itself reconnect and finish what it had acknowledged before the outage.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.harness import OK, DtmServer, Endpoints, slow
from tests.services import MariaDBService, PostgresService, RedisService, Service, service_fixture

redis_service = service_fixture(RedisService)
postgres_service = service_fixture(PostgresService)
mysql_service = service_fixture(MariaDBService)

DRIVERS = ("redis", "postgres", "mysql")

# How long the server may take to notice the store is back (health 200 again).
RECONNECT_WITHIN = 15.0
# A request while the store is down must be answered, not left hanging.
ANSWER_WITHIN = 10.0


def store_config(driver: str, service: Service) -> dict[str, Any]:
    """Upstream's `Store` section pointing at the private instance."""
    common = {"Driver": driver, "Host": "127.0.0.1", "Port": service.port}
    if driver == "redis":
        return common
    if driver == "postgres":
        return {**common, "User": "postgres", "Password": "", "Db": "postgres", "Schema": "public"}
    return {**common, "User": "root", "Password": "", "Db": "dtm"}


def saga(gid: str, busi: Endpoints, prefix: str, steps: int) -> dict[str, Any]:
    """A saga whose step i calls `<prefix><i>` and is compensated by `<prefix>c<i>`."""
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [
            {"action": busi.url(f"{prefix}{i}"), "compensate": busi.url(f"{prefix}c{i}")}
            for i in range(1, steps + 1)
        ],
        "payloads": [json.dumps({"step": i}) for i in range(1, steps + 1)],
    }


def log_tail(server: DtmServer, lines: int = 40) -> str:
    return "\n".join(server.logs().splitlines()[-lines:])


def acknowledged(server: DtmServer, resp: requests.Response) -> None:
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text}\n{log_tail(server)}"
    assert resp.json().get("dtm_result") == "SUCCESS", resp.text


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)
# asyncpg's pool logs each failed attempt to refill its minimum size with a traceback, at
# WARNING: its own housekeeping, not an error that escaped the server.
_LIBRARY_NOISE = (" WARNING asyncpg.pool: ",)


def unexpected_errors(server: DtmServer) -> list[str]:
    """Log records with a traceback: an exception that escaped the server's handling (an
    outage should only ever be a one-line `store unavailable`)."""
    text = server.logs()
    starts = [m.start() for m in _RECORD.finditer(text)] + [len(text)]
    records = [text[a:b] for a, b in itertools.pairwise(starts)]
    return [
        r
        for r in records
        if "Traceback" in r and not any(noise in r.split("\n", 1)[0] for noise in _LIBRARY_NOISE)
    ]


def health(server: DtmServer) -> int:
    return server.http.get(f"{server.base}/api/health", timeout=ANSWER_WITHIN).status_code


def wait_health(server: DtmServer, code: int, within: float) -> float:
    """Seconds until /api/health answers `code`; fails after `within`."""
    start = time.monotonic()
    while True:
        seen = health(server)
        if seen == code:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(
                f"health {seen}, wanted {code} within {within}s\n{log_tail(server)}"
            )
        time.sleep(0.1)


def refused(server: DtmServer, resp: requests.Response, elapsed: float) -> None:
    """A clear refusal because of the store: 503 with a JSON message, answered promptly."""
    assert resp.status_code == 503, f"{resp.status_code}: {resp.text}\n{log_tail(server)}"
    body = resp.json()
    assert "store" in str(body.get("message", "")).lower(), body
    assert body.get("dtm_result") != "SUCCESS", body
    assert elapsed < ANSWER_WITHIN, f"answered after {elapsed:.1f}s"


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    start = time.monotonic()
    resp = call()
    return resp, time.monotonic() - start


class Submitter:
    """Submits one-step sagas back to back from a thread, across the outage, and keeps
    every answer: each acknowledged one must exist and finish once the store is back."""

    def __init__(self, server: DtmServer, busi: Endpoints, gid: str) -> None:
        self.server = server
        self.busi = busi
        self.gid = gid
        self.answers: list[tuple[str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(ANSWER_WITHIN * 2)

    def _run(self) -> None:
        with requests.Session() as http:
            i = 0
            while not self._stop.is_set():
                gid = f"{self.gid}-load{i}"
                resp = http.post(
                    f"{self.server.api}/submit",
                    json=saga(gid, self.busi, "l", 1),
                    timeout=ANSWER_WITHIN * 2,
                )
                self.answers.append((gid, resp.status_code, resp.text))
                i += 1
                time.sleep(0.05)

    def acknowledged(self) -> list[str]:
        return [gid for gid, code, _ in self.answers if code == 200]

    def check_answers(self) -> None:
        """Only acknowledgements and clear refusals, and both were seen."""
        odd = [(code, text) for _, code, text in self.answers if code not in (200, 503)]
        assert not odd, odd[:3]
        codes = {code for _, code, _ in self.answers}
        assert codes == {200, 503}, f"answers seen: {codes}"


def submit_many(server: DtmServer, bodies: list[dict[str, Any]]) -> list[requests.Response]:
    """Concurrent submits, so that several pooled store connections are used at once."""

    def post(body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{server.api}/submit", json=body, timeout=ANSWER_WITHIN * 2)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


@dataclass(frozen=True)
class PrivateStore:
    driver: str
    service: Service

    def take_down(self, how: str) -> None:
        if how == "kill":
            self.service.kill()
        else:
            self.service.stop()


@pytest.fixture(params=DRIVERS)
def store(request: pytest.FixtureRequest) -> Iterator[PrivateStore]:
    """The driver's private instance, up; left up for the module's next test."""
    service: Service = request.getfixturevalue(f"{request.param}_service")
    service.start()  # an earlier test may have failed while its store was down
    yield PrivateStore(request.param, service)
    service.start()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_store_outage_refuses_clearly_and_resumes(
    store: PrivateStore,
    how: str,
    private_dtm: Callable[..., DtmServer],
    busi: Endpoints,
    gid: str,
) -> None:
    server = private_dtm(Store=store_config(store.driver, store.service))

    # (1) Sagas go through while the store is up; concurrent ones fill the connection pool.
    assert health(server) == 200, log_tail(server)
    before = [saga(f"{gid}-before{i}", busi, "b", 2) for i in range(8)]
    for resp in submit_many(server, before):
        acknowledged(server, resp)
    for body in before:
        server.wait_status(body["gid"], "succeed", timeout=10)

    with Submitter(server, busi, gid) as load:
        # (2) A saga is acknowledged, and the store goes away while its first action runs.
        in_flight = f"{gid}-inflight"
        busi.program("s1", slow(1.0), OK)
        acknowledged(server, server.post("submit", saga(in_flight, busi, "s", 2)))
        first_call = busi.wait_calls("s1", 1, timeout=5)[0].at
        store.take_down(how)
        down_since = time.monotonic()

        # (3) While it is down: clear refusals, nothing acknowledged, the server stays up.
        wait_health(server, 503, within=ANSWER_WITHIN)
        resp, elapsed = timed(lambda: server.post("submit", saga(f"{gid}-refused", busi, "r", 1)))
        refused(server, resp, elapsed)
        msg = {
            "gid": f"{gid}-refused-msg",
            "trans_type": "msg",
            "steps": [{"action": busi.url("m1")}],
            "payloads": ["{}"],
            "query_prepared": busi.url("qp"),
        }
        resp, elapsed = timed(lambda: server.post("prepare", msg))
        refused(server, resp, elapsed)
        resp, elapsed = timed(lambda: server.get("query", gid=in_flight))
        refused(server, resp, elapsed)

        # The slow action answers during the outage; its result cannot be saved, so the
        # pass must not go on to step 2. Stay down past the pass's lease, so that recovery,
        # not the original pass, has to finish the saga.
        time.sleep(max(0.0, first_call + 3.5 - time.monotonic()))
        assert busi.count("s2") == 0, "step 2 ran on a result that could not be saved"
        assert server.proc is not None and server.proc.poll() is None, log_tail(server)
        assert time.monotonic() - down_since < 10

        # (4) The store comes back; the same server process reconnects and resumes.
        store.service.start()
        wait_health(server, 200, within=RECONNECT_WITHIN)
        time.sleep(0.5)  # a few of the submitter's requests land after the restart
    load.check_answers()

    # Pooled connections from before the outage must not fail requests now.
    after = [saga(f"{gid}-after{i}", busi, "n", 1) for i in range(8)]
    for resp in submit_many(server, after):
        acknowledged(server, resp)
    for body in after:
        server.wait_status(body["gid"], "succeed", timeout=10)

    # Everything acknowledged before, during and after the outage finishes.
    server.wait_status(in_flight, "succeed", timeout=15)
    assert busi.count("s1") >= 2, "step 1's answer came during the outage: it runs again"
    assert busi.count("s2") >= 1
    assert busi.count("sc1") == 0 and busi.count("sc2") == 0
    for acked in load.acknowledged():
        server.wait_status(acked, "succeed", timeout=10)

    # What was refused while the store was down does not exist and was never started.
    assert server.query(f"{gid}-refused")["transaction"] is None
    assert server.query(f"{gid}-refused-msg")["transaction"] is None
    assert busi.count("r1") == 0 and busi.count("m1") == 0
    assert server.proc.poll() is None
    assert not unexpected_errors(server), unexpected_errors(server)[0]


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_store_restart_between_requests(
    store: PrivateStore,
    how: str,
    private_dtm: Callable[..., DtmServer],
    busi: Endpoints,
    gid: str,
) -> None:
    """The store restarts while the server is idle: every pooled connection is dead and
    the server has seen no error yet. Its first requests may be refused (503), never
    answered otherwise; the server then works on fresh connections."""
    server = private_dtm(Store=store_config(store.driver, store.service))
    before = [saga(f"{gid}-before{i}", busi, "b", 1) for i in range(8)]
    for resp in submit_many(server, before):
        acknowledged(server, resp)
    for body in before:
        server.wait_status(body["gid"], "succeed", timeout=10)

    store.take_down(how)
    store.service.start()

    first = [saga(f"{gid}-first{i}", busi, "f", 1) for i in range(8)]
    answers = submit_many(server, first)
    assert {r.status_code for r in answers} <= {200, 503}, [r.text for r in answers]
    wait_health(server, 200, within=RECONNECT_WITHIN)
    after = [saga(f"{gid}-after{i}", busi, "n", 1) for i in range(8)]
    for resp in submit_many(server, after):
        acknowledged(server, resp)
    for body, resp in [*zip(first, answers, strict=True), *((b, None) for b in after)]:
        if resp is None or resp.status_code == 200:
            server.wait_status(body["gid"], "succeed", timeout=10)
    refusals = sum(r.status_code == 503 for r in answers)
    print(f"{store.driver} {how}: {refusals}/{len(first)} first requests refused")
    assert not unexpected_errors(server), unexpected_errors(server)[0]
