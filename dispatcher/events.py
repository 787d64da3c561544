"""Who is waiting for which job: long-polls, WebSocket and SSE streams.

Status changes are published here by the process that makes them, and wake
every waiter at once; nothing polls the database. Each subscriber has a
bounded queue, in events and in bytes: a consumer that falls behind is ended
(its queue let go at once), never buffered without bound. A subscription
also ends when the key that opened it is revoked, and at shutdown, when the
hub is closed: every subscription, present and future, ends at once, so no
stream holds the process open.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from dispatcher.store.records import Job

# Read when a subscription is made, so tests can shrink them. One job has a
# handful of events in its life; a tenant's dashboard must ride out a burst of
# submissions (three events each) while it reads, and still be bounded.
JOB_QUEUE_SIZE = 64
TENANT_QUEUE_SIZE = 10_000
# Unsent bytes (queued, or being written to the client) past which a
# subscriber is ended. One event is always taken, whatever its size.
QUEUE_BYTES = 8 * 1024 * 1024

K = TypeVar("K")


class Ending(StrEnum):
    """Why a subscription ended before its reader was done."""

    LAGGING = "lagging"
    REVOKED = "revoked"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class Event:
    """A job's state, with its JSON made once for every subscriber that sends it."""

    job: Job
    data: str

    @classmethod
    def of(cls, job: Job) -> Event:
        return cls(job, json.dumps(job.public()))

    @property
    def size(self) -> int:
        return len(self.data)  # ASCII: json.dumps escapes everything else


class Subscription:
    """One reader's bounded queue of job events; only its owner calls `next`."""

    def __init__(self, size: int, max_bytes: int, key: str | None) -> None:
        self.key = key
        self._size = size
        self._max_bytes = max_bytes
        self._events: deque[Event] = deque()
        self._queued_bytes = 0
        self._writing_bytes = 0
        self._ready = asyncio.Event()
        self._ended = asyncio.Event()
        self.ending: Ending | None = None

    @property
    def closed(self) -> bool:
        """Ended (lagging, revoked, shutdown): `next` answers None at once from now on."""
        return self.ending is not None

    def offer(self, event: Event) -> None:
        if self.closed:
            return
        unsent = self._queued_bytes + self._writing_bytes
        if len(self._events) >= self._size or (unsent and unsent + event.size > self._max_bytes):
            self.end(Ending.LAGGING)
            return
        self._events.append(event)
        self._queued_bytes += event.size
        self._ready.set()

    def end(self, why: Ending) -> None:
        """End now, letting go of every queued event; the first reason given stands."""
        if self.ending is None:
            self.ending = why
        self._events.clear()
        self._queued_bytes = 0
        self._ended.set()
        self._ready.set()

    async def next(self, within: float | None = None) -> Event | None:
        """The next event; None after `within` seconds without one, or once ended."""
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
        event = self._events.popleft()
        self._queued_bytes -= event.size
        return event

    @contextmanager
    def writing(self, event: Event) -> Iterator[None]:
        """Count `event` as unsent while it is written to a client that may not read."""
        self._writing_bytes += event.size
        try:
            yield
        finally:
            self._writing_bytes -= event.size

    async def wait_ended(self) -> None:
        """Return once the subscription has ended.

        A consumer stuck writing to a client that does not read never gets back
        to look at `ending`; this lets another task notice and drop it.
        """
        await self._ended.wait()


class EventHub:
    def __init__(self) -> None:
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_tenant: dict[str | None, set[Subscription]] = {}
        self._by_key: dict[str, set[Subscription]] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def counts(self) -> dict[str, int]:
        """Open subscriptions: to one job (WebSocket, SSE, long-poll), and to a tenant's."""
        return {
            "job": sum(len(s) for s in self._by_job.values()),
            "tenant": sum(len(s) for s in self._by_tenant.values()),
        }

    def wants(self, job_id: str, tenant: str | None) -> bool:
        """Whether anyone here waits for this job's events (to read it only then)."""
        return job_id in self._by_job or tenant in self._by_tenant or None in self._by_tenant

    def subscribed_keys(self) -> list[str]:
        """The keys (prefixes) that opened the subscriptions open now."""
        return list(self._by_key)

    def watched_jobs(self) -> list[str]:
        """The jobs someone here waits for (a long-poll, a job's stream)."""
        return list(self._by_job)

    def publish(self, job: Job) -> None:
        subscribers = [*self._by_job.get(job.id, ())]
        for tenant in (job.tenant, None):
            subscribers.extend(self._by_tenant.get(tenant, ()))
        if not subscribers:
            return
        event = Event.of(job)
        for subscription in subscribers:
            subscription.offer(event)

    def close(self) -> None:
        """End every subscription now and every one made later (shutdown)."""
        self._closed = True
        for index in (self._by_job, self._by_tenant):
            for subscriptions in tuple(index.values()):
                for subscription in tuple(subscriptions):
                    subscription.end(Ending.SHUTDOWN)

    def revoke(self, key: str) -> None:
        """End every subscription opened with the key `key` (its prefix)."""
        for subscription in tuple(self._by_key.get(key, ())):
            subscription.end(Ending.REVOKED)

    @contextmanager
    def job(self, job_id: str, key: str | None = None) -> Iterator[Subscription]:
        """Events of one job; subscribe before reading its state, so none is missed."""
        with self._subscribe(self._by_job, job_id, JOB_QUEUE_SIZE, key) as subscription:
            yield subscription

    @contextmanager
    def tenant(self, tenant: str | None, key: str | None = None) -> Iterator[Subscription]:
        """Every job event of a tenant; None for all tenants."""
        with self._subscribe(self._by_tenant, tenant, TENANT_QUEUE_SIZE, key) as subscription:
            yield subscription

    @contextmanager
    def _subscribe(
        self, index: dict[Any, set[Subscription]], name: str | None, size: int, key: str | None
    ) -> Iterator[Subscription]:
        subscription = Subscription(size, QUEUE_BYTES, key)
        if self._closed:
            subscription.end(Ending.SHUTDOWN)
        _add(index, name, subscription)
        if key is not None:
            _add(self._by_key, key, subscription)
        try:
            yield subscription
        finally:
            _discard(index, name, subscription)
            if key is not None:
                _discard(self._by_key, key, subscription)


def _add(index: dict[K, set[Subscription]], name: K, subscription: Subscription) -> None:
    index.setdefault(name, set()).add(subscription)


def _discard(index: dict[K, set[Subscription]], name: K, subscription: Subscription) -> None:
    subscribers = index.get(name)
    if subscribers is not None:
        subscribers.discard(subscription)
        if not subscribers:
            del index[name]
