"""The PostgreSQL store's jobs: submit, read, claim with leases, finish."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from dispatcher.errors import Conflict
from dispatcher.store.filters import dollar, jobs_where
from dispatcher.store.limits import check_queue, check_share
from dispatcher.store.postgres import queries as sql
from dispatcher.store.postgres.connection import PostgresConnection
from dispatcher.store.records import (
    DeliveryStatus,
    DeliverySummary,
    Job,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
    Page,
)
from dispatcher.store.rows import dump_json, job_columns, page_of, summary_of, with_deliveries

# The queue's total is counted again at least this often, and at every
# submission once it was within NEAR_FULL of its limit, or if the limit is
# small enough that counting up to it is cheap. In between it is what was
# counted plus what this instance added since: instances that each accept
# many jobs within a second may together pass the limit by those.
TOTAL_EVERY = 1.0
NEAR_FULL = 0.9
ALWAYS_COUNT_BELOW = 10_000


@dataclass(slots=True)
class _QueueTotal:
    """This instance's idea of how many jobs are queued in all, and since when."""

    value: int = 0
    counted_at: float = -math.inf

    def must_count(self, limit: int, at: float) -> bool:
        return (
            limit <= ALWAYS_COUNT_BELOW
            or at - self.counted_at >= TOTAL_EVERY
            or self.value >= limit * NEAR_FULL
        )


class PostgresJobs(PostgresConnection):
    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        super().__init__(dsn, pool_size)
        self._total = _QueueTotal()

    async def submit_job(
        self,
        job: NewJob,
        max_queue: int,
        tenant_share: int | None = None,
        lease: Lease | None = None,
    ) -> tuple[Job, bool]:
        share = tenant_share or max_queue
        async with self._connection() as connection:
            if job.idempotency_key is not None:
                # A repeat is answered with the first job even when the queue is full.
                first = await connection.fetchrow(
                    sql.FIND_IDEMPOTENT, job.tenant, job.idempotency_key
                )
                if first is not None:
                    return await _repeat(connection, job, first)
            # Counted and inserted in one statement, not under a lock: instances
            # submitting at the same moment may each see room for the last place,
            # so the queue can pass its limit by a few jobs. A limit that keeps the
            # backlog in bounds allows that; serialising submissions would cost more.
            # The tenant's own jobs are counted every time (through their index:
            # a tenant's backlog costs only its own submissions); the total, which
            # costs every tenant alike, once a second, or each time near the limit.
            at = time.monotonic()
            counting = self._total.must_count(max_queue, at)
            owner, seconds = (lease.owner, lease.seconds) if lease else (None, None)
            columns = job_columns(job, owner, seconds)
            params = (*columns, max_queue, share, counting)
            row = await connection.fetchrow(sql.SUBMIT_JOB, *params)
            if counting and at >= self._total.counted_at:
                self._total = _QueueTotal(row["queued_total"], at)
            if row["id"] is None:
                _no_room(row, max_queue, share)
                # Another instance's job took the key since it was looked up.
                first = await connection.fetchrow(
                    sql.FIND_IDEMPOTENT, job.tenant, job.idempotency_key
                )
                return await _repeat(connection, job, first)
        self._committed()
        if lease is None:
            self._total.value += 1
        return Job.from_row(row), True

    async def get_job(self, job_id: str, tenant: str | None) -> Job | None:
        async with self._connection() as connection:
            return await _read_job(connection, job_id, tenant)

    async def list_jobs(self, where: JobFilter) -> Page:
        clause = jobs_where(where, dollar)
        query = sql.LIST_JOBS.format(where=clause.sql, limit=clause.next_placeholder())
        async with self._connection() as connection:
            rows = await connection.fetch(query, *clause.params, where.limit + 1)
            page = page_of(rows, where.limit, lambda row: row["id"])
            jobs = [Job.from_row(row) for row in page.items]
            if jobs:
                deliveries = await connection.fetch(sql.JOBS_DELIVERIES, [j.id for j in jobs])
                jobs = with_deliveries(jobs, deliveries)
        return Page(jobs, page.next_cursor)

    async def claim_jobs(
        self, owner: str, limit: int, now: float, lease: float, *, skip_tenants: Sequence[str] = ()
    ) -> list[Job]:
        # One statement: atomic on its own, without BEGIN and COMMIT.
        async with self._connection() as connection:
            rows = await connection.fetch(
                sql.CLAIM_JOBS, owner, lease, now, limit, list(skip_tenants)
            )
        self._committed()
        rows = sorted(rows, key=lambda row: row["due"])
        return [Job.from_row(row) for row in rows]

    async def finish_job(
        self,
        job_id: str,
        owner: str | None,
        outcome: Outcome,
        lease: Lease | None = None,
        leased: frozenset[str] = frozenset(),
    ) -> Job | None:
        at = outcome.finished_at
        values = (
            str(outcome.status),
            dump_json(outcome.result),
            dump_json(outcome.error),
            at,
            outcome.event_body,
            job_id,
        )
        query = sql.FINISH_QUEUED_JOB if owner is None else sql.FINISH_RUNNING_JOB
        async with self._connection() as connection:
            row = await connection.fetchrow(
                query, *values, owner, *_delivery_columns(outcome, lease, leased)
            )
        if row is None:
            return None
        self._committed()
        job = Job.from_row(row)
        summaries = tuple(
            DeliverySummary(d.id, str(d.channel), d.target, DeliveryStatus.PENDING, 0)
            for d in outcome.deliveries
        )
        return replace(job, deliveries=summaries)

    async def requeue_job(self, job_id: str, owner: str, run_at: float) -> None:
        async with self._transaction() as connection:
            await connection.execute(sql.REQUEUE_JOB, run_at, job_id, owner)

    async def release_jobs(self, owner: str, job_ids: list[str]) -> None:
        if not job_ids:
            return
        async with self._transaction() as connection:
            await connection.execute(sql.RELEASE_JOBS, list(job_ids), owner)

    async def expired_deadlines(self, now: float, limit: int) -> list[Job]:
        rows = await self._fetch(sql.EXPIRED_DEADLINES, now, limit)
        return [Job.from_row(row) for row in rows]


def _no_room(counts: Any, total: int, share: int) -> None:
    """QueueFull if the queue was at its limit, or the tenant at its share of it."""
    check_queue(counts["queued_total"], total)
    check_share(counts["queued_mine"], share)


async def _repeat(connection: Any, job: NewJob, first: Any) -> tuple[Job, bool]:
    """The answer to a repeated idempotency key: the first job, unless the request differs."""
    if first["request_hash"] != job.request_hash:
        raise Conflict("this Idempotency-Key was already used with a different request")
    found = await _read_job(connection, first["id"], job.tenant)
    assert found is not None
    return found, False


async def _read_job(connection: Any, job_id: str, tenant: str | None) -> Job | None:
    row = await connection.fetchrow(sql.GET_JOB, job_id, tenant)
    if row is None:
        return None
    summaries = await connection.fetch(sql.JOB_DELIVERIES, job_id)
    return Job.from_row(row, tuple(summary_of(s) for s in summaries))


def _delivery_columns(
    outcome: Outcome, lease: Lease | None, leased: frozenset[str]
) -> list[list[Any]]:
    """The deliveries a job's end makes, as one array per column (see FINISH_*_JOB)."""
    columns: list[list[Any]] = [[] for _ in range(9)]
    for d in outcome.deliveries:
        taken = lease is not None and d.id in leased
        row = (
            d.id,
            str(d.channel),
            d.target,
            d.endpoint_id,
            d.event_type,
            d.body,
            d.host,
            lease.owner if taken and lease else None,
            lease.seconds if taken and lease else None,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns
