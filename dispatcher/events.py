"""Who is waiting for which job: long-polls, WebSocket and SSE streams.

Status changes are published here by the process that makes them, and wake
every waiter at once; nothing polls the database. Each subscriber has a
bounded queue: a consumer that falls behind is marked lagging and dropped,
never buffered without bound. At shutdown the hub is closed: every
subscription, present and future, ends at once, so no stream holds the
process open.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from dispatcher.store.records import Job

# Read when a subscription is made, so tests can shrink them. One job has a
# handful of events in its life; a tenant's dashboard must ride out a burst of
# submissions (three events each) while it reads, and still be bounded.
JOB_QUEUE_SIZE = 64
TENANT_QUEUE_SIZE = 10_000


class Subscription:
    """One reader's bounded queue of job events; only its owner calls `next`."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._events: deque[Job] = deque()
        self._ready = asyncio.Event()
        self._lagged = asyncio.Event()
        self._closed = asyncio.Event()
        self.lagging = False

    @property
    def closed(self) -> bool:
        """The hub has closed (shutdown): `next` answers None at once from now on."""
        return self._closed.is_set()

    def offer(self, job: Job) -> None:
        if self.closed:
            return
        if len(self._events) >= self._size:
            self.lagging = True
            self._lagged.set()
            return
        self._events.append(job)
        self._ready.set()

    def close(self) -> None:
        self._events.clear()
        self._closed.set()
        self._ready.set()

    async def next(self, within: float | None = None) -> Job | None:
        """The next event; None after `within` seconds without one, or once closed."""
        try:
            async with asyncio.timeout(within):
                while not self._events and not self.closed:
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            return None
        if self.closed:
            # Never return without yielding: a caller looping on `next` must
            # not starve the event loop, shutdown included.
            await asyncio.sleep(0)
            return None
        return self._events.popleft()

    async def lagged(self) -> None:
        """Return once an event has been dropped for this subscriber.

        A consumer stuck writing to a client that does not read never gets back
        to look at `lagging`; this lets another task notice and drop it.
        """
        await self._lagged.wait()

    async def wait_closed(self) -> None:
        """Return once the hub is closed; like `lagged`, for a consumer stuck writing."""
        await self._closed.wait()


class EventHub:
    def __init__(self) -> None:
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_tenant: dict[str | None, set[Subscription]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, job: Job) -> None:
        for subscription in tuple(self._by_job.get(job.id, ())):
            subscription.offer(job)
        for tenant in (job.tenant, None):
            for subscription in tuple(self._by_tenant.get(tenant, ())):
                subscription.offer(job)

    def close(self) -> None:
        """End every subscription now and every one made later (shutdown)."""
        self._closed = True
        for index in (self._by_job, self._by_tenant):
            for subscriptions in tuple(index.values()):
                for subscription in tuple(subscriptions):
                    subscription.close()

    @contextmanager
    def job(self, job_id: str) -> Iterator[Subscription]:
        """Events of one job; subscribe before reading its state, so none is missed."""
        with self._subscribe(self._by_job, job_id, JOB_QUEUE_SIZE) as subscription:
            yield subscription

    @contextmanager
    def tenant(self, tenant: str | None) -> Iterator[Subscription]:
        """Every job event of a tenant; None for all tenants."""
        with self._subscribe(self._by_tenant, tenant, TENANT_QUEUE_SIZE) as subscription:
            yield subscription

    @contextmanager
    def _subscribe(
        self,
        index: dict[str, set[Subscription]] | dict[str | None, set[Subscription]],
        key: str | None,
        size: int,
    ) -> Iterator[Subscription]:
        subscription = Subscription(size)
        if self._closed:
            subscription.close()
        index.setdefault(key, set()).add(subscription)  # type: ignore[arg-type]
        try:
            yield subscription
        finally:
            subscribers = index.get(key)  # type: ignore[arg-type]
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del index[key]  # type: ignore[arg-type]
