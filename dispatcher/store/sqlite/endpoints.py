"""The SQLite store's endpoints: register, read, change, rotate, delete."""

from __future__ import annotations

from typing import Any

from dispatcher.store.endpoint_records import (
    Endpoint,
    EndpointChanges,
    EndpointHealth,
    NewEndpoint,
)
from dispatcher.store.limits import check_endpoints
from dispatcher.store.records import Page
from dispatcher.store.rows import changed_columns, endpoint_columns, page_of
from dispatcher.store.sqlite import queries as sql
from dispatcher.store.sqlite.connection import SQLiteConnection
from dispatcher.store.sqlite.writer import Batch


class SQLiteEndpoints(SQLiteConnection):
    async def create_endpoint(self, new: NewEndpoint, max_per_tenant: int) -> Endpoint:
        params = endpoint_columns(new)

        def op(batch: Batch) -> Any:
            count = batch.fetch(sql.COUNT_TENANT_ENDPOINTS, (new.tenant,))[0][0]
            # Declined before anything is written, as the writer asks.
            check_endpoints(count, max_per_tenant)
            return batch.fetch(sql.INSERT_ENDPOINT, params)[0]

        return Endpoint.from_row(await self._write(op))

    async def get_endpoint(
        self, endpoint_id: str, tenant: str | None, *, deleted: bool = False
    ) -> Endpoint | None:
        rows = await self._read(sql.GET_ENDPOINT, (endpoint_id, tenant, deleted))
        return Endpoint.from_row(rows[0]) if rows else None

    async def list_endpoints(self, tenant: str | None, limit: int, before: str | None) -> Page:
        rows = await self._read(sql.LIST_ENDPOINTS, (tenant, before, limit + 1))
        page = page_of(rows, limit, lambda row: row["id"])
        return Page([Endpoint.from_row(row) for row in page.items], page.next_cursor)

    async def update_endpoint(
        self, endpoint_id: str, tenant: str | None, changes: EndpointChanges, now: float
    ) -> Endpoint | None:
        values = changed_columns(changes, now)
        assignments = ", ".join(f"{column} = ?" for column in values)

        def op(batch: Batch) -> Any:
            rows = batch.fetch(
                f"UPDATE endpoints SET {assignments} WHERE id = ? AND (? IS NULL OR tenant = ?)"
                " AND deleted_at IS NULL RETURNING id",
                (*values.values(), endpoint_id, tenant, tenant),
            )
            if not rows:
                return None
            if "url" in values:
                batch.db.execute(
                    sql.MOVE_ENDPOINT_DELIVERIES, (values["url"], values["host"], endpoint_id)
                )
            if "url" in values or changes.enable:
                batch.db.execute(sql.RESET_ENDPOINT_HEALTH, (endpoint_id,))
            if changes.enable:
                batch.db.execute(sql.ENABLE_ENDPOINT, (endpoint_id,))
            if changes.disable_reason is not None:
                disable_endpoint(batch, endpoint_id, changes.disable_reason, now)
            return batch.fetch(sql.GET_ENDPOINT, (endpoint_id, None, False))[0]

        row = await self._write(op)
        return None if row is None else Endpoint.from_row(row)

    async def delete_endpoint(self, endpoint_id: str, tenant: str | None, now: float) -> bool:
        def op(batch: Batch) -> bool:
            if not batch.fetch(sql.GET_ENDPOINT, (endpoint_id, tenant, False)):
                return False
            batch.db.execute(sql.DELETE_ENDPOINT, (now, endpoint_id))
            reason = f"the endpoint {endpoint_id} was deleted"
            batch.db.execute(sql.FAIL_ENDPOINT_DELIVERIES, (reason, endpoint_id, now))
            return True

        return bool(await self._write(op))

    async def rotate_endpoint_secret(
        self, endpoint_id: str, tenant: str | None, new_secret: str, grace_until: float, now: float
    ) -> Endpoint | None:
        def op(batch: Batch) -> Any:
            rows = batch.fetch(sql.GET_ENDPOINT, (endpoint_id, tenant, False))
            if not rows:
                return None
            before = Endpoint.from_row(rows[0]).secrets
            after = before.rotated(new_secret, grace_until, now)
            batch.db.execute(
                sql.ROTATE_ENDPOINT_SECRET,
                (after.current, after.dump_previous(), now, endpoint_id),
            )
            return batch.fetch(sql.GET_ENDPOINT, (endpoint_id, None, False))[0]

        row = await self._write(op)
        return None if row is None else Endpoint.from_row(row)


def disable_endpoint(batch: Batch, endpoint_id: str, reason: str, now: float) -> None:
    """Disable the endpoint and end what waits for it, saying why."""
    batch.db.execute(sql.DISABLE_ENDPOINT, (reason, now, endpoint_id))
    error = f"the endpoint {endpoint_id} is disabled: {reason}"
    batch.db.execute(sql.FAIL_ENDPOINT_DELIVERIES, (error, endpoint_id, now))


def record_health(batch: Batch, endpoint_id: str, health: EndpointHealth, now: float) -> None:
    """What an attempt taught of its endpoint, and a disabling it led to."""
    batch.db.execute(
        sql.UPDATE_ENDPOINT_HEALTH,
        (
            health.failing_since,
            health.circuit_since,
            health.probe_at,
            health.probes,
            health.disabled_reason,
            health.disabled_at,
            endpoint_id,
        ),
    )
    if health.disabled_reason is not None:
        disable_endpoint(batch, endpoint_id, health.disabled_reason, now)
