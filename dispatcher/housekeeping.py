"""Periodic upkeep: renew leases, cancel jobs past their deadline, purge old jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dispatcher.delivery.deliverer import Deliverer
from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.worker import WorkerPool

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0
DEADLINE_SWEEP_EVERY = 1.0


class Housekeeping:
    def __init__(
        self,
        store: Store,
        pool: WorkerPool,
        deliverer: Deliverer,
        *,
        owner: str,
        lease: float,
        retention_days: float,
    ) -> None:
        self._store = store
        self._pool = pool
        self._deliverer = deliverer
        self._owner = owner
        self._lease = lease
        self._retention = retention_days * 86_400
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        # Renewing at a third of the lease leaves two chances before it lapses.
        self._every(self._lease / 3, self._renew, "leases")
        self._every(DEADLINE_SWEEP_EVERY, self._pool.cancel_expired, "deadlines")
        # Often enough that an expired job answers 404 soon after it expires.
        self._every(min(PURGE_EVERY, max(1.0, self._retention / 100)), self.purge, "purge")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _every(self, seconds: float, work: Callable[[], Awaitable[object]], name: str) -> None:
        async def loop() -> None:
            while True:
                try:
                    await work()
                except Exception:
                    log.exception("housekeeping.failed", extra={"action": f"housekeeping.{name}"})
                await asyncio.sleep(seconds)

        self._tasks.append(asyncio.create_task(loop(), name=f"housekeeping:{name}"))

    async def _renew(self) -> None:
        await self._store.renew_leases(
            self._owner, self._pool.in_hand, self._deliverer.in_hand, self._lease
        )

    async def purge(self) -> int:
        total = 0
        while True:
            deleted = await self._store.purge(now() - self._retention)
            total += deleted
            if deleted == 0:
                break
        if total:
            log.info("housekeeping.purged", extra={"action": "housekeeping.purged", "jobs": total})
        return total
