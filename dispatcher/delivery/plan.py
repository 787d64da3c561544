"""What a finished job sends: its event body, fixed once, and one delivery per target."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from dispatcher.ids import new_id, rfc3339
from dispatcher.store.records import Channel, Job, JobStatus, NewDelivery, Outcome


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
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Outcome(
        status=status,
        finished_at=at,
        result=result,
        error=error,
        event_body=encoded,
        deliveries=tuple(_targets(job, event_type)),
    )


def _targets(job: Job, event_type: str) -> list[NewDelivery]:
    deliveries = []
    if job.callback_url:
        deliveries.append(
            NewDelivery(new_id("msg"), Channel.WEBHOOK, job.callback_url, None, event_type)
        )
    return deliveries
