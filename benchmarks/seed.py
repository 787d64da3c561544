"""Databases with a large backlog, written directly, and how long a claim takes in them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from pathlib import Path

from dispatcher.ids import new_id, rfc3339
from dispatcher.store.sqlite import SQLiteStore
from dispatcher.webhooks import generate_secret

TENANT = "bench"
CHUNK = 50_000


async def backlog(path: Path, pending: int, target: str) -> float:
    """A database holding `pending` due webhook deliveries to `target`; seconds it took."""
    started = time.monotonic()
    store = SQLiteStore(str(path))  # migrations, as `serve` would apply them
    await store.open()
    await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # a build, not a service: nothing to lose
    db.execute("BEGIN")
    db.execute(
        "INSERT OR IGNORE INTO tenants (name, secret, created_at) VALUES (?, ?, ?)",
        (TENANT, generate_secret(), time.time()),
    )
    host = target.split("/")[2]
    for first in range(0, pending, CHUNK):
        jobs, deliveries = _rows(min(CHUNK, pending - first), target, host)
        db.executemany(_INSERT_JOB, jobs)
        db.executemany(_INSERT_DELIVERY, deliveries)
    db.execute("COMMIT")
    db.close()
    return time.monotonic() - started


def _rows(count: int, target: str, host: str) -> tuple[list[tuple], list[tuple]]:
    at = time.time() - 60
    # One small event body for all (a million 1 KB bodies would be gigabytes to
    # write first): what is sent does not change what a claim costs.
    data = {"type": "echo", "status": "succeeded", "result": 1, "finished_at": rfc3339(at)}
    body = json.dumps({"type": "job.succeeded", "timestamp": rfc3339(at), "data": data}).encode()
    payload = "1"
    jobs, deliveries = [], []
    for _ in range(count):
        job_id = new_id("job")
        jobs.append((job_id, TENANT, payload, at, at, at, body))
        deliveries.append((new_id("msg"), TENANT, job_id, target, at, at, host))
    return jobs, deliveries


_INSERT_JOB = """
INSERT INTO jobs (id, tenant, type, status, payload, created_at, run_at, finished_at, event_body)
VALUES (?, ?, 'echo', 'succeeded', ?, ?, ?, ?, ?)
"""
_INSERT_DELIVERY = """
INSERT INTO deliveries (id, tenant, job_id, channel, target, event_type, status,
                        next_attempt_at, created_at, host)
VALUES (?, ?, ?, 'webhook', ?, 'job.succeeded', 'pending', ?, ?, ?)
"""


async def claim_ms(path: Path, rounds: int = 30, size: int = 64, **passing: object) -> float:
    """Median milliseconds for the store to claim `size` due deliveries (handed back after).

    With `passing` (the deliverer's skip_routes and window), the claim passes
    over the backlog's receiver, as when its share is in flight, and finds nothing.
    """
    store = SQLiteStore(str(path))
    await store.open()
    try:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            claimed = await store.claim_deliveries("bench", size, time.time(), 30.0, **passing)
            times.append((time.perf_counter() - started) * 1000)
            assert len(claimed) == (0 if passing else size), len(claimed)
            await store.release_deliveries("bench", [due.delivery.id for due in claimed])
        return statistics.median(times)
    finally:
        await store.close()


if __name__ == "__main__":  # a quick look: python -m benchmarks.seed PATH N
    import sys

    print(asyncio.run(backlog(Path(sys.argv[1]), int(sys.argv[2]), "http://127.0.0.1:9/hook")))
