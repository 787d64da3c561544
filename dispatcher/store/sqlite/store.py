"""The Store on an embedded SQLite file.

Tenants and keys are here; jobs, deliveries and endpoints have modules of their own.
"""

from __future__ import annotations

from dispatcher.errors import NotFound
from dispatcher.ids import now
from dispatcher.store.base import Store
from dispatcher.store.records import (
    ApiKey,
    Page,
)
from dispatcher.store.rows import cursor_of_key, key_cursor, page_of
from dispatcher.store.signing import SigningSecrets
from dispatcher.store.sqlite import queries as sql
from dispatcher.store.sqlite.deliveries import SQLiteDeliveries
from dispatcher.store.sqlite.endpoints import SQLiteEndpoints
from dispatcher.store.sqlite.jobs import SQLiteJobs
from dispatcher.store.sqlite.writer import Batch
from dispatcher.store.stats import StoreStats


class SQLiteStore(SQLiteJobs, SQLiteDeliveries, SQLiteEndpoints, Store):
    # Tenants and keys

    async def create_key(self, key: ApiKey, tenant_secret: str) -> SigningSecrets:
        def op(batch: Batch) -> None:
            batch.db.execute(sql.ENSURE_TENANT, (key.tenant, tenant_secret, key.created_at))
            batch.db.execute(
                sql.INSERT_KEY,
                (key.prefix, key.key_hash, key.tenant, int(key.admin), key.created_at),
            )

        await self._write(op)
        secrets = await self.tenant_secrets(key.tenant)
        assert secrets is not None
        return secrets

    async def ensure_tenant(self, tenant: str, secret: str, now: float) -> None:
        def op(batch: Batch) -> None:
            batch.db.execute(sql.ENSURE_TENANT, (tenant, secret, now))

        await self._write(op)

    async def find_key(self, prefix: str) -> ApiKey | None:
        rows = await self._read("SELECT * FROM api_keys WHERE prefix = ?", (prefix,))
        return ApiKey.from_row(rows[0]) if rows else None

    async def list_keys(self, limit: int, before: str | None) -> Page:
        created, prefix = key_cursor(before)
        rows = await self._read(sql.LIST_KEYS, (created, prefix, limit + 1))
        page = page_of(rows, limit, cursor_of_key)
        return Page([ApiKey.from_row(row) for row in page.items], page.next_cursor)

    async def revoke_key(self, prefix: str) -> bool:
        def op(batch: Batch) -> bool:
            cursor = batch.db.execute("DELETE FROM api_keys WHERE prefix = ?", (prefix,))
            return cursor.rowcount > 0

        return bool(await self._write(op))

    async def touch_key(self, prefix: str, at: float) -> None:
        def op(batch: Batch) -> None:
            batch.db.execute("UPDATE api_keys SET last_used_at = ? WHERE prefix = ?", (at, prefix))

        await self._write(op)

    async def count_keys(self) -> int:
        rows = await self._read("SELECT count(*) FROM api_keys")
        return int(rows[0][0])

    async def tenant_secrets(self, tenant: str) -> SigningSecrets | None:
        rows = await self._read(sql.TENANT_SECRETS, (tenant,))
        if not rows:
            return None
        return SigningSecrets.load(rows[0]["secret"], rows[0]["previous_secrets"])

    async def rotate_tenant_secret(
        self, tenant: str, new_secret: str, grace_until: float, now: float
    ) -> SigningSecrets:
        def op(batch: Batch) -> SigningSecrets | None:
            rows = batch.fetch(sql.TENANT_SECRETS, (tenant,))
            if not rows:
                return None
            before = SigningSecrets.load(rows[0]["secret"], rows[0]["previous_secrets"])
            after = before.rotated(new_secret, grace_until, now)
            batch.db.execute(
                sql.ROTATE_TENANT_SECRET, (after.current, after.dump_previous(), tenant)
            )
            return after

        secrets = await self._write(op)
        if secrets is None:
            raise NotFound("no such tenant")
        return secrets

    # Both

    async def renew_leases(
        self, owner: str, job_ids: list[str], delivery_ids: list[str], seconds: float
    ) -> None:
        if not job_ids and not delivery_ids:
            return
        # One process on the file: its clock is the store's.
        until = now() + seconds

        def op(batch: Batch) -> None:
            for job_id in job_ids:
                batch.defer(sql.RENEW_JOB_LEASE, (until, owner, job_id))
            for delivery_id in delivery_ids:
                batch.defer(sql.RENEW_DELIVERY_LEASE, (until, owner, delivery_id))

        await self._write(op)

    async def stats(self, now: float) -> StoreStats:
        jobs = await self._read(sql.STATS_JOBS)
        oldest = await self._read(sql.STATS_OLDEST_QUEUED, (now,))
        deliveries = (await self._read(sql.STATS_DELIVERIES))[0]
        endpoints = (await self._read(sql.STATS_ENDPOINTS))[0]
        return StoreStats(
            jobs={(row["type"], row["status"]): row["n"] for row in jobs},
            oldest_queued_at=oldest[0][0],
            deliveries={"pending": deliveries[0], "failed": deliveries[1]},
            endpoints_disabled=endpoints[0],
            circuits_open=endpoints[1],
        )

    async def purge(self, finished_before: float) -> int:
        def op(batch: Batch) -> int:
            cursor = batch.db.execute(sql.PURGE_JOBS, (finished_before,))
            return cursor.rowcount

        return int(await self._write(op))
