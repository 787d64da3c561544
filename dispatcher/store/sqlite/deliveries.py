"""The SQLite store's deliveries: claim by host share, record attempts, list, replay."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dispatcher.errors import NotFound
from dispatcher.store.filters import deliveries_where, question_mark, replayable_where
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
from dispatcher.store.sqlite import queries as sql
from dispatcher.store.sqlite.connection import SQLiteConnection
from dispatcher.store.sqlite.endpoints import record_health
from dispatcher.store.sqlite.writer import Batch


class SQLiteDeliveries(SQLiteConnection):
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
        routes = [f"{tenant}{sql.ROUTE_SEPARATOR}{host}" for tenant, host in skip_routes]
        # Enough due rows to choose from when the oldest crowd into a few routes.
        due: dict[str, Any] = {
            "now": now,
            "skip_tenants": json.dumps(list(skip_tenants)),
            "skip_routes": json.dumps(routes),
            "skip_endpoints": json.dumps(list(skip_endpoints)),
            "scan": limit * SCAN_FACTOR,
        }
        query = sql.DUE_DELIVERIES
        if window is not None:
            query, due["window"] = sql.DUE_DELIVERIES_IN_WINDOW, window
        room = Rooms(dict(route_room or {}), per_route, dict(endpoint_room or {}))

        def op(batch: Batch) -> tuple[list[Any], list[Any]]:
            chosen = room.choose(batch.fetch(query, due), limit)
            if not chosen:
                return [], []
            rows = batch.fetch(sql.CLAIM_DELIVERIES, (owner, now + lease, json.dumps(chosen)))
            # Read here, on the writer's connection, in the same hop.
            job_ids = list({row["job_id"] for row in rows})
            marks = ",".join("?" * len(job_ids))
            jobs = batch.fetch(
                f"SELECT id, event_body, deadline, notify FROM jobs WHERE id IN ({marks})", job_ids
            )
            return rows, jobs

        rows, jobs = await self._write(op)
        by_id = {job["id"]: job for job in jobs}
        rows.sort(key=lambda row: row["next_attempt_at"])
        return [
            DueDelivery(
                Delivery.from_row(row),
                bytes(row["body"] or by_id[row["job_id"]]["event_body"]),
                by_id[row["job_id"]]["deadline"],
                json.loads(by_id[row["job_id"]]["notify"] or "null"),
            )
            for row in rows
        ]

    async def record_attempt(self, record: AttemptRecord) -> None:
        attempt = record.attempt

        def op(batch: Batch) -> None:
            # Deferred, in this order: each attempt's number is read from the
            # row before the update counts it. A process has at most one
            # attempt of a delivery in flight, so no batch holds two of one.
            batch.defer(
                sql.INSERT_ATTEMPT,
                (
                    record.delivery_id,
                    attempt.started_at,
                    attempt.duration_ms,
                    attempt.status_code,
                    attempt.error,
                    attempt.response_body,
                    str(attempt.trigger),
                    attempt.by,
                    record.delivery_id,
                ),
            )
            after = (
                str(record.status),
                record.next_attempt_at,
                attempt.status_code,
                attempt.error,
                record.delivery_id,
                record.owner,
                attempt.number - 1,
            )
            # One of the two applies: another's late record (counted first, on the
            # row as it was), or the holder's. One process sends everything on a
            # SQLite file, so it is the holder.
            batch.defer(sql.COUNT_OTHERS_ATTEMPT, after)
            batch.defer(sql.UPDATE_AFTER_ATTEMPT, after)
            if record.endpoint_id is not None and record.health is not None:
                record_health(batch, record.endpoint_id, record.health, attempt.started_at)
            for d in record.follow_ups:
                at = attempt.started_at
                params = (d.id, str(d.channel), d.target, d.event_type, at, at, d.body, d.host)
                batch.defer(sql.INSERT_FOLLOW_UP, (*params, record.delivery_id))

        await self._write(op)

    async def release_deliveries(self, owner: str, delivery_ids: list[str]) -> None:
        def op(batch: Batch) -> None:
            batch.db.executemany(
                sql.RELEASE_DELIVERY, [(delivery_id, owner) for delivery_id in delivery_ids]
            )

        await self._write(op)

    async def get_delivery(self, delivery_id: str, tenant: str | None) -> Delivery | None:
        rows = await self._read(sql.GET_DELIVERY, (delivery_id, tenant, tenant))
        if not rows:
            return None
        attempts = await self._read(sql.ATTEMPTS, (delivery_id,))
        return Delivery.from_row(rows[0], tuple(Attempt.from_row(row) for row in attempts))

    async def list_deliveries(self, where: DeliveryFilter) -> Page:
        clause = deliveries_where(where, question_mark)
        if where.before is not None:
            clause.add("id < {}", where.before)
        rows = await self._read(
            f"SELECT * FROM deliveries WHERE {clause.sql} ORDER BY id DESC LIMIT ?",
            (*clause.params, where.limit + 1),
        )
        page = page_of(rows, where.limit, lambda row: row["id"])
        return Page([Delivery.from_row(row) for row in page.items], page.next_cursor)

    async def replay_delivery(
        self, delivery_id: str, tenant: str | None, by: str, now: float
    ) -> Delivery:
        def op(batch: Batch) -> Any:
            rows = list(batch.fetch(sql.REPLAY_ONE, (now, by, delivery_id, tenant)))
            return rows[0] if rows else None

        row = await self._write(op)
        if row is None:
            raise NotFound("no such delivery")
        return Delivery.from_row(row)

    async def replay_deliveries(
        self, where: DeliveryFilter, by: str, now: float, dry_run: bool
    ) -> int:
        clause = replayable_where(where, question_mark)
        if dry_run:
            query = sql.COUNT_DELIVERIES.format(where=clause.sql)
            rows = await self._read(query, clause.params)
            return int(rows[0][0])

        def op(batch: Batch) -> int:
            query = sql.REPLAY_MANY.format(where=clause.sql)
            cursor = batch.db.execute(query, (now, by, *clause.params))
            return cursor.rowcount

        return int(await self._write(op))
