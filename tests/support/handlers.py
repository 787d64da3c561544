"""Handlers that tests load through DISPATCHER_HANDLERS."""

from __future__ import annotations

import threading
import time
from collections import Counter

from dispatcher import Retry, handler

runs: Counter[str] = Counter()
thread_names: list[str] = []


@handler("flaky", retries=2)
async def flaky(payload: dict) -> dict:
    """Asks to be retried until it has run `succeed_on` times."""
    runs[payload["name"]] += 1
    if runs[payload["name"]] < payload["succeed_on"]:
        raise Retry(after=0.05)
    return {"runs": runs[payload["name"]]}


@handler("blocking")
def blocking(payload: dict) -> dict:
    thread_names.append(threading.current_thread().name)
    time.sleep(payload["seconds"])
    return {"slept": payload["seconds"]}


@handler("too_slow", timeout=0.2)
async def too_slow(payload: dict) -> None:
    import asyncio

    await asyncio.sleep(30)


@handler("not_json")
async def not_json(payload: dict) -> object:
    return object()


@handler("raises")
async def raises(payload: dict) -> None:
    """Raises what the payload names: handlers must not be able to stop the service."""
    import asyncio

    kind = payload["kind"]
    if kind == "cancelled":
        raise asyncio.CancelledError()
    if kind == "exit":
        raise SystemExit(3)
    if kind == "timeout":
        raise TimeoutError("upstream took too long")
    raise RuntimeError(kind)


@handler("bad_result")
async def bad_result(payload: dict) -> object:
    return {"nan": float("nan")} if payload["kind"] == "nan" else {"text": "\ud800"}


@handler("stubborn", timeout=0.3)
async def stubborn(payload: dict) -> str:
    """Swallows its cancellation and carries on: its timeout must still end the job."""
    import asyncio

    for _ in range(10):  # 1 s: ends by itself, so the test's loop can close
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            continue
    return "too late"
