"""Many servers, one store: three `dtm serve` processes share one store of each kind.

A load of 2-step sagas is submitted round-robin through all three while one of them is
SIGKILLed half-way. Whatever was acknowledged (an HTTP 200 answer) must end: the killed
server's transactions are taken over by the survivors once their lease runs out. Some
actions are slow (work in flight at the kill), some fail (rollbacks), some error once
(retries, which any of the servers may pick up).

Asserted, none of it on timing: every acknowledged saga ends succeed or failed, as its
business answers decide; every action that had to run was called at least once, with its
own payload; a failed saga's compensations ran and a succeeded one's never did; an action
after a failed one never ran; nothing in the store is left unfinished.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import ERROR, FAILURE, OK, Answer, Call, DtmServer, Endpoints, slow
from tests.stores_config import DRIVERS, drop_store, store_config

SAGAS = 1050  # enough that at least 1,000 are acknowledged although one server dies
CONCURRENCY = 32
SERVERS = 3
VICTIM = 1
FINISH_WITHIN = 45.0  # seconds after the last submit; the test fails, never waits longer

# What a saga's business does, by kind (the kind is part of the gid, so the business stub
# knows it from the query string alone).
PLAIN = "ok"  # both actions succeed at once
SLOW = "slow"  # step 1's action answers after 0.3 s: in flight when the server dies
FLAKY = "flaky"  # step 1's action answers 500 once, then succeeds: a retry
FAIL_1 = "fail1"  # step 1's action fails: c1 runs, step 2 never does
FAIL_2 = "fail2"  # step 2's action fails: c2 and c1 run


def kind_of(i: int) -> str:
    """10% slow, 5% flaky, 5% fail at step 1, 5% at step 2, the rest plain."""
    return {0: SLOW, 1: SLOW, 2: FLAKY, 3: FAIL_1, 4: FAIL_2}.get(i % 20, PLAIN)


def saga_body(gid: str, busi: Endpoints) -> dict[str, Any]:
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": busi.url(f"a{n}"), "compensate": busi.url(f"c{n}")} for n in (1, 2)],
        "payloads": [json.dumps({"gid": gid, "step": n}) for n in (1, 2)],
        "retry_interval": 1,
        "wait_result": False,
    }


def program_business(busi: Endpoints) -> None:
    flaked: set[str] = set()  # only touched on the stub's event loop thread

    def a1(call: Call) -> Answer:
        gid = call.query.get("gid", "")
        kind = gid.split("-")[1]
        if kind == SLOW:
            return slow(0.3)
        if kind == FAIL_1:
            return FAILURE
        if kind == FLAKY and gid not in flaked:
            flaked.add(gid)
            return ERROR
        return OK

    def a2(call: Call) -> Answer:
        return FAILURE if call.query.get("gid", "").split("-")[1] == FAIL_2 else OK

    busi.program("a1", a1)
    busi.program("a2", a2)


@dataclass
class Load:
    """What the client saw: acknowledged gids, and the ones it cannot know about."""

    acked: dict[str, str] = field(default_factory=dict)  # gid -> kind
    acked_by: dict[str, int] = field(default_factory=dict)  # gid -> index of the server
    unknown: list[str] = field(default_factory=list)  # no answer: may or may not be stored
    refused: list[str] = field(default_factory=list)  # an answer other than 200 SUCCESS
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_load(
    servers: list[DtmServer], busi: Endpoints, on_half: Callable[[], None]
) -> tuple[Load, float]:
    """Submit SAGAS sagas round-robin from a thread pool; call `on_half` half-way, while
    submits go on. A submit without an answer is tried again with a new gid on the next
    server, as a client with a list of servers would. Returns the load and its duration."""
    run = uuid.uuid4().hex[:8]
    load = Load()
    local = threading.local()
    sessions: list[requests.Session] = []
    done = 0
    half = threading.Event()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with load.lock:
                sessions.append(local.session)
        s: requests.Session = local.session
        return s

    def submit(i: int) -> None:
        nonlocal done
        kind = kind_of(i)
        for attempt in range(SERVERS):
            gid = f"{run}-{kind}-{i}" + (f"-r{attempt}" if attempt else "")
            server = servers[(i + attempt) % SERVERS]
            try:
                resp = session().post(f"{server.api}/submit", json=saga_body(gid, busi), timeout=15)
            except requests.RequestException:
                with load.lock:
                    load.unknown.append(gid)
                continue
            with load.lock:
                if resp.status_code == 200 and resp.json().get("dtm_result") == "SUCCESS":
                    load.acked[gid] = kind
                    load.acked_by[gid] = (i + attempt) % SERVERS
                else:
                    load.refused.append(f"{gid} via {server.api}: {resp.status_code} {resp.text}")
            break
        with load.lock:
            done += 1
            if done == SAGAS // 2:
                half.set()

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(submit, i) for i in range(SAGAS)]
        half.wait(60)
        on_half()
        for future in futures:
            future.result()
    elapsed = time.monotonic() - started
    for s in sessions:
        s.close()
    return load, elapsed


def unfinished(server: DtmServer) -> list[dict[str, Any]]:
    """Every transaction of the store that is not finished, through /all."""
    found: list[dict[str, Any]] = []
    for status in ("prepared", "submitted", "aborting"):
        position = ""
        while True:
            page = server.get("all", status=status, limit=1000, position=position)
            assert page.status_code == 200, page.text
            body = page.json()
            found += body["transactions"]
            position = body.get("next_position") or ""
            if not position:
                break
    return found


def query_all(servers: list[DtmServer], gids: list[str]) -> dict[str, dict[str, Any]]:
    """/query of every gid, spread over `servers`."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def one(item: tuple[int, str]) -> tuple[str, dict[str, Any]]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with lock:
                sessions.append(local.session)
        i, gid = item
        resp = local.session.get(
            f"{servers[i % len(servers)].api}/query", params={"gid": gid}, timeout=15
        )
        assert resp.status_code == 200, f"{gid}: {resp.status_code} {resp.text}"
        return gid, resp.json()

    try:
        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, enumerate(gids)))
    finally:
        for s in sessions:
            s.close()


@pytest.mark.timeout(100)
@pytest.mark.parametrize("driver", DRIVERS)
def test_three_servers_one_store_survive_a_kill(
    driver: str, private_dtm: Callable[..., DtmServer], busi: Endpoints, tmp_path: Path
) -> None:
    name = f"scale_out_{driver}"
    drop_store(driver, name, directory=tmp_path)  # a rerun starts clean
    store = store_config(driver, name, directory=tmp_path)
    servers = [private_dtm(Store=store) for _ in range(SERVERS)]
    victim, survivors = servers[VICTIM], [s for i, s in enumerate(servers) if i != VICTIM]
    program_business(busi)

    killed_at: list[float] = []

    def kill_victim() -> None:
        victim.kill()
        killed_at.append(time.monotonic())

    load, elapsed = submit_load(servers, busi, kill_victim)
    print(
        f"\n[{driver}] {len(load.acked)} sagas acknowledged in {elapsed:.2f}s "
        f"({len(load.acked) / elapsed:.0f}/s through {SERVERS} servers, one killed half-way); "
        f"{len(load.unknown)} submits without an answer"
    )
    assert not load.refused, f"live servers refused submits: {load.refused[:5]}"
    assert len(load.acked) >= 1000

    deadline = time.monotonic() + FINISH_WITHIN
    left = unfinished(survivors[0])
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = unfinished(survivors[0])
    print(f"[{driver}] all finished {time.monotonic() - killed_at[0]:.1f}s after the kill")
    assert not left, f"{len(left)} left unfinished, e.g. {left[:3]}"

    found = query_all(survivors, sorted(load.acked))
    calls: dict[tuple[str, str, str], list[Call]] = defaultdict(list)
    for call in busi.calls():
        q = call.query
        calls[(q.get("gid", ""), q.get("branch_id", ""), q.get("op", ""))].append(call)

    wrong: list[str] = []
    for gid, kind in load.acked.items():
        trans = found[gid]["transaction"]
        branches = {(b["branch_id"], b["op"]): b["status"] for b in found[gid]["branches"]}
        want = "failed" if kind in (FAIL_1, FAIL_2) else "succeed"
        status = trans["status"] if trans else None
        if status != want:
            wrong.append(f"{gid}: status {status}, wanted {want}")
            continue
        ran = ["01"] if kind == FAIL_1 else ["01", "02"]
        for bid in ran:
            if not calls[(gid, bid, "action")]:
                wrong.append(f"{gid}: action {bid} never called")
            for call in calls[(gid, bid, "action")]:
                if call.json() != {"gid": gid, "step": int(bid)}:
                    wrong.append(f"{gid}: action {bid} got the body {call.body!r}")
        if kind == FAIL_1 and calls[(gid, "02", "action")]:
            wrong.append(f"{gid}: action 02 called after action 01 failed")
        compensated = ran if want == "failed" else []
        for bid in ("01", "02"):
            n = len(calls[(gid, bid, "compensate")])
            if bid in compensated and n == 0:
                wrong.append(f"{gid}: compensate {bid} never called")
            if bid in compensated and branches.get((bid, "compensate")) != "succeed":
                wrong.append(f"{gid}: compensate {bid} is {branches.get((bid, 'compensate'))}")
            if want == "succeed" and n:
                wrong.append(f"{gid}: succeeded, yet compensate {bid} called {n} times")
            if want == "succeed" and branches.get((bid, "action")) != "succeed":
                wrong.append(f"{gid}: succeeded, action {bid} is {branches.get((bid, 'action'))}")
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:20])

    repeated = sum(
        1 for gid in load.acked for bid in ("01", "02") if len(calls[(gid, bid, "action")]) > 1
    )
    taken_over = {
        gid
        for (gid, _, _), made in calls.items()
        if load.acked_by.get(gid) == VICTIM and any(c.at > killed_at[0] for c in made)
    }
    print(
        f"[{driver}] {repeated} actions called more than once (retries and takeovers); "
        f"{len(taken_over)} sagas acknowledged by the killed server were carried on by the others"
    )

    for server in survivors:
        server.stop()
    drop_store(driver, name, directory=tmp_path)  # kept when the test failed, for a look
