"""The figures beyond the three-way comparison (`--all`), one function each."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from benchmarks import seed
from benchmarks.load import post_all, received, reset
from benchmarks.processes import Child, answering, free_port
from benchmarks.service import Service, end_to_end
from dispatcher.delivery.deliverer import CLAIM_WINDOW

HALF_RATE_SECONDS = 5.0
RSS_SECONDS = 10.0


async def submits(folder: Path, count: int, concurrency: int) -> dict:
    """Durable 202s per second beside a bare aiohttp server answering 202."""
    port = free_port()
    bare = Child([sys.executable, "-m", "benchmarks.bare", str(port)])
    service = Service(folder)
    try:
        await answering(f"http://127.0.0.1:{port}/readyz")
        body = service.job(None)
        sent = await post_all(
            count, concurrency, lambda i: (f"http://127.0.0.1:{port}/v1/jobs", body, {}), expect=202
        )
        await service.start()
        await service.tenant()
        durable = await service.submit(count, concurrency, lambda i: None)
        if durable.unexpected:
            raise RuntimeError(f"submits: {durable.unexpected} answers were not 202")
        return {"bare_202_per_s": sent.rate, "durable_202_per_s": durable.rate}
    finally:
        bare.stop()
        service.stop()


async def latency(folder: Path, receiver: str, rate: float, concurrency: int) -> dict:
    """Job finished → callback received, at a steady `rate` of submissions."""
    service = Service(folder)
    try:
        await service.start()
        await service.tenant()
        count = max(20, int(rate * HALF_RATE_SECONDS))
        run = await end_to_end(service, receiver, count, concurrency, rate=rate)
        ms = sorted(1000 * x for x in run["latencies"])
        return {
            "rate_per_s": rate,
            "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        }
    finally:
        service.stop()


async def claims(folder: Path, pending: int, receiver: str) -> tuple[dict, Path]:
    """Claim time with 10,000 and with `pending` due deliveries; the big database too."""
    small, big = folder / "small.db", folder / "big.db"
    await seed.backlog(small, min(10_000, pending), f"{receiver}/hook")
    built = await seed.backlog(big, pending, f"{receiver}/hook")
    at_small, at_big = await seed.claim_ms(small), await seed.claim_ms(big)
    full = [(seed.TENANT, receiver.split("/")[2])]
    windowed = await seed.claim_ms(big, rounds=5, skip_routes=full, window=CLAIM_WINDOW)
    everything = await seed.claim_ms(big, rounds=3, skip_routes=full)
    figures = {"pending": pending, "build_s": built, "claim_ms_10k": at_small,
               "claim_ms_big": at_big, "ratio": at_big / at_small,
               "passing_ms_big": windowed, "passing_all_ms_big": everything}  # fmt: skip
    return figures, big


async def backlog_rss(folder: Path, database: Path, receiver: str) -> dict:
    """Serve a database with a large backlog for a while: peak memory and throughput."""
    service = Service(folder, DISPATCHER_DATABASE_URL=f"sqlite:///{database}")
    await reset(receiver)
    try:
        ready = await service.start()
        started = time.time()
        figures = await received(receiver, 10**9, timeout=RSS_SECONDS)
        assert service.child is not None
        return {"ready_s": ready, "peak_rss_mb": service.child.peak_rss_mb(),
                "deliveries_per_s": figures["count"] / (time.time() - started)}  # fmt: skip
    finally:
        service.stop()


async def hanging(folder: Path, receiver: str, count: int, concurrency: int) -> dict:
    """Healthy webhooks per second while every tenth callback goes to a receiver that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the dispatcher gives up and closes

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hang = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    service = Service(folder)
    try:
        await service.start()
        await service.tenant()
        await reset(receiver)
        healthy = count - count // 10
        sent = await service.submit(
            count, concurrency, lambda i: hang if i % 10 == 9 else f"{receiver}/hook"
        )
        figures = await received(receiver, healthy)
        if figures["count"] < healthy:
            raise RuntimeError(f"hanging: {figures['count']}/{healthy} healthy arrived")
        return {"healthy_per_s": healthy / (figures["last"] - sent.started)}
    finally:
        service.stop()
        server.close()
        for writer in held:
            writer.close()


async def restart(folder: Path, pending: int, receiver: str) -> dict:
    """kill -9 mid-backlog, start again: time to ready and to the first delivery."""
    database = folder / "restart.db"
    await seed.backlog(database, pending, f"{receiver}/hook")
    settings = {"DISPATCHER_DATABASE_URL": f"sqlite:///{database}"}
    first = Service(folder, **settings)
    await reset(receiver)
    try:
        await first.start()
        if (await received(receiver, 100, timeout=60))["count"] < 100:
            raise RuntimeError("restart: the first process delivered nothing")
    finally:
        if first.child is not None:
            first.child.kill()
    await reset(receiver)
    second = Service(folder, **settings)
    try:
        spawned = time.time()
        ready = await second.start()
        arrived = await received(receiver, 1, timeout=60)
        if arrived["count"] < 1:
            raise RuntimeError("restart: nothing delivered after the restart")
        return {
            "pending": pending,
            "ready_s": ready,
            "first_delivery_s": arrived["first"] - spawned,
        }
    finally:
        second.stop()
