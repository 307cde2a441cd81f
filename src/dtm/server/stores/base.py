"""The store contract every backend implements (SQLite now; MySQL, PostgreSQL, Redis later).

Rules every implementation keeps:

* Times (`create_time`, `next_cron_time`, ...) come from the store's own clock, never the
  caller's: callers pass *delays in seconds*, so instances with skewed clocks agree.
* Every method is one atomic round trip to the store. A write either happens whole or not
  at all, and a guarded write that finds its guard false writes nothing and returns False.
* Writes issued concurrently may share one commit (group commit), but a method returns only
  after its own write is durable: an acknowledged write survives a crash.
* Records returned are fresh objects the caller may keep or change.
* A store that cannot be reached raises `StoreUnavailable`; no other exception leaks out
  for that reason.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dtm.protocol.records import KV, TransBranch, TransGlobal

# One event loop keeps few more statements in flight than this; upstream's default of 500
# connections would exceed PostgreSQL's and MariaDB's default connection limits (100, 151)
# with two or three instances, and refused connections are outages, not waits.
MAX_POOL = 32


def pool_size(max_open_conns: int) -> int:
    """Connections a server store's pool may open: `MaxOpenConns`, at most MAX_POOL."""
    return max(1, min(max_open_conns, MAX_POOL))


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or failed to answer; nothing was acknowledged."""


@dataclass(frozen=True, slots=True)
class BranchUpdate:
    """New status of one branch operation, identified by (branch_id, op)."""

    branch_id: str
    op: str
    status: str


@dataclass(frozen=True, slots=True)
class Progress:
    """What one step of processing changes, written in one atomic, guarded write.

    Only the fields that are not None are written. Branch updates set `status`,
    `update_time` and, for a final status, `finish_time`. A new global `status` sets
    `update_time`, plus `finish_time` for succeed and `rollback_time` for failed.
    `next_cron_delay` sets `next_cron_time` to the store's now plus that many seconds.
    """

    branches: Sequence[BranchUpdate] = ()
    status: str | None = None
    rollback_reason: str | None = None
    result: str | None = None
    next_cron_interval: int | None = None
    next_cron_delay: float | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class ScanFilter:
    """Filters of the `all` listing; None means no filter on that column."""

    status: str | None = None
    trans_type: str | None = None
    create_time_start: datetime | None = None
    create_time_end: datetime | None = None


@dataclass(slots=True)
class Page:
    """A page of a listing and the position to ask for the next one ("" when none is left)."""

    items: list[TransGlobal] = field(default_factory=list)
    next_position: str = ""


class Store(abc.ABC):
    """Durable home of global transactions, their branch operations and KV pairs."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (a pool, for server stores). Raises StoreUnavailable when it cannot."""

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Create the schema where it is missing, never dropping or changing data; safe to
        run again and against a database upstream DTM was using. Call after `open`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Round trip to the store; raises StoreUnavailable when it does not answer."""

    # --- global transactions -------------------------------------------------------

    @abc.abstractmethod
    async def create(
        self, trans: TransGlobal, branches: Sequence[TransBranch], *, next_cron_delay: float
    ) -> bool:
        """Insert a new transaction with its branch operations, atomically.

        Sets `create_time` and `update_time` to now and `next_cron_time` to now plus
        `next_cron_delay`, on the stored rows and on the objects passed in (ids too).
        Returns False and writes nothing when a transaction with that gid exists.
        """

    @abc.abstractmethod
    async def find(self, gid: str) -> TransGlobal | None:
        """The transaction with this gid, or None."""

    @abc.abstractmethod
    async def load(self, gid: str) -> tuple[TransGlobal | None, list[TransBranch]]:
        """The transaction and its branch operations in insertion order, in one read."""

    @abc.abstractmethod
    async def add_branches(
        self, gid: str, branches: Sequence[TransBranch], *, expect_status: str
    ) -> bool:
        """Add branch operations to a transaction that is in `expect_status`.

        Returns False and writes nothing when no transaction with that gid is in that
        status. An operation whose (branch_id, op) exists already is left as it is, so a
        repeated registration is harmless.
        """

    @abc.abstractmethod
    async def save_progress(
        self, gid: str, progress: Progress, *, expect_status: str, owner: str | None = None
    ) -> bool:
        """Apply `progress` if the transaction is in `expect_status` (and, when `owner` is
        given, still owned by it). Returns False and writes nothing otherwise.

        The owner guard is what keeps a processor whose lease was taken over by another
        from writing anything more.
        """

    @abc.abstractmethod
    async def lock_due(self, *, owner: str, lease: float, limit: int) -> list[TransGlobal]:
        """Take up to `limit` unfinished transactions whose `next_cron_time` has passed.

        Each one taken gets `owner` and `next_cron_time` = now + `lease`, atomically, so
        two callers never take the same transaction while its lease runs.
        """

    @abc.abstractmethod
    async def reset_cron_time(self, *, after: float, limit: int) -> tuple[int, bool]:
        """Bring forward to now unfinished transactions due later than now + `after`.

        Returns how many were changed and whether more may remain (count == limit).
        """

    @abc.abstractmethod
    async def reset_next_cron_time(self, gid: str) -> bool:
        """Make one unfinished transaction due now; False if none such exists."""

    @abc.abstractmethod
    async def purge_finished(self, *, older_than: float, limit: int) -> int:
        """Delete up to `limit` finished (succeed or failed) transactions, with their
        branches, last updated more than `older_than` seconds ago; returns how many.
        Unfinished transactions are never removed, however old."""

    @abc.abstractmethod
    async def scan(self, *, position: str, limit: int, where: ScanFilter) -> Page:
        """Transactions newest first, `limit` at a time from `position` ("" = start)."""

    # --- key-value pairs (topics) --------------------------------------------------

    @abc.abstractmethod
    async def find_kv(self, cat: str, key: str) -> list[KV]:
        """Pairs of category `cat` ("" = any) and key `key` ("" = any)."""

    @abc.abstractmethod
    async def scan_kv(self, cat: str, *, position: str, limit: int) -> tuple[list[KV], str]:
        """Pairs of one category newest first, paged like `scan`."""

    @abc.abstractmethod
    async def create_kv(self, cat: str, key: str, value: str) -> bool:
        """Insert a pair with version 1; False and nothing written when it exists."""

    @abc.abstractmethod
    async def update_kv(self, cat: str, key: str, value: str, *, version: int) -> bool:
        """Set the value and bump the version if the stored version is `version`."""

    @abc.abstractmethod
    async def delete_kv(self, cat: str, key: str) -> bool:
        """Remove a pair; False when there was none."""
