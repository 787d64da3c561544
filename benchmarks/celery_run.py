"""Run the Celery + Redis phase, if celery is installed (`pip install -e '.[bench]'`)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bodies import event
from benchmarks.load import received, reset
from benchmarks.processes import Child

WORKERS = 2


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("celery", "redis", "requests"))


async def signed_posts(receiver: str, secret: str, count: int, logs: Path) -> float:
    """Deliveries per second: from the first task sent to the last POST received."""
    import redis

    from benchmarks.celery_app import BROKER, post

    redis.Redis.from_url(BROKER).flushdb()
    worker = Child(
        [sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker",
         "--pool", "prefork", "-c", str(WORKERS), "--loglevel", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        log=logs / "celery.log",
    )  # fmt: skip
    try:
        url = f"{receiver}/hook"
        await reset(receiver)
        post.delay(url, event(-1).decode(), secret)  # warm up: the worker is ready once it lands
        if (await received(receiver, 1, timeout=60))["count"] < 1:
            raise RuntimeError("the celery worker did not start")
        await reset(receiver)
        started = time.time()
        await asyncio.to_thread(_send, post, url, secret, count)
        figures = await received(receiver, count)
        if figures["count"] < count:
            raise RuntimeError(f"celery: {figures['count']}/{count} arrived")
        return count / (figures["last"] - started)
    finally:
        worker.stop()


def _send(task: Any, url: str, secret: str, count: int) -> None:
    for index in range(count):
        task.delay(url, event(index).decode(), secret)
