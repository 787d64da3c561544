"""What each change heard on the feed makes stale, and who is told.

The feed (store/feed.py) carries changes from every instance; this routes
them: a job's new state to the event hub's waiters, work made to the pool
or the deliverer asleep until it is due, a revoked key to the caches and
streams that hold it, a changed endpoint or secret to the caches of it.

A change heard from another instance names its subject; the subject is read
from the store here, one at a time on a task of its own, and only when
someone here waits for it. What waits to be read is bounded: past the bound
a change is dropped, and its waiters see the state at their next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dispatcher.auth import Authenticator
from dispatcher.claiming import ClaimLoop
from dispatcher.delivery.endpoints import EndpointBook
from dispatcher.delivery.secrets import TenantSecrets
from dispatcher.events import EventHub
from dispatcher.store.base import Store
from dispatcher.store.feed import Change, ChangeKind

log = logging.getLogger(__name__)

# Subjects waiting to be read from the store, at most.
MAX_UNREAD = 10_000
# Seconds between looks at whether the keys of open streams still exist: a
# revocation whose change was lost (the feed was down) still ends its streams.
KEY_CHECK_EVERY = 30.0


class ChangeRouter:
    def __init__(
        self,
        store: Store,
        hub: EventHub,
        pool: ClaimLoop[object],
        deliverer: ClaimLoop[object],
        auth: Authenticator,
        endpoints: EndpointBook,
        secrets: TenantSecrets,
    ) -> None:
        self._store = store
        self._hub = hub
        self._pool = pool
        self._deliverer = deliverer
        self._auth = auth
        self._endpoints = endpoints
        self._secrets = secrets
        # Subjects to read, in the order heard; a repeat is read once.
        self._unread: dict[tuple[ChangeKind, str], None] = {}
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handlers: dict[ChangeKind, Callable[[Change], None]] = {
            ChangeKind.JOB: self._job,
            ChangeKind.JOBS_DUE: lambda c: self._pool.wake(c.subject or None),
            ChangeKind.DELIVERIES_DUE: lambda c: self._deliverer.wake(c.subject or None),
            ChangeKind.KEY_REVOKED: self._key_revoked,
            ChangeKind.ENDPOINT: self._endpoint,
            ChangeKind.TENANT_SECRETS: lambda c: self._secrets.forget(c.subject),
            ChangeKind.RESYNC: self._resync,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._read_loop(), name="feed-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def __call__(self, change: Change) -> None:
        # Every job event passes here (three a job): one lookup, made once.
        self._handlers[change.kind](change)

    def _job(self, change: Change) -> None:
        if change.job is not None:
            self._hub.publish(change.job)
        elif self._hub.wants(change.subject, change.tenant):
            self._read_later(change.kind, change.subject)

    def _key_revoked(self, change: Change) -> None:
        self._auth.forget(change.subject)
        self._hub.revoke(change.subject)

    def _endpoint(self, change: Change) -> None:
        # A change made here reached this process's caches as it was made.
        if change.remote:
            self._read_later(change.kind, change.subject)

    def _resync(self, _: Change) -> None:
        self._pool.wake()
        self._deliverer.wake()
        # A job that ended elsewhere meanwhile: its waiters here hear of it now,
        # not when their wait runs out; a key revoked meanwhile ends its streams.
        for job_id in self._hub.watched_jobs():
            self._read_later(ChangeKind.JOB, job_id)
        self._check_keys()

    def _check_keys(self) -> None:
        for prefix in self._hub.subscribed_keys():
            self._read_later(ChangeKind.KEY_REVOKED, prefix)

    def _read_later(self, kind: ChangeKind, subject: str) -> None:
        if len(self._unread) < MAX_UNREAD:
            self._unread[kind, subject] = None
            self._more.set()

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        # A fixed pace, however busy the feed: every change heard must not put it off.
        check_at = loop.time() + KEY_CHECK_EVERY
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(check_at):
                    await self._more.wait()
            if loop.time() >= check_at:
                self._check_keys()
                check_at = loop.time() + KEY_CHECK_EVERY
            self._more.clear()
            while self._unread:
                kind, subject = next(iter(self._unread))
                del self._unread[kind, subject]
                try:
                    await self._read(kind, subject)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database is away: the waiters look again on their own.
                    with contextlib.suppress(Exception):
                        log.warning("feed.read_failed", extra={"action": "feed.read_failed"})

    async def _read(self, kind: ChangeKind, subject: str) -> None:
        if kind is ChangeKind.JOB:
            job = await self._store.get_job(subject, None)
            if job is not None:
                self._hub.publish(job)
        elif kind is ChangeKind.ENDPOINT:
            await self._endpoints.reload(subject)
        elif kind is ChangeKind.KEY_REVOKED and await self._auth.revoked(subject):
            self._key_revoked(Change(kind, subject))
