"""How the command line shows what the server answers: tables, descriptions, counts.

Everything shown may come from a tenant or a receiver (a target, an error, a
response body): each cell is made printable on one line first, so that no
escape sequence reaches the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Columns = Sequence[tuple[str, str]]

DELIVERY_COLUMNS: Columns = (
    ("id", "ID"),
    ("status", "STATUS"),
    ("channel", "CHANNEL"),
    ("target", "TARGET"),
    ("attempt_count", "ATTEMPTS"),
    ("last_status_code", "CODE"),
    ("created_at", "CREATED"),
)
JOB_COLUMNS: Columns = (
    ("id", "ID"),
    ("status", "STATUS"),
    ("type", "TYPE"),
    ("created_at", "CREATED"),
    ("finished_at", "FINISHED"),
)
KEY_COLUMNS: Columns = (
    ("prefix", "PREFIX"),
    ("tenant", "TENANT"),
    ("admin", "ADMIN"),
    ("created_at", "CREATED"),
    ("last_used_at", "LAST USED"),
)
ENDPOINT_COLUMNS: Columns = (
    ("id", "ID"),
    ("url", "URL"),
    ("signature", "SIGNATURE"),
    ("disabled", "DISABLED"),
    ("circuit", "CIRCUIT"),
    ("created_at", "CREATED"),
    ("description", "DESCRIPTION"),
)
JOB_DELIVERY_COLUMNS: Columns = (
    ("id", "DELIVERY"),
    ("status", "STATUS"),
    ("channel", "CHANNEL"),
    ("target", "TARGET"),
    ("attempt_count", "ATTEMPTS"),
)
TENANT = ("tenant", "TENANT")
# What an endpoint signs with, as `endpoints create` and `endpoints rotate` show it.
CREDENTIALS = (("secret", "secret"), ("public key", "public_key"))


def one_line(text: str) -> str:
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return one_line(str(value)) or "-"


def with_tenant(columns: Columns, rows: list[dict[str, Any]]) -> Columns:
    """The columns, and the tenant's after the first when the rows carry it (an admin's view)."""
    if TENANT in columns or not any("tenant" in row for row in rows):
        return columns
    return (columns[0], TENANT, *columns[1:])


def table(rows: list[dict[str, Any]], columns: Columns = DELIVERY_COLUMNS) -> list[str]:
    cells = [[title for _, title in columns]]
    cells += [[cell(row.get(name)) for name, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


def fields(thing: dict[str, Any], labels: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{label:<16}{cell(thing.get(name))}" for label, name in labels]


def describe(delivery: dict[str, Any]) -> list[str]:
    lines = fields(
        delivery,
        (
            ("delivery", "id"),
            ("job", "job_id"),
            ("status", "status"),
            ("channel", "channel"),
            ("target", "target"),
            ("event", "event_type"),
            ("endpoint", "endpoint_id"),
            ("attempts", "attempt_count"),
            ("next attempt", "next_attempt_at"),
            ("last code", "last_status_code"),
            ("last error", "last_error"),
            ("created", "created_at"),
        ),
    )
    for attempt in delivery.get("attempts") or []:
        lines += ["", *describe_attempt(attempt)]
    return lines


def describe_attempt(attempt: dict[str, Any]) -> list[str]:
    trigger = cell(attempt.get("trigger"))
    if attempt.get("by"):
        trigger += f" by {cell(attempt['by'])}"
    code = attempt.get("status_code")
    outcome = f"HTTP {cell(code)}" if code is not None else "no response"
    lines = [
        f"attempt {cell(attempt.get('number'))}  {cell(attempt.get('started_at'))}  "
        f"{trigger}  {outcome}  {cell(attempt.get('duration_ms'))} ms"
    ]
    if attempt.get("error"):
        lines.append(f"  error:    {clip(attempt['error'])}")
    if attempt.get("response_body"):
        lines.append(f"  response: {clip(attempt['response_body'])}")
    return lines


def describe_job(job: dict[str, Any]) -> list[str]:
    lines = fields(
        job,
        (
            ("job", "id"),
            ("type", "type"),
            ("status", "status"),
            ("created", "created_at"),
            ("started", "started_at"),
            ("finished", "finished_at"),
        ),
    )
    optional = (("deadline", "deadline"), ("callback", "callback_url"), ("endpoint", "endpoint_id"))
    lines += fields(job, [(label, name) for label, name in optional if job.get(name) is not None])
    if job.get("error"):
        lines.append(f"{'error':<16}{job_error(job)}")
    for label in ("payload", "result", "notify", "metadata"):
        if job.get(label) is not None:
            lines.append(f"{label:<16}{clip(json.dumps(job[label]))}")
    deliveries = [d for d in job.get("deliveries") or [] if isinstance(d, dict)]
    if deliveries:
        lines += ["", *table(deliveries, JOB_DELIVERY_COLUMNS)]
    return lines


def job_error(job: dict[str, Any]) -> str:
    """`type: message` of a job's error, or "-"."""
    error = job.get("error")
    if not isinstance(error, dict):
        return cell(error)
    return f"{cell(error.get('type'))}: {clip(str(error.get('message')))}"


def describe_key(created: dict[str, Any]) -> list[str]:
    return fields(
        created,
        (
            ("key", "key"),
            ("signing secret", "signing_secret"),
            ("tenant", "tenant"),
            ("admin", "admin"),
        ),
    )


def credential(answer: dict[str, Any]) -> list[str]:
    """The secret or public key a new or rotated endpoint signs with, as a labelled line."""
    return fields(
        answer,
        [(label, name) for label, name in CREDENTIALS if isinstance(answer.get(name), str)],
    )


def describe_endpoint(endpoint: dict[str, Any], public_key: str | None = None) -> list[str]:
    """An endpoint: with its secret when just made, or the `public_key` `show` read for it."""
    lines = [*fields(endpoint, (("endpoint", "id"),)), *credential(endpoint)]
    if public_key is not None and "public_key" not in endpoint:
        lines.append(f"{'public key':<16}{cell(public_key)}")
    lines += fields(endpoint, (("url", "url"), ("description", "description")))
    lines.append(f"{'signature':<16}{cell(endpoint.get('signature'))}")
    events = endpoint.get("event_types")
    shown = ", ".join(cell(e) for e in events) if isinstance(events, list) else "all"
    lines.append(f"{'events':<16}{shown}")
    headers = endpoint.get("headers")
    for name, value in headers.items() if isinstance(headers, dict) else ():
        lines.append(f"{'header':<16}{cell(name)}: {clip(str(value))}")
    rate = endpoint.get("rate_limit")
    lines.append(f"{'rate limit':<16}{cell(rate)}{' a second' if rate is not None else ''}")
    lines += fields(endpoint, (("max in flight", "max_in_flight"),))
    lines.append(f"{'state':<16}{_state(endpoint)}")
    circuit = cell(endpoint.get("circuit"))
    if endpoint.get("circuit_since"):
        circuit += f" since {cell(endpoint['circuit_since'])}"
    lines.append(f"{'circuit':<16}{circuit}")
    return lines + fields(endpoint, (("created", "created_at"), ("updated", "updated_at")))


def _state(endpoint: dict[str, Any]) -> str:
    if not endpoint.get("disabled"):
        return "enabled"
    state = "disabled"
    if endpoint.get("disabled_at"):
        state += f" since {cell(endpoint['disabled_at'])}"
    if endpoint.get("disabled_reason"):
        state += f": {clip(str(endpoint['disabled_reason']))}"
    return state


def clip(text: str, size: int = 200) -> str:
    flat = one_line(str(text))
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def count(n: int) -> str:
    return f"{n} delivery" if n == 1 else f"{n} deliveries"
