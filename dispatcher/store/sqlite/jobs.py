"""The SQLite store's jobs: submit (group-committed), read, claim with leases, finish."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from dispatcher.errors import Conflict
from dispatcher.store.filters import jobs_where, question_mark
from dispatcher.store.limits import check_queue, check_share
from dispatcher.store.records import (
    DeliveryStatus,
    DeliverySummary,
    Job,
    JobFilter,
    JobStatus,
    Lease,
    NewJob,
    Outcome,
    Page,
)
from dispatcher.store.rows import dump_json, job_columns, page_of, summary_of, with_deliveries
from dispatcher.store.sqlite import queries as sql
from dispatcher.store.sqlite.connection import SQLiteConnection
from dispatcher.store.sqlite.writer import Batch


class SQLiteJobs(SQLiteConnection):
    async def submit_job(
        self,
        job: NewJob,
        max_queue: int,
        tenant_share: int | None = None,
        lease: Lease | None = None,
    ) -> tuple[Job, bool]:
        def op(batch: Batch) -> str | None:
            if job.idempotency_key is not None:
                first = _first_with_key(batch, job.tenant, job.idempotency_key)
                if first is not None:
                    if first[1] != job.request_hash:
                        raise Conflict(
                            "this Idempotency-Key was already used with a different request"
                        )
                    return first[0]
            _check_room(batch, job.tenant, max_queue, tenant_share or max_queue)
            if job.idempotency_key is not None:
                # Only now: a key is taken by a job that will be inserted.
                batch.idempotency[job.tenant, job.idempotency_key] = (job.id, job.request_hash)
            lease_end = job.created_at + lease.seconds if lease else None
            batch.defer(sql.INSERT_JOB, job_columns(job, lease.owner if lease else None, lease_end))
            batch.queued_jobs += 1  # type: ignore[operator]
            batch.queued_by_tenant[job.tenant] += 1
            return None

        existing = await self._write(op)
        if existing is not None:
            found = await self.get_job(existing, job.tenant)
            assert found is not None
            return found, False
        return _new_job_record(job, lease), True

    async def get_job(self, job_id: str, tenant: str | None) -> Job | None:
        rows = await self._read(sql.GET_JOB, (job_id, tenant, tenant))
        if not rows:
            return None
        summaries = await self._read(sql.JOB_DELIVERIES, (job_id,))
        return Job.from_row(rows[0], tuple(summary_of(row) for row in summaries))

    async def list_jobs(self, where: JobFilter) -> Page:
        clause = jobs_where(where, question_mark)
        query = f"SELECT * FROM jobs WHERE {clause.sql} ORDER BY id DESC LIMIT ?"
        rows = await self._read(query, (*clause.params, where.limit + 1))
        page = page_of(rows, where.limit, lambda row: row["id"])
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
        return with_deliveries(jobs, rows)

    async def claim_jobs(
        self, owner: str, limit: int, now: float, lease: float, *, skip_tenants: Sequence[str] = ()
    ) -> list[Job]:
        def op(batch: Batch) -> list[Job]:
            params = (owner, now + lease, now, limit, json.dumps(list(skip_tenants)))
            rows = batch.fetch(sql.CLAIM_JOBS, params)
            return [Job.from_row(row) for row in rows]

        return list(await self._write(op))

    async def finish_job(
        self,
        job_id: str,
        owner: str | None,
        outcome: Outcome,
        lease: Lease | None = None,
        leased: frozenset[str] = frozenset(),
    ) -> Job | None:
        now = outcome.finished_at

        def op(batch: Batch) -> Job | None:
            values = (
                str(outcome.status),
                dump_json(outcome.result),
                dump_json(outcome.error),
                now,
                outcome.event_body,
                job_id,
            )
            if owner is None:
                rows = batch.fetch(sql.FINISH_QUEUED_JOB, values)
            else:
                rows = batch.fetch(sql.FINISH_RUNNING_JOB, (*values, owner))
            rows = list(rows)
            if not rows:
                return None
            job = Job.from_row(rows[0])
            for d in outcome.deliveries:
                params = (d.id, job.tenant, job.id, str(d.channel), d.target, d.endpoint_id)
                values = (d.event_type, now, now, d.body, d.host)
                taken = (
                    (lease.owner, now + lease.seconds) if lease and d.id in leased else (None, None)
                )
                batch.defer(sql.INSERT_DELIVERY, (*params, *values, *taken))
            summaries = tuple(
                DeliverySummary(d.id, str(d.channel), d.target, DeliveryStatus.PENDING, 0)
                for d in outcome.deliveries
            )
            return replace(job, deliveries=summaries)

        result: Job | None = await self._write(op)
        return result

    async def requeue_job(self, job_id: str, owner: str, run_at: float) -> None:
        def op(batch: Batch) -> None:
            batch.db.execute(sql.REQUEUE_JOB, (run_at, job_id, owner))

        await self._write(op)

    async def release_jobs(self, owner: str, job_ids: list[str]) -> None:
        def op(batch: Batch) -> None:
            batch.db.executemany(sql.RELEASE_JOB, [(job_id, owner) for job_id in job_ids])

        await self._write(op)

    async def expired_deadlines(self, now: float, limit: int) -> list[Job]:
        rows = await self._read(sql.EXPIRED_DEADLINES, (now, limit))
        return [Job.from_row(row) for row in rows]


def _check_room(batch: Batch, tenant: str, total: int, share: int) -> None:
    """QueueFull past the queue's limit, or past the tenant's share of it."""
    if batch.queued_jobs is None:
        batch.queued_jobs = _count(batch, sql.COUNT_QUEUED)
    check_queue(batch.queued_jobs, total)
    if tenant not in batch.queued_by_tenant:
        batch.queued_by_tenant[tenant] = _count(batch, sql.COUNT_TENANT_QUEUED, tenant)
    check_share(batch.queued_by_tenant[tenant], share)


def _count(batch: Batch, query: str, *params: Any) -> int:
    rows = batch.fetch(query, params)
    return int(next(iter(rows))[0])


def _first_with_key(batch: Batch, tenant: str, key: str) -> tuple[str, str | None] | None:
    """The job that took an idempotency key first: in this batch, or committed before."""
    if (tenant, key) in batch.idempotency:
        return batch.idempotency[tenant, key]
    rows = batch.fetch(sql.FIND_IDEMPOTENT, (tenant, key))
    for row in rows:
        return str(row["id"]), row["request_hash"]
    return None


def _new_job_record(job: NewJob, lease: Lease | None) -> Job:
    return Job(
        id=job.id,
        tenant=job.tenant,
        type=job.type,
        status=JobStatus.QUEUED if lease is None else JobStatus.RUNNING,
        payload=job.payload,
        result=None,
        error=None,
        callback_url=job.callback_url,
        endpoint_id=job.endpoint_id,
        notify=job.notify,
        metadata=job.metadata,
        deadline=job.deadline,
        created_at=job.created_at,
        started_at=None if lease is None else job.created_at,
        finished_at=None,
    )
