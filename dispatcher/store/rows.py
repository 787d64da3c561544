"""What both dialects share to turn rows into pages and values into columns."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from dispatcher.store.endpoint_records import CHANGEABLE, EndpointChanges, NewEndpoint
from dispatcher.store.records import DeliverySummary, Job, NewJob, Page


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def page_of(items: Sequence[Any], limit: int, cursor_of: Callable[[Any], str]) -> Page:
    """The first `limit` items, and a cursor to the rest if one more was read."""
    items = list(items)
    if len(items) > limit:
        items = items[:limit]
        return Page(items, cursor_of(items[-1]))
    return Page(items, None)


def cursor_of_key(row: Any) -> str:
    """Where a listing of keys goes on: after this key, made then, newest first."""
    return f"{row['created_at']!r}/{row['prefix']}"


_KEY_CURSOR = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,20})?)/([A-Za-z0-9_-]{1,64})", re.ASCII)


def valid_key_cursor(value: str) -> bool:
    return _KEY_CURSOR.fullmatch(value) is not None


def key_cursor(before: str | None) -> tuple[float | None, str | None]:
    """The key a cursor from `cursor_of_key` names (made when, and its prefix)."""
    found = None if before is None else _KEY_CURSOR.fullmatch(before)
    if found is None:
        return None, None
    return float(found[1]), found[2]


def dump_event_types(event_types: tuple[str, ...] | list[str] | None) -> str | None:
    """An endpoint's event filter as stored: a JSON list, or NULL for every type."""
    return None if event_types is None else json.dumps(list(event_types))


def changed_columns(changes: EndpointChanges, now: float) -> dict[str, Any]:
    """An endpoint's changed fields as its columns store them, with when.

    Column names come from the fixed list CHANGEABLE only, never from the request.
    """
    values = {c: _column(c, changes.values[c]) for c in CHANGEABLE if c in changes.values}
    if changes.host is not None:
        values["host"] = changes.host
    values["updated_at"] = now
    return values


def _column(column: str, value: Any) -> Any:
    if column == "headers":
        return json.dumps(value or {})
    if column == "event_types":
        return dump_event_types(value)
    return value


def job_columns(job: NewJob, lease_owner: str | None, lease: float | None) -> tuple[Any, ...]:
    """A new job's columns in the order both dialects' inserts take them; `lease` is
    its lease as the dialect writes it (an end, or a length for the database's clock)."""
    return (
        job.id,
        job.tenant,
        job.type,
        dump_json(job.payload) or "null",
        job.callback_url,
        job.endpoint_id,
        dump_json(job.notify),
        dump_json(job.metadata),
        job.deadline,
        job.created_at,
        job.created_at,
        job.idempotency_key,
        job.request_hash,
        lease_owner,
        lease,
    )


def endpoint_columns(new: NewEndpoint) -> tuple[Any, ...]:
    """A new endpoint's columns in the order both dialects' inserts take them."""
    return (
        new.id,
        new.tenant,
        new.url,
        new.host,
        new.description,
        json.dumps(new.headers),
        dump_event_types(new.event_types),
        str(new.signature),
        new.secret,
        new.rate_limit,
        new.max_in_flight,
        new.created_at,
    )


def summary_of(row: Any) -> DeliverySummary:
    """A delivery row as a job lists it."""
    return DeliverySummary(
        row["id"], row["channel"], row["target"], row["status"], row["attempt_count"]
    )


def with_deliveries(jobs: list[Job], rows: Sequence[Any]) -> list[Job]:
    """The jobs, each with the summaries of its rows among `rows` (deliveries, by id)."""
    by_job: dict[str, list[DeliverySummary]] = {}
    for row in rows:
        by_job.setdefault(row["job_id"], []).append(summary_of(row))
    return [replace(job, deliveries=tuple(by_job.get(job.id, ()))) for job in jobs]
