"""WHERE clauses for the listings, built once for both dialects.

Each dialect says how it writes a parameter (`?` for SQLite, `$1`… for
PostgreSQL); the columns come from fixed names here, never from a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatcher.store.records import DeliveryFilter, JobFilter

Placeholder = Callable[[int], str]


def question_mark(_: int) -> str:
    return "?"


def dollar(number: int) -> str:
    return f"${number}"


class Where:
    """Conditions joined by AND, with their parameters in order."""

    def __init__(self, placeholder: Placeholder, first: int = 1) -> None:
        self._placeholder = placeholder
        self._first = first
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, template: str, value: Any) -> None:
        """A condition with one parameter, written `{}` in `template`."""
        self.clauses.append(template.format(self.next_placeholder()))
        self.params.append(value)

    def next_placeholder(self) -> str:
        """The placeholder of the parameter after those added so far."""
        return self._placeholder(self._first + len(self.params))

    def also(self, condition: str) -> None:
        """A condition without parameters."""
        self.clauses.append(condition)

    def equal(self, column: str, value: Any) -> None:
        """The column equal to `value`; None puts no condition on it."""
        if value is not None:
            self.add(f"{column} = {{}}", str(value))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) or "TRUE"


def jobs_where(where: JobFilter, placeholder: Placeholder) -> Where:
    """The jobs a listing shows: the tenant's (all for None), by status and type, paged."""
    clause = Where(placeholder)
    clause.equal("tenant", where.tenant)
    clause.equal("status", where.status)
    clause.equal("type", where.type)
    if where.before is not None:
        clause.add("id < {}", where.before)
    return clause


def deliveries_where(where: DeliveryFilter, placeholder: Placeholder) -> Where:
    """The deliveries a listing, a dry run and a bulk replay select (the cursor is the caller's).

    A dry run and the replay it previews must select the same rows: both use this.
    """
    clause = Where(placeholder)
    clause.equal("tenant", where.tenant)
    clause.equal("status", where.status)
    clause.equal("job_id", where.job_id)
    clause.equal("endpoint_id", where.endpoint_id)
    clause.equal("channel", where.channel)
    if where.since is not None:
        clause.add("created_at >= {}", where.since)
    if where.until is not None:
        clause.add("created_at < {}", where.until)
    return clause


# What a bulk replay may send again: finished deliveries, not to an endpoint
# that is disabled or deleted. Plain SQL that both dialects read alike.
REPLAYABLE = """status <> 'pending' AND (endpoint_id IS NULL OR endpoint_id IN (
    SELECT e.id FROM endpoints AS e WHERE e.disabled_at IS NULL AND e.deleted_at IS NULL))"""


def replayable_where(where: DeliveryFilter, placeholder: Placeholder) -> Where:
    """The deliveries a bulk replay takes, and its dry run counts: the very same rows."""
    clause = deliveries_where(where, placeholder)
    clause.also(REPLAYABLE)
    return clause
