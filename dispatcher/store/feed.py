"""The change feed: what one instance changed, told to every instance sharing its store.

Whoever makes a change publishes it here; whoever keeps something that the
change makes stale (the event hub's waiters, a pool asleep until work is
due, a cache of keys, endpoints or secrets) listens. The publisher's own
process hears at once, in the same call; other instances hear through the
store's dialect: nothing more for SQLite (one process owns the file), LISTEN
and NOTIFY for PostgreSQL.

A change is small and names its subject, never carries it to another
instance: a listener that cares reads the subject from the store. A change
that is lost (the connection that listens broke) is caught up by polling, so
the feed speeds things up and never decides anything.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dispatcher.store.records import Job

log = logging.getLogger(__name__)


class ChangeKind(StrEnum):
    # A job's state changed; subject: the job's id.
    JOB = "job"
    # Queued jobs were made that this instance did not start; subject: their tenant.
    JOBS_DUE = "jobs"
    # Pending deliveries were made or replayed that no slot took; subject: their tenant, or "".
    DELIVERIES_DUE = "deliveries"
    # An API key was revoked; subject: its prefix.
    KEY_REVOKED = "key"
    # An endpoint was changed, through the API or by what its attempts taught; subject: its id.
    ENDPOINT = "endpoint"
    # A tenant's signing secrets were rotated; subject: the tenant.
    TENANT_SECRETS = "secrets"
    # Changes may have been missed (the feed reconnected): everything may be stale.
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    subject: str = ""
    tenant: str | None = None
    # In the publishing process only: the job as it is now, so that the
    # process that changed it need not read it back.
    job: Job | None = None
    # Heard from another instance (its listeners read what changed), not made here.
    remote: bool = False

    @classmethod
    def of_job(cls, job: Job) -> Change:
        return cls(ChangeKind.JOB, job.id, job.tenant, job)


Listener = Callable[[Change], None]


class ChangeFeed(ABC):
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every change, this process's and every other instance's.

        It is called on the event loop and must not block; work it sets off
        (reading the store) is its own to schedule.
        """
        self._listeners.append(listener)

    def publish(self, change: Change) -> None:
        """Tell this process now and every other instance as soon as it can."""
        self.hear(change)
        self._send(change)

    def hear(self, change: Change) -> None:
        """Hand a change to every listener; one that fails does not stop the others."""
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("feed.listener_failed", extra={"action": "feed.listener_failed"})

    @abstractmethod
    def _send(self, change: Change) -> None:
        """Tell the other instances, without waiting."""

    @abstractmethod
    async def start(self) -> None:
        """Begin hearing other instances (the store is open)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop hearing them and let go of what was used for it (before the store closes)."""


class LocalFeed(ChangeFeed):
    """One process owns the store: there is no one else to tell."""

    def _send(self, change: Change) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
