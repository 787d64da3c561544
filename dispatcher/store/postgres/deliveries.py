"""The PostgreSQL store's deliveries: claim by host share and endpoint limits, record
attempts, list, replay."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from dispatcher.errors import NotFound
from dispatcher.store.filters import deliveries_where, dollar, replayable_where
from dispatcher.store.postgres import queries as sql
from dispatcher.store.postgres.connection import PostgresConnection, affected
from dispatcher.store.postgres.endpoints import record_health
from dispatcher.store.records import (
    Attempt,
    AttemptRecord,
    Delivery,
    DeliveryFilter,
    DueDelivery,
    Page,
)
from dispatcher.store.rooms import SCAN_FACTOR, Rooms
from dispatcher.store.rows import page_of

# A bucket holds a second's worth of tokens (at least one) and a little more,
# as the deliverer's gates do (delivery/gates.py, SLACK): a claim a few
# milliseconds late loses no time.
BUCKET_SECONDS = 1.0
# Seconds a bulk replay (or its dry run) may take.
BULK_TIMEOUT = 300.0
BUCKET_SLACK = 0.4


class PostgresDeliveries(PostgresConnection):
    async def claim_deliveries(
        self,
        owner: str,
        limit: int,
        now: float,
        lease: float,
        *,
        skip_tenants: Sequence[str] = (),
        skip_routes: Sequence[tuple[str, str]] = (),
        route_room: Mapping[tuple[str, str], int] | None = None,
        per_route: int | None = None,
        window: int | None = None,
        skip_endpoints: Sequence[str] = (),
        endpoint_room: Mapping[str, int] | None = None,
    ) -> list[DueDelivery]:
        # Enough due rows to choose from when the oldest crowd into a few routes.
        due: list[Any] = [
            now,
            list(skip_tenants),
            [tenant for tenant, _ in skip_routes],
            [host for _, host in skip_routes],
            list(skip_endpoints),
            limit * SCAN_FACTOR,
        ]
        query = sql.DUE_DELIVERIES
        if window is not None:
            query = sql.DUE_DELIVERIES_IN_WINDOW
            due.append(window)
        async with self._transaction() as connection:
            rows = await connection.fetch(query, *due)
            rooms = dict(endpoint_room or {})
            buckets = await _endpoint_rooms(connection, rows, rooms)
            chosen = Rooms(dict(route_room or {}), per_route, rooms).choose(rows, limit)
            if not chosen:
                return []
            if buckets:
                await _spend_tokens(connection, buckets, rows, chosen)
            claimed = await connection.fetch(sql.CLAIM_DELIVERIES, owner, lease, chosen)
        claimed = sorted(claimed, key=lambda row: row["next_attempt_at"])
        return [
            DueDelivery(
                Delivery.from_row(row),
                bytes(row["body"] or row["job_event_body"]),
                row["job_deadline"],
                json.loads(row["job_notify"] or "null"),
            )
            for row in claimed
        ]

    async def record_attempt(self, record: AttemptRecord) -> None:
        attempt = record.attempt
        params = (
            record.delivery_id,
            attempt.started_at,
            attempt.duration_ms,
            attempt.status_code,
            attempt.error,
            attempt.response_body,
            str(attempt.trigger),
            attempt.by,
            record.owner,
            str(record.status),
            record.next_attempt_at,
            attempt.number - 1,
        )
        learnt = record.endpoint_id is not None and record.health is not None
        if not learnt and not record.follow_ups:
            # Most attempts: one statement, atomic on its own.
            async with self._connection() as connection:
                await connection.fetchval(sql.RECORD_ATTEMPT, *params)
            self._committed()
            return
        async with self._transaction() as connection:
            if not await connection.fetchval(sql.RECORD_ATTEMPT, *params):
                return  # another instance holds it now: what follows is its to decide
            if record.endpoint_id is not None and record.health is not None:
                await record_health(
                    connection, record.endpoint_id, record.health, attempt.started_at
                )
            at = attempt.started_at
            follow_ups = [
                (d.id, str(d.channel), d.target, d.event_type, at, at, d.body, d.host)
                for d in record.follow_ups
            ]
            if follow_ups:
                await connection.executemany(
                    sql.INSERT_FOLLOW_UP, [(*f, record.delivery_id) for f in follow_ups]
                )

    async def release_deliveries(self, owner: str, delivery_ids: list[str]) -> None:
        if not delivery_ids:
            return
        async with self._transaction() as connection:
            await connection.execute(sql.RELEASE_DELIVERIES, list(delivery_ids), owner)

    async def get_delivery(self, delivery_id: str, tenant: str | None) -> Delivery | None:
        async with self._connection() as connection:
            row = await connection.fetchrow(sql.GET_DELIVERY, delivery_id, tenant)
            if row is None:
                return None
            attempts = await connection.fetch(sql.ATTEMPTS, delivery_id)
        return Delivery.from_row(row, tuple(Attempt.from_row(a) for a in attempts))

    async def list_deliveries(self, where: DeliveryFilter) -> Page:
        clause = deliveries_where(where, dollar)
        if where.before is not None:
            clause.add("id < {}", where.before)
        query = sql.LIST_DELIVERIES.format(where=clause.sql, limit=clause.next_placeholder())
        rows = await self._fetch(query, *clause.params, where.limit + 1)
        page = page_of(rows, where.limit, lambda row: row["id"])
        return Page([Delivery.from_row(row) for row in page.items], page.next_cursor)

    async def replay_delivery(
        self, delivery_id: str, tenant: str | None, by: str, now: float
    ) -> Delivery:
        async with self._transaction() as connection:
            row = await connection.fetchrow(sql.REPLAY_ONE, now, by, delivery_id, tenant)
        if row is None:
            raise NotFound("no such delivery")
        return Delivery.from_row(row)

    async def replay_deliveries(
        self, where: DeliveryFilter, by: str, now: float, dry_run: bool
    ) -> int:
        # The same filter and the same rule for both, so the dry run counts what
        # the replay would take; the replay's own two parameters come first.
        # A replay of everything that failed in a bad hour may touch many rows:
        # it gets longer than the statement timeout for the calls of a request.
        if dry_run:
            clause = replayable_where(where, dollar)
            query = sql.COUNT_REPLAYABLE.format(where=clause.sql)
            async with self._connection() as connection:
                count = await connection.fetchval(query, *clause.params, timeout=BULK_TIMEOUT)
            return int(count)
        clause = replayable_where(where, lambda number: dollar(number + 2))
        query = sql.REPLAY_MANY.format(where=clause.sql)
        async with self._transaction() as connection:
            status = await connection.execute(query, now, by, *clause.params, timeout=BULK_TIMEOUT)
        return affected(status)


async def _endpoint_rooms(
    connection: Any, rows: Sequence[Any], rooms: dict[str, int]
) -> dict[str, tuple[float, float]]:
    """Narrow `rooms` to what every instance leaves of each limited endpoint's limits.

    For an endpoint with `max_in_flight`, the room is what the deliveries
    leased to it now (by any instance) leave; for one with `rate_limit`, the
    whole tokens in its bucket; and never more than the room the caller gave.
    The endpoints' rows in endpoint_tokens stay locked until the claim
    commits, so claims for one endpoint count one after the other. Deliveries
    without an endpoint, or to one without limits, cost nothing here.

    Answers the buckets of the rate-limited endpoints: (tokens now, as of when).
    """
    limits = {
        row["endpoint_id"]: (row["rate_limit"], row["max_in_flight"])
        for row in rows
        if row["rate_limit"] is not None or row["max_in_flight"] is not None
    }
    if not limits:
        return {}
    locked = await _lock_buckets(connection, limits)
    caps = await _in_flight_caps(connection, limits)
    buckets: dict[str, tuple[float, float]] = {}
    for endpoint, (rate, _) in limits.items():
        if rate is not None:
            tokens, at, clock = locked[endpoint]
            # Refilled for the time since it was counted; never back in time.
            tokens = min(_capacity(rate), tokens + max(0.0, clock - at) * rate)
            buckets[endpoint] = (tokens, max(at, clock))
            caps[endpoint] = min(caps.get(endpoint, math.floor(tokens)), math.floor(tokens))
    for endpoint, cap in caps.items():
        rooms[endpoint] = min(rooms.get(endpoint, cap), cap)
    return buckets


async def _in_flight_caps(
    connection: Any, limits: Mapping[str, tuple[int | None, int | None]]
) -> dict[str, int]:
    """What each endpoint's in-flight limit leaves, counting every instance's leases."""
    bounded = [endpoint for endpoint, (_, most) in limits.items() if most is not None]
    if not bounded:
        return {}
    counted = await connection.fetch(sql.ENDPOINTS_IN_FLIGHT, bounded)
    in_flight = {row["endpoint_id"]: row["n"] for row in counted}
    return {e: max(0, (limits[e][1] or 0) - in_flight.get(e, 0)) for e in bounded}


async def _lock_buckets(
    connection: Any, limits: Mapping[str, tuple[int | None, int | None]]
) -> dict[str, tuple[float, float, float]]:
    """Lock the endpoints' rows, made full if new: (tokens, when they were counted, now).

    The rows are made first and locked after, each step in the order of the
    ids: locking what exists and then making what did not could cross
    another claim doing the same and deadlock.
    """
    ids = sorted(limits)
    full = [_capacity(limits[endpoint][0]) for endpoint in ids]
    await connection.execute(sql.ADD_ENDPOINT_TOKENS, ids, full)
    rows = await connection.fetch(sql.LOCK_ENDPOINT_TOKENS, ids)
    return {row["endpoint_id"]: (row["tokens"], row["at"], row["now"]) for row in rows}


async def _spend_tokens(
    connection: Any,
    buckets: Mapping[str, tuple[float, float]],
    rows: Sequence[Any],
    chosen: list[str],
) -> None:
    """Take a token from its endpoint's bucket for each delivery chosen."""
    taken_ids = set(chosen)
    taken = Counter(
        row["endpoint_id"]
        for row in rows
        if row["id"] in taken_ids and row["endpoint_id"] in buckets
    )
    if not taken:
        return
    ids = sorted(taken)
    tokens = [buckets[endpoint][0] - taken[endpoint] for endpoint in ids]
    at = [buckets[endpoint][1] for endpoint in ids]
    await connection.execute(sql.SPEND_ENDPOINT_TOKENS, ids, tokens, at)


def _capacity(rate: int | None) -> float:
    """The tokens a bucket holds at most."""
    return max(1.0, float(rate or 0)) * BUCKET_SECONDS + BUCKET_SLACK
