"""An endpoint's limits, enforced as its receiver counts them: rate, in flight, circuit breaker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import Api, wait_for


@dataclass
class CountingReceiver:
    """Answers `status` (after `delay`), and counts arrivals and attempts in flight."""

    status: int = 200
    delay: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # a slow receiver, not a wait for work
            return web.Response(status=self.status)
        finally:
            self.in_flight -= 1


async def counting(aiohttp_server: Any, **options: Any) -> CountingReceiver:
    receiver = CountingReceiver(**options)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = str(server.make_url("/hook"))
    return receiver


async def endpoint(api: Api, url: str, **fields: Any) -> str:
    status, body = await api.call("POST", "/v1/endpoints", json={"url": url, **fields})
    assert status == 201, body
    return str(body["id"])


async def submit_many(api: Api, endpoint_id: str, count: int) -> None:
    for n in range(count):
        await api.submit(type="echo", payload=n, endpoint_id=endpoint_id)


async def test_a_rate_limit_holds_while_another_endpoint_goes_at_full_speed(
    make_api, aiohttp_server
):
    api = await make_api(workers=16)
    paced = await counting(aiohttp_server)
    free = await counting(aiohttp_server)
    paced_id = await endpoint(api, paced.url, rate_limit=20)
    free_id = await endpoint(api, free.url)

    await submit_many(api, paced_id, 240)
    started = time.monotonic()
    await submit_many(api, free_id, 200)
    await wait_for(lambda: len(free.arrivals) == 200, timeout=20)
    free_took = time.monotonic() - started
    await wait_for(lambda: len(paced.arrivals) == 240, timeout=30)

    first = paced.arrivals[0]
    in_window = sum(1 for t in paced.arrivals if first <= t < first + 10)
    print(f"paced: {in_window} webhooks in 10 s; the other endpoint's 200 in {free_took:.2f} s")
    assert 180 <= in_window <= 220
    # The other endpoint's 200 were not paced behind the limited one's backlog
    # (20 a second would have taken 10 s).
    assert free_took < 5
    assert free.arrivals[-1] < paced.arrivals[-1]


async def test_max_in_flight_is_never_exceeded(make_api, aiohttp_server):
    api = await make_api(workers=16)
    slow = await counting(aiohttp_server, delay=0.1)
    endpoint_id = await endpoint(api, slow.url, max_in_flight=2)
    await submit_many(api, endpoint_id, 30)
    await wait_for(lambda: len(slow.arrivals) == 30, timeout=20)
    assert slow.most_in_flight == 2


async def test_a_dead_endpoint_gets_one_probe_at_a_time_then_drains_at_its_rate(
    make_api, aiohttp_server
):
    api = await make_api(workers=16, retry_schedule=",".join(["0.5"] * 20))
    dead = await counting(aiohttp_server, status=503)
    endpoint_id = await endpoint(api, dead.url, rate_limit=50)
    first = await api.submit(type="echo", payload=0, endpoint_id=endpoint_id)
    await wait_for(lambda: len(dead.arrivals) >= 1)

    async def circuit_open() -> dict[str, Any] | None:
        _, found = await api.call("GET", f"/v1/endpoints/{endpoint_id}")
        return found if found["circuit"] == "open" else None

    opened = await wait_for(circuit_open)
    assert opened["circuit_since"] is not None
    await submit_many(api, endpoint_id, 200)
    backlog_made = time.monotonic()
    # The probes go one at a time, every half second: a handful, not 200 attempts.
    await wait_for(lambda: len(dead.arrivals) >= 5, timeout=10)
    attempts_while_dead = len(dead.arrivals)
    assert dead.most_in_flight == 1
    assert attempts_while_dead <= 1 + (time.monotonic() - backlog_made) / 0.5 + 2

    _, pending = await api.call("GET", f"/v1/deliveries?endpoint_id={endpoint_id}&limit=500")
    waiting = [d for d in pending["items"] if d["attempt_count"] == 0]
    assert len(waiting) >= 195  # their schedules untouched

    dead.status = 200
    recovered = len(dead.arrivals)
    await wait_for(lambda: len(dead.arrivals) >= recovered + 200, timeout=30)
    drained = dead.arrivals[recovered:]
    took = drained[-1] - drained[0]
    print(f"{attempts_while_dead} attempts while dead; 200 drained in {took:.2f} s")
    assert took >= 200 / 50 * 0.85  # at its rate limit, not all at once

    async def all_succeeded() -> bool:
        _, listed = await api.call(
            "GET", f"/v1/deliveries?endpoint_id={endpoint_id}&status=succeeded&limit=500"
        )
        return len(listed["items"]) == 201

    await wait_for(all_succeeded, timeout=10)
    _, closed = await api.call("GET", f"/v1/endpoints/{endpoint_id}")
    assert closed["circuit"] == "closed" and closed["circuit_since"] is None
    _, job = await api.call("GET", f"/v1/jobs/{first['id']}")
    assert job["deliveries"][0]["status"] == "succeeded"


async def test_a_waiting_delivery_says_when_it_will_be_tried(make_api, aiohttp_server):
    api = await make_api(retry_schedule="30")
    dead = await counting(aiohttp_server, status=500)
    endpoint_id = await endpoint(api, dead.url)
    await api.submit(type="echo", payload=0, endpoint_id=endpoint_id)
    await wait_for(lambda: len(dead.arrivals) == 1)
    _, opened = await wait_for(
        lambda: _endpoint_if(api, endpoint_id, lambda e: e["circuit"] == "open")
    )
    job = await api.submit(type="echo", payload=1, endpoint_id=endpoint_id)
    done = await api.job(job["id"], wait=10)
    delivery = await api.delivery(done["deliveries"][0]["id"])
    assert delivery["status"] == "pending" and delivery["attempt_count"] == 0
    # No sooner than the next probe, about 30 s after the circuit opened.
    assert delivery["next_attempt_at"] > opened["circuit_since"]
    assert len(dead.arrivals) == 1


async def _endpoint_if(api: Api, endpoint_id: str, test: Any) -> tuple[int, Any] | None:
    status, found = await api.call("GET", f"/v1/endpoints/{endpoint_id}")
    return (status, found) if test(found) else None


async def test_re_enabling_or_a_new_url_closes_the_circuit_at_once(make_api, aiohttp_server):
    api = await make_api(retry_schedule="60,60,60")
    dead = await counting(aiohttp_server, status=503)
    endpoint_id = await endpoint(api, dead.url)
    await api.submit(type="echo", payload=0, endpoint_id=endpoint_id)
    await wait_for(lambda: _endpoint_if(api, endpoint_id, lambda e: e["circuit"] == "open"))
    await submit_many(api, endpoint_id, 3)  # these wait behind the circuit, a minute off

    fixed = await counting(aiohttp_server)
    status, changed = await api.call(
        "PATCH", f"/v1/endpoints/{endpoint_id}", json={"url": fixed.url}
    )
    assert status == 200 and changed["circuit"] == "closed"
    # The waiting three go to the new URL now, not after the probe a minute away.
    await wait_for(lambda: len(fixed.arrivals) == 3, timeout=10)

    dead.status = 200
    status, _ = await api.call("PATCH", f"/v1/endpoints/{endpoint_id}", json={"url": dead.url})
    assert status == 200
    await submit_many(api, endpoint_id, 1)
    await wait_for(lambda: len(dead.arrivals) >= 2, timeout=10)
