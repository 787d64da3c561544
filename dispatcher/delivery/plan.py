"""What a finished job sends: its event body, fixed once, and one delivery per target."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from dispatcher.delivery.policy import AttemptResult
from dispatcher.ids import new_id, now, rfc3339
from dispatcher.store.endpoint_records import Endpoint
from dispatcher.store.records import (
    Channel,
    Delivery,
    DeliveryStatus,
    DueDelivery,
    Job,
    JobStatus,
    NewDelivery,
    Outcome,
)

CALLBACK_FAILED = "job.callback_failed"


def finished(
    job: Job,
    status: JobStatus,
    at: float,
    *,
    result: Any = None,
    error: dict[str, str] | None = None,
) -> Outcome:
    """The outcome of a job ending now, with the body every attempt and replay will send."""
    final = replace(job, status=status, result=result, error=error, finished_at=at, deliveries=())
    event_type = f"job.{status}"
    body = {
        "type": event_type,
        "timestamp": rfc3339(at),
        "data": final.public(with_deliveries=False),
    }
    encoded = _encode(body)
    return Outcome(
        status=status,
        finished_at=at,
        result=result,
        error=error,
        event_body=encoded,
        deliveries=tuple(_targets(job, event_type)),
    )


def handed_over(job: Job, new: NewDelivery, outcome: Outcome) -> DueDelivery:
    """A delivery just written for `job`, as a claim would have read it back."""
    at = outcome.finished_at
    delivery = Delivery(
        id=new.id,
        tenant=job.tenant,
        job_id=job.id,
        channel=new.channel,
        target=new.target,
        endpoint_id=new.endpoint_id,
        event_type=new.event_type,
        status=DeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=at,
        last_status_code=None,
        last_error=None,
        created_at=at,
    )
    return DueDelivery(delivery, new.body or outcome.event_body, job.deadline, job.notify)


def unrecordable(job: Job, exc: BaseException) -> Outcome:
    """A failure saying that the job's outcome could not be recorded, which always can be.

    What the job carries is made storable first (a lone surrogate becomes
    "?", NaN becomes null, a deadline no calendar can show is dropped), so
    that this outcome and its event body encode whatever reached the job.
    """
    safe = replace(
        job,
        payload=storable(job.payload),
        metadata=storable(job.metadata),
        notify=storable(job.notify),
        deadline=job.deadline if _representable(job.deadline) else None,
    )
    error = {
        "type": "internal",
        "message": f"the outcome could not be recorded: {type(exc).__name__}",
    }
    return finished(safe, JobStatus.FAILED, now(), error=error)


def storable(value: Any) -> Any:
    """`value` with everything JSON text or UTF-8 cannot carry replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if value is None or isinstance(value, bool | int):
        return value
    return storable(str(value))


def _representable(moment: float | None) -> bool:
    try:
        rfc3339(moment)
    except (ValueError, OverflowError, OSError):
        return False
    return True


def _targets(job: Job, event_type: str) -> list[NewDelivery]:
    deliveries = []
    if job.callback_url or job.endpoint_id:
        # An endpoint's URL is filled in by `to_endpoint`, as the job ends.
        target = job.callback_url or ""
        deliveries.append(
            NewDelivery(new_id("msg"), Channel.WEBHOOK, target, job.endpoint_id, event_type)
        )
    return deliveries + _notices(job.notify, event_type)


def to_endpoint(outcome: Outcome, endpoint: Endpoint | None) -> Outcome:
    """The outcome with its webhook pointed at the job's endpoint, or dropped when the
    endpoint does not take this event type. A deleted endpoint keeps it: the
    delivery then fails saying so, where the job's owner and the admin see it."""
    deliveries = []
    for new in outcome.deliveries:
        if new.channel is Channel.WEBHOOK and new.endpoint_id is not None:
            if endpoint is None or not endpoint.wants(new.event_type):
                continue
            new = replace(new, target=endpoint.url)
        deliveries.append(new)
    return replace(outcome, deliveries=tuple(deliveries))


def _notices(notify: dict[str, Any] | None, event_type: str, body: bytes | None = None):
    """One email and/or one SMS to the job's owner, as the job asked."""
    notices = []
    for channel in (Channel.EMAIL, Channel.SMS):
        target = (notify or {}).get(str(channel))
        if target:
            notices.append(NewDelivery(new_id("msg"), channel, target, None, event_type, body))
    return notices


def callback_failed(due: DueDelivery, result: AttemptResult) -> tuple[NewDelivery, ...]:
    """Tell the job's owner that its webhook failed for good, if the job asked to be told."""
    notify = due.notify or {}
    if due.delivery.channel is not Channel.WEBHOOK or not notify.get("on_callback_failure"):
        return ()
    event = json.loads(due.body)
    body = {
        "type": CALLBACK_FAILED,
        "timestamp": event["timestamp"],
        "data": event["data"],
        "callback": {
            "url": due.delivery.target,
            "delivery_id": due.delivery.id,
            "status_code": result.status_code,
            "error": result.error,
        },
    }
    return tuple(_notices(notify, CALLBACK_FAILED, _encode(body)))


def _encode(body: dict[str, Any]) -> bytes:
    # allow_nan=False and a strict encode: a result that is not JSON, or not
    # UTF-8 (NaN, a lone surrogate), raises here and fails the job, never the
    # webhook that would carry it.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
