"""The client side: many concurrent POSTs, as fast as they go or at a steady rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

Request = Callable[[int], tuple[str, bytes, dict[str, str]]]


@dataclass
class Sent:
    started: float  # time.time() of the first request
    ended: float  # time.time() when the last answer came
    count: int
    unexpected: int  # answers with another status than wanted

    @property
    def rate(self) -> float:
        return self.count / max(self.ended - self.started, 1e-9)


async def post_all(
    count: int,
    concurrency: int,
    request: Request,
    *,
    expect: int,
    rate: float | None = None,
) -> Sent:
    """POST `count` requests, `concurrency` at a time; `rate` per second if given."""
    next_index = 0
    unexpected = 0
    started = time.time()

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, unexpected
        while next_index < count:
            index = next_index
            next_index += 1
            if rate is not None:
                delay = started + index / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            url, body, headers = request(index)
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                unexpected += response.status != expect

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return Sent(started, time.time(), count, unexpected)


async def received(receiver: str, count: int, timeout: float = 600) -> dict:
    """The receiver's figures once `count` webhooks arrived (or the timeout passed)."""
    async with aiohttp.ClientSession() as session:
        url = f"{receiver}/wait?n={count}&timeout={timeout}"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout + 10)) as answer:
            return await answer.json()


async def reset(receiver: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{receiver}/reset") as answer:
        answer.raise_for_status()
