"""Back-off: upstream's doubling, capped, optionally jittered; per-branch timeouts."""

from __future__ import annotations

from dtm.protocol.messages import TransOptions
from dtm.server.engine.schedule import Schedule

SCHEDULE = Schedule(retry_interval=10, max_retry_interval=60, jitter=0.0, request_timeout=3)


def test_base_interval_like_upstream() -> None:
    assert SCHEDULE.base_interval(TransOptions()) == 10
    assert SCHEDULE.base_interval(TransOptions(retry_interval=2)) == 2
    assert SCHEDULE.base_interval(TransOptions(timeout_to_fail=4)) == 4
    assert SCHEDULE.base_interval(TransOptions(timeout_to_fail=40)) == 10


def test_backoff_doubles_up_to_the_cap() -> None:
    intervals = [10]
    for _ in range(5):
        intervals.append(SCHEDULE.backoff(intervals[-1], TransOptions()))
    assert intervals == [10, 20, 40, 60, 60, 60]


def test_jitter_spreads_upwards_within_its_fraction() -> None:
    jittered = Schedule(retry_interval=10, max_retry_interval=60, jitter=0.5, request_timeout=3)
    delays = {jittered.delay(20) for _ in range(50)}
    assert all(20 <= d <= 30 for d in delays)
    assert len(delays) > 1
    assert SCHEDULE.delay(20) == 20


def test_request_timeout_per_branch_then_transaction_then_server() -> None:
    options = TransOptions(request_timeout=5, branch_request_timeouts={"02": 30})
    assert SCHEDULE.request_timeout_of(options, "02") == 30
    assert SCHEDULE.request_timeout_of(options, "01") == 5
    assert SCHEDULE.request_timeout_of(TransOptions(), "01") == 3


def test_lease_covers_the_longest_branch_call() -> None:
    assert SCHEDULE.lease(TransOptions()) == 10
    assert SCHEDULE.lease(TransOptions(retry_interval=1)) == 4
    assert SCHEDULE.lease(TransOptions(branch_request_timeouts={"01": 30})) == 31
