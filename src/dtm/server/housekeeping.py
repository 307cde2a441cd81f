"""Removes finished transactions once `Store.FinishedDataExpire` seconds have passed.

Upstream only expires data on Redis, so its SQL tables grow without end; here every store
purges, in small batches so that no single delete holds locks for long. Unfinished
transactions are never removed.
"""

from __future__ import annotations

import asyncio
import logging

from dtm.server.stores.base import Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 500


class Housekeeper:
    """A background task that purges finished transactions every `interval` seconds."""

    def __init__(self, store: Store, *, retention: float, interval: float) -> None:
        self.store = store
        self.retention = retention
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.retention > 0:
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def purge(self) -> int:
        """Purge everything due now, batch by batch; returns how many were removed."""
        removed = 0
        while True:
            count = await self.store.purge_finished(older_than=self.retention, limit=BATCH)
            removed += count
            if count < BATCH:
                return removed

    async def _loop(self) -> None:
        while True:
            try:
                removed = await self.purge()
                if removed:
                    log.info("purged %d finished transactions", removed)
            except StoreUnavailable as exc:
                log.error("purge skipped, store unavailable: %s", exc)
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(self.interval)
