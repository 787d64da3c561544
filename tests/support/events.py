"""Event bodies and claimed deliveries, built the way the worker and the store build them."""

from __future__ import annotations

import json
from typing import Any

from dispatcher.delivery.plan import finished
from dispatcher.ids import new_id
from dispatcher.store.records import Channel, Delivery, DeliveryStatus, DueDelivery, Job, JobStatus


def job_event(
    status: JobStatus = JobStatus.SUCCEEDED,
    *,
    type: str = "thumbnail",
    result: Any = None,
    error: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    """A job id and the event body the worker fixes when that job finishes."""
    job = Job(
        id=new_id("job"),
        tenant="acme",
        type=type,
        status=JobStatus.RUNNING,
        payload={"size": 64},
        result=None,
        error=None,
        callback_url="https://hooks.example.com/in",
        endpoint_id=None,
        notify=None,
        metadata=None,
        deadline=None,
        created_at=1_800_000_000.0,
        started_at=1_800_000_001.0,
        finished_at=None,
    )
    outcome = finished(job, status, 1_800_000_002.0, result=result, error=error)
    return job.id, outcome.event_body


def due_delivery(
    body: bytes, channel: Channel, target: str, delivery_id: str | None = None
) -> DueDelivery:
    """A claimed delivery of `body` to `target`, as the deliverer hands it to a sender."""
    event = json.loads(body)
    delivery = Delivery(
        id=delivery_id or new_id("msg"),
        tenant="acme",
        job_id=event["data"]["id"],
        channel=channel,
        target=target,
        endpoint_id=None,
        event_type=event["type"],
        status=DeliveryStatus.PENDING,
        attempt_count=0,
        next_attempt_at=None,
        last_status_code=None,
        last_error=None,
        created_at=1_800_000_002.0,
    )
    return DueDelivery(delivery, body, None)
