"""Where a delivery really goes: the address and port a webhook connects to.

A receiver answers on many names and spellings (`localhost`, `127.1`,
`0x7f000001`, wildcard DNS); its share of the delivery slots must count them
as one. The webhook session's connector and the deliverer resolve through
one `CachingResolver`, so the address a share is counted against is, within
the cache's lifetime, the one the connector is given.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from dispatcher.delivery.netguard import literal_address
from dispatcher.store.records import Channel, Delivery

CACHE_SECONDS = 10.0
CACHE_ENTRIES = 4096


class CachingResolver(AbstractResolver):
    """DNS answers kept for a short while, in a bounded cache; failures are not kept."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()
        self._answers: OrderedDict[tuple[str, int, int], tuple[float, list[ResolveResult]]] = (
            OrderedDict()
        )

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        cached = self._answers.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._answers.move_to_end(key)
            return cached[1]
        answers = await self._inner.resolve(host, port, family)
        self._answers[key] = (time.monotonic() + CACHE_SECONDS, answers)
        self._answers.move_to_end(key)
        while len(self._answers) > CACHE_ENTRIES:
            self._answers.popitem(last=False)
        return answers

    async def close(self) -> None:
        await self._inner.close()


class Destinations:
    def __init__(self, resolver: AbstractResolver, timeout: float) -> None:
        self._resolver = resolver
        self._timeout = timeout

    async def of(self, delivery: Delivery) -> str:
        """`address:port` for a webhook (its host name if that cannot be resolved),
        the channel's name for email and SMS (the operator's one relay each)."""
        if delivery.channel is not Channel.WEBHOOK:
            return str(delivery.channel)
        try:
            url = URL(delivery.target)
        except (ValueError, TypeError):
            return delivery.target
        host, port = (url.host or "").lower(), url.port or 0
        address = literal_address(host)
        if address is not None:
            return f"{address}:{port}"
        try:
            async with asyncio.timeout(self._timeout):
                answers = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
        except (OSError, TimeoutError, ValueError):
            # The attempt will fail to connect and say why; count it by name.
            return f"{host}:{port}"
        return f"{answers[0]['host']}:{port}" if answers else f"{host}:{port}"
