"""The Store on a PostgreSQL database, which several instances may share.

Tenants and keys are here; jobs, deliveries and endpoints have modules of their own.
"""

from __future__ import annotations

from dispatcher.errors import NotFound
from dispatcher.store.base import Store
from dispatcher.store.feed import ChangeFeed
from dispatcher.store.postgres import queries as sql
from dispatcher.store.postgres.connection import affected
from dispatcher.store.postgres.deliveries import PostgresDeliveries
from dispatcher.store.postgres.endpoints import PostgresEndpoints
from dispatcher.store.postgres.jobs import PostgresJobs
from dispatcher.store.records import ApiKey, Page
from dispatcher.store.rows import cursor_of_key, key_cursor, page_of
from dispatcher.store.signing import SigningSecrets
from dispatcher.store.stats import StoreStats


class PostgresStore(PostgresJobs, PostgresDeliveries, PostgresEndpoints, Store):
    # Instances on one database share it: claims count endpoint limits across them.
    shared = True

    def change_feed(self) -> ChangeFeed:
        """LISTEN and NOTIFY on this database, through the open pool."""
        from dispatcher.store.postgres.feed import PostgresFeed

        if self.pool is None:
            raise RuntimeError("the store is closed")
        return PostgresFeed(self._dsn, self.pool)

    # Tenants and keys

    async def create_key(self, key: ApiKey, tenant_secret: str) -> SigningSecrets:
        async with self._transaction() as connection:
            await connection.execute(sql.ENSURE_TENANT, key.tenant, tenant_secret, key.created_at)
            await connection.execute(
                sql.INSERT_KEY, key.prefix, key.key_hash, key.tenant, key.admin, key.created_at
            )
            row = await connection.fetchrow(sql.TENANT_SECRETS, key.tenant)
        return SigningSecrets.load(row["secret"], row["previous_secrets"])

    async def ensure_tenant(self, tenant: str, secret: str, now: float) -> None:
        async with self._transaction() as connection:
            await connection.execute(sql.ENSURE_TENANT, tenant, secret, now)

    async def find_key(self, prefix: str) -> ApiKey | None:
        row = await self._fetchrow(sql.FIND_KEY, prefix)
        return ApiKey.from_row(row) if row is not None else None

    async def list_keys(self, limit: int, before: str | None) -> Page:
        created, prefix = key_cursor(before)
        rows = await self._fetch(sql.LIST_KEYS, created, prefix, limit + 1)
        page = page_of(rows, limit, cursor_of_key)
        return Page([ApiKey.from_row(row) for row in page.items], page.next_cursor)

    async def revoke_key(self, prefix: str) -> bool:
        async with self._transaction() as connection:
            status = await connection.execute(sql.REVOKE_KEY, prefix)
        return affected(status) > 0

    async def touch_key(self, prefix: str, at: float) -> None:
        async with self._transaction() as connection:
            await connection.execute(sql.TOUCH_KEY, at, prefix)

    async def count_keys(self) -> int:
        row = await self._fetchrow(sql.COUNT_KEYS)
        return int(row[0])

    async def tenant_secrets(self, tenant: str) -> SigningSecrets | None:
        row = await self._fetchrow(sql.TENANT_SECRETS, tenant)
        if row is None:
            return None
        return SigningSecrets.load(row["secret"], row["previous_secrets"])

    async def rotate_tenant_secret(
        self, tenant: str, new_secret: str, grace_until: float, now: float
    ) -> SigningSecrets:
        async with self._transaction() as connection:
            row = await connection.fetchrow(sql.TENANT_SECRETS_TO_ROTATE, tenant)
            if row is None:
                raise NotFound("no such tenant")
            before = SigningSecrets.load(row["secret"], row["previous_secrets"])
            after = before.rotated(new_secret, grace_until, now)
            await connection.execute(
                sql.ROTATE_TENANT_SECRET, after.current, after.dump_previous(), tenant
            )
        return after

    # Both

    async def renew_leases(
        self, owner: str, job_ids: list[str], delivery_ids: list[str], seconds: float
    ) -> None:
        if not job_ids and not delivery_ids:
            return
        async with self._transaction() as connection:
            if job_ids:
                await connection.execute(sql.RENEW_JOB_LEASES, seconds, owner, list(job_ids))
            if delivery_ids:
                await connection.execute(
                    sql.RENEW_DELIVERY_LEASES, seconds, owner, list(delivery_ids)
                )

    async def stats(self, now: float) -> StoreStats:
        async with self._connection() as connection:
            jobs = await connection.fetch(sql.STATS_JOBS)
            oldest = await connection.fetchval(sql.STATS_OLDEST_QUEUED, now)
            deliveries = await connection.fetchrow(sql.STATS_DELIVERIES)
            endpoints = await connection.fetchrow(sql.STATS_ENDPOINTS)
        return StoreStats(
            jobs={(row["type"], row["status"]): row["n"] for row in jobs},
            oldest_queued_at=oldest,
            deliveries={"pending": deliveries["pending"], "failed": deliveries["failed"]},
            endpoints_disabled=endpoints["disabled"],
            circuits_open=endpoints["open"],
        )

    async def purge(self, finished_before: float) -> int:
        async with self._transaction() as connection:
            status = await connection.execute(sql.PURGE_JOBS, finished_before)
        return affected(status)
