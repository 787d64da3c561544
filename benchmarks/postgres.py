"""PostgreSQL rows: `dispatcher serve` on a fresh PostgreSQL database, one instance and two.

Two instances run on this machine, each on a port of its own, and the
clients submit round-robin to both; every webhook goes to the one receiver.
The database is made for the run and dropped after it, on the server that
`DISPATCHER_BENCH_POSTGRES_URL` names (by default this machine's, on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from yarl import URL

from benchmarks.load import post_all, received, reset
from benchmarks.service import Service
from dispatcher.ids import new_id, now
from dispatcher.store.postgres import PostgresStore
from dispatcher.store.records import NewJob

SERVER = os.environ.get(
    "DISPATCHER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


async def answers() -> bool:
    """Whether the server answers (the phase is skipped, saying so, when it does not)."""
    try:
        connection = await asyncpg.connect(SERVER, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    name = f"bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(SERVER)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield str(URL(SERVER).with_path(f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def instances(folder: Path, receiver: str, count: int, concurrency: int, n: int) -> float:
    """Jobs/s end to end, submit → webhook received, with `n` instances on one database."""
    async with fresh_database() as url:
        services = [
            Service(_folder(folder, f"i{i}"), DISPATCHER_DATABASE_URL=url) for i in range(n)
        ]
        try:
            await services[0].start()  # the first makes the schema; the others find it
            await asyncio.gather(*(service.start() for service in services[1:]))
            await services[0].tenant()
            first = services[0]
            await reset(receiver)
            body = first.job(f"{receiver}/hook")
            headers = {"Authorization": f"Bearer {first.key}", "content-type": "application/json"}

            def request(index: int) -> tuple[str, bytes, dict[str, str]]:
                return f"{services[index % n].url}/v1/jobs", body, headers

            sent = await post_all(count, concurrency, request, expect=202)
            figures = await received(receiver, count)
        finally:
            for service in services:
                service.stop()
    if sent.unexpected or figures["count"] < count:
        raise RuntimeError(
            f"postgres x{n}: {figures['count']}/{count} arrived, {sent.unexpected} not 202"
        )
    return count / (figures["last"] - sent.started)


def _folder(parent: Path, name: str) -> Path:
    folder = parent / name
    folder.mkdir()
    return folder


async def submission_under_backlog(backlog: int, count: int = 300) -> dict[str, float]:
    """One tenant's submission, in process on the store, with and without another
    tenant's `backlog` of queued jobs: median ms of each (a hostile tenant must not
    make everyone's submissions slower)."""
    figures = {}
    for label, queued in (("empty", 0), ("backlog", backlog)):
        async with fresh_database() as url:
            store = PostgresStore(url, 4)
            await store.open()
            try:
                assert store.pool is not None
                await store.pool.execute(HOG_JOBS, queued)
                await store.pool.execute("ANALYZE jobs")
                times = []
                for _ in range(count):
                    job = NewJob(
                        new_id("job"), "other", "echo", 1, None, None, None, None, None, now()
                    )
                    started = time.perf_counter()
                    await store.submit_job(job, 10 * backlog + count, backlog + count)
                    times.append((time.perf_counter() - started) * 1000)
            finally:
                await store.close()
        figures[f"submit_ms_{label}"] = statistics.median(times)
    figures["backlog"] = backlog
    return figures


# Queued jobs of one tenant, written straight into the table.
HOG_JOBS = """
INSERT INTO jobs (id, tenant, type, status, payload, created_at, run_at)
SELECT 'job_hog' || n, 'hog', 'echo', 'queued', '1', 0, 0 FROM generate_series(1, $1) AS n
"""
