"""The Store on an embedded SQLite file: WAL, one group-committing writer, one reader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from dispatcher.errors import Conflict, NotFound, QueueFull
from dispatcher.store import sqlite_sql as sql
from dispatcher.store.base import Store
from dispatcher.store.migrations import MIGRATIONS
from dispatcher.store.records import (
    ApiKey,
    Attempt,
    AttemptRecord,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    DeliverySummary,
    DueDelivery,
    Job,
    JobFilter,
    JobStatus,
    NewJob,
    Outcome,
    Page,
    SigningSecrets,
)
from dispatcher.store.writer import Batch, GroupWriter


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _page(items: list[Any], limit: int, cursor_of: Any) -> Page:
    if len(items) > limit:
        items = items[:limit]
        return Page(items, cursor_of(items[-1]))
    return Page(items, None)


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupWriter | None = None

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA foreign_keys = ON")
        return db

    async def open(self) -> None:
        # Once, at start, before any request: blocking here is harmless.
        Path(self._path).absolute().parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
        self._db = await self._connect()
        await self._db.execute("PRAGMA journal_mode = WAL")
        # FULL: a 202 means the job survives power loss too, not only a crash.
        await self._db.execute("PRAGMA synchronous = FULL")
        await self._migrate(self._db)
        self._reader = await self._connect()
        self._writer = GroupWriter(self._db)
        self._writer.start()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            rows = await db.execute_fetchall("SELECT max(version) FROM schema_version")
            current = next(iter(rows))[0] or 0
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version VALUES (?)", (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._writer:
            await self._writer.stop()
        for db in (self._reader, self._db):
            if db is not None:
                await db.close()
        self._db = self._reader = self._writer = None

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def _read(self, query: str, params: Any = ()) -> list[Any]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        return list(await self._reader.execute_fetchall(query, params))

    async def _write(self, operation: Any) -> Any:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        return await self._writer.write(operation)

    # Tenants and keys

    async def create_key(self, key: ApiKey, tenant_secret: str) -> SigningSecrets:
        async def op(batch: Batch) -> None:
            await batch.db.execute(sql.ENSURE_TENANT, (key.tenant, tenant_secret, key.created_at))
            await batch.db.execute(
                sql.INSERT_KEY,
                (key.prefix, key.key_hash, key.tenant, int(key.admin), key.created_at),
            )

        await self._write(op)
        secrets = await self.tenant_secrets(key.tenant)
        assert secrets is not None
        return secrets

    async def ensure_tenant(self, tenant: str, secret: str, now: float) -> None:
        async def op(batch: Batch) -> None:
            await batch.db.execute(sql.ENSURE_TENANT, (tenant, secret, now))

        await self._write(op)

    async def find_key(self, prefix: str) -> ApiKey | None:
        rows = await self._read("SELECT * FROM api_keys WHERE prefix = ?", (prefix,))
        return ApiKey.from_row(rows[0]) if rows else None

    async def list_keys(self, limit: int, before: str | None) -> Page:
        if before is None:
            rows = await self._read(sql.LIST_KEYS.format(where=""), (limit + 1,))
        else:
            rows = await self._read(
                sql.LIST_KEYS.format(where="WHERE rowid < ?"), (int(before), limit + 1)
            )
        page = _page(rows, limit, lambda row: str(row["rowid"]))
        return Page([ApiKey.from_row(row) for row in page.items], page.next_cursor)

    async def revoke_key(self, prefix: str) -> bool:
        async def op(batch: Batch) -> bool:
            cursor = await batch.db.execute("DELETE FROM api_keys WHERE prefix = ?", (prefix,))
            return cursor.rowcount > 0

        return bool(await self._write(op))

    async def touch_key(self, prefix: str, at: float) -> None:
        async def op(batch: Batch) -> None:
            await batch.db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE prefix = ?", (at, prefix)
            )

        await self._write(op)

    async def count_keys(self) -> int:
        rows = await self._read("SELECT count(*) FROM api_keys")
        return int(rows[0][0])

    async def tenant_secrets(self, tenant: str) -> SigningSecrets | None:
        rows = await self._read(sql.TENANT_SECRETS, (tenant,))
        if not rows:
            return None
        row = rows[0]
        return SigningSecrets(row["secret"], row["previous_secret"], row["previous_until"])

    async def rotate_tenant_secret(
        self, tenant: str, new_secret: str, grace_until: float
    ) -> SigningSecrets:
        async def op(batch: Batch) -> None:
            await batch.db.execute(sql.ROTATE_TENANT_SECRET, (new_secret, grace_until, tenant))

        await self._write(op)
        secrets = await self.tenant_secrets(tenant)
        if secrets is None:
            raise NotFound("no such tenant")
        return secrets

    # Jobs

    async def submit_job(self, job: NewJob, max_queue: int) -> tuple[Job, bool]:
        async def op(batch: Batch) -> str | None:
            if job.idempotency_key is not None:
                first = await _first_with_key(batch, job.tenant, job.idempotency_key)
                if first is not None:
                    if first[1] != job.request_hash:
                        raise Conflict(
                            "this Idempotency-Key was already used with a different request"
                        )
                    return first[0]
            if batch.queued_jobs is None:
                rows = await batch.db.execute_fetchall(sql.COUNT_QUEUED)
                batch.queued_jobs = int(next(iter(rows))[0])
            if batch.queued_jobs >= max_queue:
                raise QueueFull(f"{batch.queued_jobs} jobs are queued; the limit is {max_queue}")
            if job.idempotency_key is not None:
                # Only now: a key is taken by a job that will be inserted.
                batch.idempotency[job.tenant, job.idempotency_key] = (job.id, job.request_hash)
            batch.defer(sql.INSERT_JOB, _job_params(job))
            batch.queued_jobs += 1
            return None

        existing = await self._write(op)
        if existing is not None:
            found = await self.get_job(existing, job.tenant)
            assert found is not None
            return found, False
        return _new_job_record(job), True

    async def get_job(self, job_id: str, tenant: str | None) -> Job | None:
        rows = await self._read(sql.GET_JOB, (job_id, tenant, tenant))
        if not rows:
            return None
        summaries = await self._read(sql.JOB_DELIVERIES, (job_id,))
        return Job.from_row(rows[0], tuple(_summary(row) for row in summaries))

    async def list_jobs(self, where: JobFilter) -> Page:
        clauses, params = ["(? IS NULL OR tenant = ?)"], [where.tenant, where.tenant]
        if where.status is not None:
            clauses.append("status = ?")
            params.append(str(where.status))
        if where.type is not None:
            clauses.append("type = ?")
            params.append(where.type)
        if where.before is not None:
            clauses.append("id < ?")
            params.append(where.before)
        query = f"SELECT * FROM jobs WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
        rows = await self._read(query, (*params, where.limit + 1))
        page = _page(rows, where.limit, lambda row: row["id"])
        jobs = [Job.from_row(row) for row in page.items]
        return Page(await self._with_deliveries(jobs), page.next_cursor)

    async def _with_deliveries(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        marks = ",".join("?" * len(jobs))
        rows = await self._read(
            f"SELECT * FROM deliveries WHERE job_id IN ({marks}) ORDER BY id",
            [job.id for job in jobs],
        )
        by_job: dict[str, list[DeliverySummary]] = {}
        for row in rows:
            by_job.setdefault(row["job_id"], []).append(_summary(row))
        return [_replace_deliveries(job, tuple(by_job.get(job.id, ()))) for job in jobs]

    async def claim_jobs(self, owner: str, limit: int, now: float, lease: float) -> list[Job]:
        async def op(batch: Batch) -> list[Job]:
            params = (owner, now + lease, now)
            rows = list(await batch.db.execute_fetchall(sql.CLAIM_EXPIRED_JOBS, (*params, limit)))
            if len(rows) < limit:
                rows += await batch.db.execute_fetchall(
                    sql.CLAIM_QUEUED_JOBS, (*params, now, limit - len(rows))
                )
            return [Job.from_row(row) for row in rows]

        return list(await self._write(op))

    async def renew_leases(
        self, owner: str, job_ids: list[str], delivery_ids: list[str], until: float
    ) -> None:
        if not job_ids and not delivery_ids:
            return

        async def op(batch: Batch) -> None:
            for job_id in job_ids:
                batch.defer(sql.RENEW_JOB_LEASE, (until, owner, job_id))
            for delivery_id in delivery_ids:
                batch.defer(sql.RENEW_DELIVERY_LEASE, (until, owner, delivery_id))

        await self._write(op)

    async def finish_job(self, job_id: str, owner: str | None, outcome: Outcome) -> Job | None:
        now = outcome.finished_at

        async def op(batch: Batch) -> Job | None:
            values = (
                str(outcome.status),
                _dump(outcome.result),
                _dump(outcome.error),
                now,
                outcome.event_body,
                job_id,
            )
            if owner is None:
                rows = await batch.db.execute_fetchall(sql.FINISH_QUEUED_JOB, values)
            else:
                rows = await batch.db.execute_fetchall(sql.FINISH_RUNNING_JOB, (*values, owner))
            rows = list(rows)
            if not rows:
                return None
            job = Job.from_row(rows[0])
            for d in outcome.deliveries:
                params = (d.id, job.tenant, job.id, str(d.channel), d.target, d.endpoint_id)
                values = (d.event_type, now, now, d.body, d.host)
                batch.defer(sql.INSERT_DELIVERY, (*params, *values))
            summaries = tuple(
                DeliverySummary(d.id, str(d.channel), d.target, DeliveryStatus.PENDING, 0)
                for d in outcome.deliveries
            )
            return _replace_deliveries(job, summaries)

        result: Job | None = await self._write(op)
        return result

    async def requeue_job(self, job_id: str, owner: str, run_at: float) -> None:
        async def op(batch: Batch) -> None:
            await batch.db.execute(sql.REQUEUE_JOB, (run_at, job_id, owner))

        await self._write(op)

    async def release_jobs(self, owner: str, job_ids: list[str]) -> None:
        async def op(batch: Batch) -> None:
            await batch.db.executemany(sql.RELEASE_JOB, [(job_id, owner) for job_id in job_ids])

        await self._write(op)

    async def expired_deadlines(self, now: float, limit: int) -> list[Job]:
        rows = await self._read(sql.EXPIRED_DEADLINES, (now, limit))
        return [Job.from_row(row) for row in rows]

    # Deliveries

    async def claim_deliveries(
        self, owner: str, limit: int, now: float, lease: float, skip_hosts: Sequence[str] = ()
    ) -> list[DueDelivery]:
        params = (owner, now + lease, now, now, limit, json.dumps(list(skip_hosts)))

        async def op(batch: Batch) -> list[Any]:
            return list(await batch.db.execute_fetchall(sql.CLAIM_DELIVERIES, params))

        rows = await self._write(op)
        if not rows:
            return []
        job_ids = list({row["job_id"] for row in rows})
        marks = ",".join("?" * len(job_ids))
        jobs = await self._read(
            f"SELECT id, event_body, deadline, notify FROM jobs WHERE id IN ({marks})", job_ids
        )
        by_id = {job["id"]: job for job in jobs}
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

        async def op(batch: Batch) -> None:
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
            batch.defer(
                sql.UPDATE_AFTER_ATTEMPT,
                (
                    str(record.status),
                    record.next_attempt_at,
                    attempt.status_code,
                    attempt.error,
                    record.delivery_id,
                ),
            )
            for d in record.follow_ups:
                at = attempt.started_at
                params = (d.id, str(d.channel), d.target, d.event_type, at, at, d.body, d.host)
                batch.defer(sql.INSERT_FOLLOW_UP, (*params, record.delivery_id))

        await self._write(op)

    async def release_deliveries(self, owner: str, delivery_ids: list[str]) -> None:
        async def op(batch: Batch) -> None:
            await batch.db.executemany(
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
        clause, params = _delivery_where(where)
        if where.before is not None:
            clause += " AND id < ?"
            params.append(where.before)
        rows = await self._read(
            f"SELECT * FROM deliveries WHERE {clause} ORDER BY id DESC LIMIT ?",
            (*params, where.limit + 1),
        )
        page = _page(rows, where.limit, lambda row: row["id"])
        return Page([Delivery.from_row(row) for row in page.items], page.next_cursor)

    async def replay_delivery(
        self, delivery_id: str, tenant: str | None, by: str, now: float
    ) -> Delivery:
        async def op(batch: Batch) -> Any:
            rows = list(
                await batch.db.execute_fetchall(
                    sql.REPLAY_ONE, (now, by, delivery_id, tenant, tenant)
                )
            )
            return rows[0] if rows else None

        row = await self._write(op)
        if row is not None:
            return Delivery.from_row(row)
        if await self.get_delivery(delivery_id, tenant) is None:
            raise NotFound("no such delivery")
        raise Conflict("the delivery is pending; only a finished delivery can be replayed")

    async def replay_deliveries(
        self, where: DeliveryFilter, by: str, now: float, dry_run: bool
    ) -> int:
        clause, params = _delivery_where(where)
        if dry_run:
            rows = await self._read(f"SELECT count(*) FROM deliveries WHERE {clause}", params)
            return int(rows[0][0])

        async def op(batch: Batch) -> int:
            cursor = await batch.db.execute(
                sql.REPLAY_MANY.format(where=clause), (now, by, *params)
            )
            return cursor.rowcount

        return int(await self._write(op))

    async def purge(self, finished_before: float) -> int:
        async def op(batch: Batch) -> int:
            cursor = await batch.db.execute(sql.PURGE_JOBS, (finished_before,))
            return cursor.rowcount

        return int(await self._write(op))


async def _first_with_key(batch: Batch, tenant: str, key: str) -> tuple[str, str | None] | None:
    """The job that took an idempotency key first: in this batch, or committed before."""
    if (tenant, key) in batch.idempotency:
        return batch.idempotency[tenant, key]
    rows = await batch.db.execute_fetchall(sql.FIND_IDEMPOTENT, (tenant, key))
    for row in rows:
        return str(row["id"]), row["request_hash"]
    return None


def _job_params(job: NewJob) -> tuple[Any, ...]:
    return (
        job.id,
        job.tenant,
        job.type,
        _dump(job.payload) or "null",
        job.callback_url,
        job.endpoint_id,
        _dump(job.notify),
        _dump(job.metadata),
        job.deadline,
        job.created_at,
        job.created_at,
        job.idempotency_key,
        job.request_hash,
    )


def _new_job_record(job: NewJob) -> Job:
    return Job(
        id=job.id,
        tenant=job.tenant,
        type=job.type,
        status=JobStatus.QUEUED,
        payload=job.payload,
        result=None,
        error=None,
        callback_url=job.callback_url,
        endpoint_id=job.endpoint_id,
        notify=job.notify,
        metadata=job.metadata,
        deadline=job.deadline,
        created_at=job.created_at,
        started_at=None,
        finished_at=None,
    )


def _summary(row: Any) -> DeliverySummary:
    return DeliverySummary(
        row["id"], row["channel"], row["target"], row["status"], row["attempt_count"]
    )


def _replace_deliveries(job: Job, deliveries: tuple[DeliverySummary, ...]) -> Job:
    return replace(job, deliveries=deliveries)


def _delivery_where(where: DeliveryFilter) -> tuple[str, list[Any]]:
    clauses, params = ["(? IS NULL OR tenant = ?)"], [where.tenant, where.tenant]
    for column, value in (
        ("status", where.status),
        ("job_id", where.job_id),
        ("endpoint_id", where.endpoint_id),
        ("channel", where.channel),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(str(value))
    if where.since is not None:
        clauses.append("created_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("created_at < ?")
        params.append(where.until)
    return " AND ".join(clauses), params
