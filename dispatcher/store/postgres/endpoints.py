"""The PostgreSQL store's endpoints: register, read, change, rotate, delete."""

from __future__ import annotations

from typing import Any

from dispatcher.store.endpoint_records import (
    Endpoint,
    EndpointChanges,
    EndpointHealth,
    NewEndpoint,
)
from dispatcher.store.filters import dollar
from dispatcher.store.limits import check_endpoints
from dispatcher.store.postgres import queries as sql
from dispatcher.store.postgres.connection import PostgresConnection
from dispatcher.store.records import Page
from dispatcher.store.rows import changed_columns, endpoint_columns, page_of


class PostgresEndpoints(PostgresConnection):
    async def create_endpoint(self, new: NewEndpoint, max_per_tenant: int) -> Endpoint:
        params = endpoint_columns(new)
        async with self._transaction() as connection:
            # Counted without a lock: two instances registering a tenant's last
            # endpoint at the same moment may pass the limit by one.
            count = await connection.fetchval(sql.COUNT_TENANT_ENDPOINTS, new.tenant)
            check_endpoints(count, max_per_tenant)
            row = await connection.fetchrow(sql.INSERT_ENDPOINT, *params)
        return Endpoint.from_row(row)

    async def get_endpoint(
        self, endpoint_id: str, tenant: str | None, *, deleted: bool = False
    ) -> Endpoint | None:
        row = await self._fetchrow(sql.GET_ENDPOINT, endpoint_id, tenant, deleted)
        return Endpoint.from_row(row) if row is not None else None

    async def list_endpoints(self, tenant: str | None, limit: int, before: str | None) -> Page:
        rows = await self._fetch(sql.LIST_ENDPOINTS, tenant, before, limit + 1)
        page = page_of(rows, limit, lambda row: row["id"])
        return Page([Endpoint.from_row(row) for row in page.items], page.next_cursor)

    async def update_endpoint(
        self, endpoint_id: str, tenant: str | None, changes: EndpointChanges, now: float
    ) -> Endpoint | None:
        values = changed_columns(changes, now)
        assignments = ", ".join(
            f"{column} = {dollar(number)}" for number, column in enumerate(values, start=1)
        )
        query = sql.UPDATE_ENDPOINT.format(
            assignments=assignments,
            id=dollar(len(values) + 1),
            tenant=dollar(len(values) + 2),
        )
        async with self._transaction() as connection:
            found = await connection.fetchval(query, *values.values(), endpoint_id, tenant)
            if found is None:
                return None
            if "url" in values:
                await connection.execute(
                    sql.MOVE_ENDPOINT_DELIVERIES, values["url"], values["host"], endpoint_id
                )
            if "url" in values or changes.enable:
                await connection.execute(sql.RESET_ENDPOINT_HEALTH, endpoint_id)
            if changes.enable:
                await connection.execute(sql.ENABLE_ENDPOINT, endpoint_id)
            if changes.disable_reason is not None:
                await disable_endpoint(connection, endpoint_id, changes.disable_reason, now)
            row = await connection.fetchrow(sql.GET_ENDPOINT, endpoint_id, None, False)
        return Endpoint.from_row(row)

    async def delete_endpoint(self, endpoint_id: str, tenant: str | None, now: float) -> bool:
        async with self._transaction() as connection:
            if await connection.fetchrow(sql.GET_ENDPOINT, endpoint_id, tenant, False) is None:
                return False
            await connection.execute(sql.DELETE_ENDPOINT, now, endpoint_id)
            reason = f"the endpoint {endpoint_id} was deleted"
            await connection.execute(sql.FAIL_ENDPOINT_DELIVERIES, reason, endpoint_id)
        return True

    async def rotate_endpoint_secret(
        self, endpoint_id: str, tenant: str | None, new_secret: str, grace_until: float, now: float
    ) -> Endpoint | None:
        async with self._transaction() as connection:
            row = await connection.fetchrow(sql.ENDPOINT_TO_ROTATE, endpoint_id, tenant, False)
            if row is None:
                return None
            after = Endpoint.from_row(row).secrets.rotated(new_secret, grace_until, now)
            await connection.execute(
                sql.ROTATE_ENDPOINT_SECRET,
                after.current,
                after.dump_previous(),
                now,
                endpoint_id,
            )
            row = await connection.fetchrow(sql.GET_ENDPOINT, endpoint_id, None, False)
        return Endpoint.from_row(row)


async def disable_endpoint(connection: Any, endpoint_id: str, reason: str, now: float) -> None:
    """Disable the endpoint and end what waits for it, saying why."""
    await connection.execute(sql.DISABLE_ENDPOINT, reason, now, endpoint_id)
    error = f"the endpoint {endpoint_id} is disabled: {reason}"
    await connection.execute(sql.FAIL_ENDPOINT_DELIVERIES, error, endpoint_id)


async def record_health(
    connection: Any, endpoint_id: str, health: EndpointHealth, now: float
) -> None:
    """What an attempt taught of its endpoint, and a disabling it led to."""
    await connection.execute(
        sql.UPDATE_ENDPOINT_HEALTH,
        health.failing_since,
        health.circuit_since,
        health.probe_at,
        health.probes,
        health.disabled_reason,
        health.disabled_at,
        endpoint_id,
    )
    if health.disabled_reason is not None:
        await disable_endpoint(connection, endpoint_id, health.disabled_reason, now)
