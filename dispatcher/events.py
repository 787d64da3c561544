"""Who is waiting for which job: long-polls now, WebSocket and SSE streams later.

Status changes are published here by the process that makes them, and wake
every waiter at once; nothing polls the database. Each subscriber has a
bounded queue: a consumer that falls behind is marked lagging and dropped,
never buffered without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from dispatcher.store.records import Job

QUEUE_SIZE = 64


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Job] = asyncio.Queue(QUEUE_SIZE)
        self.lagging = False
        self._lagged = asyncio.Event()

    def offer(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.lagging = True
            self._lagged.set()

    async def next(self, within: float | None = None) -> Job | None:
        try:
            async with asyncio.timeout(within):
                return await self.queue.get()
        except TimeoutError:
            return None

    async def lagged(self) -> None:
        """Return once an event has been dropped for this subscriber.

        A consumer stuck writing to a client that does not read never gets back
        to look at `lagging`; this lets another task notice and drop it.
        """
        await self._lagged.wait()


class EventHub:
    def __init__(self) -> None:
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_tenant: dict[str | None, set[Subscription]] = {}

    def publish(self, job: Job) -> None:
        for subscription in tuple(self._by_job.get(job.id, ())):
            subscription.offer(job)
        for tenant in (job.tenant, None):
            for subscription in tuple(self._by_tenant.get(tenant, ())):
                subscription.offer(job)

    @contextmanager
    def job(self, job_id: str) -> Iterator[Subscription]:
        """Events of one job; subscribe before reading its state, so none is missed."""
        with self._subscribe(self._by_job, job_id) as subscription:
            yield subscription

    @contextmanager
    def tenant(self, tenant: str | None) -> Iterator[Subscription]:
        """Every job event of a tenant; None for all tenants."""
        with self._subscribe(self._by_tenant, tenant) as subscription:
            yield subscription

    @staticmethod
    @contextmanager
    def _subscribe(
        index: dict[str, set[Subscription]] | dict[str | None, set[Subscription]],
        key: str | None,
    ) -> Iterator[Subscription]:
        subscription = Subscription()
        index.setdefault(key, set()).add(subscription)  # type: ignore[arg-type]
        try:
            yield subscription
        finally:
            subscribers = index.get(key)  # type: ignore[arg-type]
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del index[key]  # type: ignore[arg-type]
