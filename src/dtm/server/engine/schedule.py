"""When a transaction is looked at again: upstream's intervals, with a cap and jitter.

Upstream doubles the interval after every failed attempt, without bound and without
jitter; here the doubling stops at `MaxRetryInterval` and may be spread by `RetryJitter`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dtm.protocol.messages import TransOptions


@dataclass(frozen=True, slots=True)
class Schedule:
    """The retry policy of the server, from its configuration."""

    retry_interval: int
    max_retry_interval: int
    jitter: float
    request_timeout: float

    def base_interval(self, options: TransOptions) -> int:
        """Upstream's reset interval: the transaction's own, else a short timeout, else the
        server's."""
        if options.retry_interval > 0:
            return options.retry_interval
        if 0 < options.timeout_to_fail < self.retry_interval:
            return options.timeout_to_fail
        return self.retry_interval

    def backoff(self, current: int, options: TransOptions) -> int:
        """The interval after one more failed attempt."""
        base = self.base_interval(options)
        cap = max(self.max_retry_interval, base)
        return min(max(current, base) * 2, cap)

    def delay(self, interval: int) -> float:
        """Seconds until the next attempt for `interval`, jittered upwards only."""
        if self.jitter <= 0:
            return float(interval)
        return interval * (1 + random.random() * self.jitter)

    def request_timeout_of(self, options: TransOptions, branch_id: str = "") -> float:
        """Per-branch timeout, else the transaction's, else the server's."""
        per_branch = options.branch_request_timeouts.get(branch_id, 0) if branch_id else 0
        return float(per_branch or options.request_timeout or self.request_timeout)

    def lease(self, options: TransOptions) -> float:
        """How long a processor may hold a transaction before another may take it over:
        the retry interval, but never shorter than one branch call."""
        longest = max([self.request_timeout_of(options), *options.branch_request_timeouts.values()])
        return max(float(self.base_interval(options)), longest + 1.0)
