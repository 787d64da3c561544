"""How the command line shows deliveries: a table, a description, counts."""

from __future__ import annotations

from typing import Any

LIST_COLUMNS = (
    ("id", "ID"),
    ("status", "STATUS"),
    ("channel", "CHANNEL"),
    ("target", "TARGET"),
    ("attempt_count", "ATTEMPTS"),
    ("last_status_code", "CODE"),
    ("created_at", "CREATED"),
)


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [[title for _, title in LIST_COLUMNS]]
    cells += [[cell(row.get(name)) for name, _ in LIST_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(LIST_COLUMNS))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]


def describe(delivery: dict[str, Any]) -> list[str]:
    fields = (
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
    )
    lines = [f"{label:<14}{cell(delivery.get(name))}" for label, name in fields]
    for attempt in delivery.get("attempts") or []:
        lines += ["", *describe_attempt(attempt)]
    return lines


def describe_attempt(attempt: dict[str, Any]) -> list[str]:
    trigger = cell(attempt.get("trigger"))
    if attempt.get("by"):
        trigger += f" by {attempt['by']}"
    code = attempt.get("status_code")
    outcome = f"HTTP {code}" if code is not None else "no response"
    lines = [
        f"attempt {cell(attempt.get('number'))}  {cell(attempt.get('started_at'))}  "
        f"{trigger}  {outcome}  {cell(attempt.get('duration_ms'))} ms"
    ]
    if attempt.get("error"):
        lines.append(f"  error:    {clip(attempt['error'])}")
    if attempt.get("response_body"):
        lines.append(f"  response: {clip(attempt['response_body'])}")
    return lines


def clip(text: str, size: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def count(n: int) -> str:
    return f"{n} delivery" if n == 1 else f"{n} deliveries"
