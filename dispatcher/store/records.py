"""What the store hands out: frozen records, and the status values stored as strings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from yarl import URL

from dispatcher.ids import rfc3339

if TYPE_CHECKING:
    from dispatcher.store.endpoint_records import EndpointHealth


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SMS = "sms"


class Trigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


def delivery_host(channel: Channel, target: str) -> str:
    """Where a delivery goes, for sharing out attempts: a webhook's host:port, else the channel.

    Email and SMS go through the operator's one relay or gateway, so each
    channel is one host.
    """
    if channel is not Channel.WEBHOOK:
        return str(channel)
    try:
        # yarl, as aiohttp reads the URL when it sends, so both agree on the host.
        url = URL(target)
        return f"{(url.host or '').lower()}:{url.port}"
    except (ValueError, TypeError):
        return target


def _load(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    id: str
    channel: str
    target: str
    status: str
    attempt_count: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "target": self.target,
            "status": self.status,
            "attempt_count": self.attempt_count,
        }


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    tenant: str
    type: str
    status: JobStatus
    payload: Any
    result: Any
    error: dict[str, str] | None
    callback_url: str | None
    endpoint_id: str | None
    notify: dict[str, Any] | None
    metadata: dict[str, Any] | None
    deadline: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    retries: int = 0
    # Times it was taken up again after its lease lapsed.
    lapses: int = 0
    deliveries: tuple[DeliverySummary, ...] = ()

    @classmethod
    def from_row(cls, row: Any, deliveries: tuple[DeliverySummary, ...] = ()) -> Job:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            type=row["type"],
            status=JobStatus(row["status"]),
            payload=_load(row["payload"]),
            result=_load(row["result"]),
            error=_load(row["error"]),
            callback_url=row["callback_url"],
            endpoint_id=row["endpoint_id"],
            notify=_load(row["notify"]),
            metadata=_load(row["metadata"]),
            deadline=row["deadline"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            retries=row["retries"],
            lapses=row["lapses"],
            deliveries=deliveries,
        )

    def public(self, *, with_deliveries: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "status": str(self.status),
            "payload": self.payload,
            "result": self.result,
            "error": self.error,
            "callback_url": self.callback_url,
            "endpoint_id": self.endpoint_id,
            "notify": self.notify,
            "metadata": self.metadata,
            "deadline": rfc3339(self.deadline),
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
        }
        if with_deliveries:
            body["deliveries"] = [d.public() for d in self.deliveries]
        return body


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_at: float
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    trigger: Trigger
    by: str | None

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(
            number=row["number"],
            started_at=row["started_at"],
            duration_ms=row["duration_ms"],
            status_code=row["status_code"],
            error=row["error"],
            response_body=row["response_body"],
            trigger=Trigger(row["trigger"]),
            by=row["by"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": rfc3339(self.started_at),
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "error": self.error,
            "response_body": self.response_body,
            "trigger": str(self.trigger),
            "by": self.by,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant: str
    job_id: str
    channel: Channel
    target: str
    endpoint_id: str | None
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: float | None
    last_status_code: int | None
    last_error: str | None
    created_at: float
    # Attempts made before the last replay: a replay restarts the retry
    # schedule without restarting the attempt numbering.
    schedule_start: int = 0
    trigger: Trigger = Trigger.SCHEDULED
    triggered_by: str | None = None
    # Times it was taken up again after its lease lapsed mid-attempt.
    lapses: int = 0
    attempts: tuple[Attempt, ...] | None = None

    @classmethod
    def from_row(cls, row: Any, attempts: tuple[Attempt, ...] | None = None) -> Delivery:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            job_id=row["job_id"],
            channel=Channel(row["channel"]),
            target=row["target"],
            endpoint_id=row["endpoint_id"],
            event_type=row["event_type"],
            status=DeliveryStatus(row["status"]),
            attempt_count=row["attempt_count"],
            next_attempt_at=row["next_attempt_at"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            schedule_start=row["schedule_start"],
            trigger=Trigger(row["trigger"]),
            triggered_by=row["triggered_by"],
            lapses=row["lapses"],
            attempts=attempts,
        )

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "job_id": self.job_id,
            "channel": str(self.channel),
            "target": self.target,
            "endpoint_id": self.endpoint_id,
            "event_type": self.event_type,
            "status": str(self.status),
            "attempt_count": self.attempt_count,
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "last_status_code": self.last_status_code,
            "last_error": self.last_error,
            "created_at": rfc3339(self.created_at),
        }
        if self.attempts is not None:
            body["attempts"] = [a.public() for a in self.attempts]
        return body


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with what sending it needs: the fixed body and the job's deadline."""

    delivery: Delivery
    body: bytes
    deadline: float | None
    # The job's notify settings: who to tell if this webhook fails for good.
    notify: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    prefix: str
    key_hash: str
    tenant: str
    admin: bool
    created_at: float
    last_used_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(
            prefix=row["prefix"],
            key_hash=row["key_hash"],
            tenant=row["tenant"],
            admin=bool(row["admin"]),
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "tenant": self.tenant,
            "admin": self.admin,
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class Lease:
    """Work written already taken: by which process, for how many seconds from the write.

    A length, not a time: the store writes its end by its own clock (the
    database's, which every instance on it shares), not the caller's.
    """

    owner: str
    seconds: float


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    tenant: str
    type: str
    payload: Any
    callback_url: str | None
    endpoint_id: str | None
    notify: dict[str, Any] | None
    metadata: dict[str, Any] | None
    deadline: float | None
    created_at: float
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    channel: Channel
    target: str
    endpoint_id: str | None
    event_type: str
    # None: send the job's event body.
    body: bytes | None = None

    @property
    def host(self) -> str:
        return delivery_host(self.channel, self.target)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended: what the worker writes back in one transaction."""

    status: JobStatus
    finished_at: float
    result: Any = None
    error: dict[str, str] | None = None
    event_body: bytes = b""
    deliveries: tuple[NewDelivery, ...] = ()


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt and the delivery state it leaves: written together."""

    delivery_id: str
    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at: float | None
    # Deliveries this outcome sets off (telling the owner a callback failed for good).
    follow_ups: tuple[NewDelivery, ...] = ()
    # What it taught of the delivery's endpoint, when that changed.
    endpoint_id: str | None = None
    health: EndpointHealth | None = None
    # Who made it. Should another instance hold the delivery now (this one's
    # lease lapsed and it was taken), the attempt is recorded but the state is
    # left to the holder. None: whoever holds it.
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any] = field(default_factory=list)
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class JobFilter:
    tenant: str | None
    status: JobStatus | None = None
    type: str | None = None
    limit: int = 50
    before: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    tenant: str | None
    status: DeliveryStatus | None = None
    job_id: str | None = None
    endpoint_id: str | None = None
    channel: Channel | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    before: str | None = None
