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
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from yarl import URL

from benchmarks.load import post_all, received, reset
from benchmarks.service import Service

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
