"""`dispatcher serve` as a user runs it: default settings, its own SQLite file, loopback only."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from benchmarks.bodies import PAYLOAD
from benchmarks.load import Sent, post_all, received, reset
from benchmarks.processes import DISPATCHER, Child, answering, free_port

ADMIN_KEY = "dk_benchmark_admin_key_0123456789abcdef"


class Service:
    def __init__(self, folder: Path, **settings: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "DISPATCHER_DATABASE_URL": f"sqlite:///{folder / 'dispatcher.db'}",
            "DISPATCHER_PORT": str(self.port),
            "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
            "DISPATCHER_ALLOW_NETWORKS": "127.0.0.0/8",
            **settings,
        }
        self.child: Child | None = None
        self.key = ""
        self.secret = ""

    async def start(self) -> float:
        """Start serving; seconds until /readyz answers."""
        self.child = Child([DISPATCHER, "serve"], self.env, log=self.folder / "serve.log")
        return await answering(f"{self.url}/readyz", ok=300)

    async def tenant(self, name: str = "bench") -> None:
        """A key for `name`, and its signing secret."""
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/v1/keys", json={"tenant": name}, headers=headers) as answer,
        ):
            answer.raise_for_status()
            created = await answer.json()
        self.key, self.secret = created["key"], created["signing_secret"]

    def job(self, callback: str | None) -> bytes:
        import json

        body: dict = {"type": "echo", "payload": PAYLOAD}
        if callback:
            body["callback_url"] = callback
        return json.dumps(body).encode()

    async def submit(
        self, count: int, concurrency: int, callback_of, rate: float | None = None
    ) -> Sent:
        """`count` jobs; `callback_of(i)` names job i's callback URL (or None)."""
        headers = {"Authorization": f"Bearer {self.key}", "content-type": "application/json"}
        bodies = {}

        def request(index: int) -> tuple[str, bytes, dict[str, str]]:
            url = callback_of(index)
            if url not in bodies:
                bodies[url] = self.job(url)
            return f"{self.url}/v1/jobs", bodies[url], headers

        return await post_all(count, concurrency, request, expect=202, rate=rate)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


async def end_to_end(
    service: Service, receiver: str, count: int, concurrency: int, rate: float | None = None
) -> dict:
    """Submit `count` jobs, each returned as a webhook; the figures of the run."""
    await reset(receiver)
    hook = f"{receiver}/hook"
    sent = await service.submit(count, concurrency, lambda i: hook, rate=rate)
    figures = await received(receiver, count)
    if sent.unexpected or figures["count"] < count:
        raise RuntimeError(
            f"dispatcher: {figures['count']}/{count} arrived, {sent.unexpected} not 202"
        )
    assert service.child is not None
    return {
        "jobs_per_s": count / (figures["last"] - sent.started),
        "submits_per_s": sent.rate,
        "latencies": figures["latencies"],
        "peak_rss_mb": service.child.peak_rss_mb(),
        "took_s": time.time() - sent.started,
    }
