"""Crashes and restarts: a real `dispatcher serve` process, killed and started again.

Each test runs the console entry point as a subprocess on a SQLite file in
`tmp_path`, with a real receiver on loopback, and holds the SPEC's
guarantees: a `202` survives `kill -9`, deliveries are made at least once,
SIGTERM gives running jobs back, the first admin key is printed once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import ADMIN_KEY, wait_for
from tests.support.process import ADMIN_KEY_LINE, REPO_ROOT, free_port

pytestmark = pytest.mark.timeout(120)


@dataclass
class Webhook:
    webhook_id: str
    raw: bytes
    body: dict[str, Any]


Answer = Callable[[str, int], Awaitable[int]]


async def always_200(webhook_id: str, nth: int) -> int:
    return 200


@dataclass
class Hooks:
    """A receiver on loopback: records every webhook, answers what `answer(id, nth)` says."""

    answer: Answer
    seen: list[Webhook] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        webhook_id = request.headers["webhook-id"]
        self.seen.append(Webhook(webhook_id, raw, json.loads(raw)))
        nth = sum(1 for hook in self.seen if hook.webhook_id == webhook_id)
        return web.Response(status=await self.answer(webhook_id, nth), text="ok")

    def job_ids(self) -> set[str]:
        return {hook.body["data"]["id"] for hook in self.seen}

    def by_job(self) -> dict[str, list[Webhook]]:
        found: dict[str, list[Webhook]] = defaultdict(list)
        for hook in self.seen:
            found[hook.body["data"]["id"]].append(hook)
        return found

    def duplicates(self) -> int:
        return len(self.seen) - len({hook.webhook_id for hook in self.seen})


@pytest.fixture
def make_hooks(aiohttp_server: Any) -> Callable[..., Awaitable[Hooks]]:
    async def make(answer: Answer = always_200) -> Hooks:
        hooks = Hooks(answer)
        app = web.Application()
        app.router.add_post("/hook", hooks.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        hooks.url = str(server.make_url("/hook"))
        return hooks

    return make


def database_rows(tmp_path: Path, job_ids: list[str]) -> dict[str, sqlite3.Row]:
    """The jobs' rows, read straight from the file of a server that has exited."""
    with closing(sqlite3.connect(tmp_path / "d.db")) as db:
        db.row_factory = sqlite3.Row
        marks = ",".join("?" * len(job_ids))
        rows = db.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids).fetchall()
    return {row["id"]: row for row in rows}


async def test_sigkill_loses_no_accepted_job(serve, make_hooks, http):
    hooks = await make_hooks()
    first = await serve()
    started = time.monotonic()

    # 150 jobs of 0.05-0.3 s on 8 workers take ~3 s: the kill lands mid-way.
    results = {i: {"seconds": 0.05 + (i % 6) * 0.05, "result": i} for i in range(150)}
    accepted = await asyncio.gather(
        *(
            http.submit(first, type="sleep", payload=payload, callback_url=hooks.url)
            for payload in results.values()
        )
    )
    expected = {job["id"]: job["payload"]["result"] for job in accepted}
    assert len(expected) == 150

    async def some_delivered() -> bool:
        return len(hooks.job_ids()) >= 8

    await wait_for(some_delivered, timeout=20)
    await first.kill()
    delivered_before_kill = len(hooks.job_ids())
    assert delivered_before_kill < 150, "every job was delivered before the kill: proves nothing"

    second = await serve()

    async def all_delivered() -> bool:
        return hooks.job_ids() >= expected.keys()

    await wait_for(all_delivered, timeout=60, every=0.05)

    assert hooks.job_ids() == expected.keys()
    for hook in hooks.seen:
        assert hook.body["type"] == "job.succeeded", hook.body
        assert hook.body["data"]["status"] == "succeeded", hook.body
        assert hook.body["data"]["result"] == expected[hook.body["data"]["id"]], hook.body

    async def all_recorded() -> dict[str, dict[str, Any]] | None:
        jobs = await http.jobs(second, list(expected))
        done = all(
            job["deliveries"] and job["deliveries"][-1]["status"] == "succeeded"
            for job in jobs.values()
        )
        return jobs if done else None

    jobs = await wait_for(all_recorded, timeout=20, every=0.1)
    by_job = hooks.by_job()
    for job_id, job in jobs.items():
        assert job["status"] == "succeeded", job
        assert job["result"] == expected[job_id], job
        [delivery] = job["deliveries"]
        assert delivery["status"] == "succeeded", job
        assert {hook.webhook_id for hook in by_job[job_id]} == {delivery["id"]}

    print(
        f"\nsigkill: {delivered_before_kill}/150 delivered before kill -9, "
        f"{len(hooks.seen)} webhooks received, {hooks.duplicates()} duplicates, "
        f"{time.monotonic() - started:.1f}s"
    )


async def test_sigkill_during_delivery_retries_is_recovered(serve, make_hooks, http):
    release = asyncio.Event()

    async def fail_then_hold(webhook_id: str, nth: int) -> int:
        if nth == 1:
            return 500
        # Retries hang until after the kill: in flight, never recorded. (Bounded,
        # so that a failing test does not hold the receiver's shutdown.)
        async with asyncio.timeout(25):
            await release.wait()
        return 200

    hooks = await make_hooks(fail_then_hold)
    first = await serve(DISPATCHER_DELIVERY_TIMEOUT="30")
    started = time.monotonic()
    jobs = [
        await http.submit(first, type="echo", payload={"n": n}, callback_url=hooks.url)
        for n in range(20)
    ]
    job_ids = [job["id"] for job in jobs]

    # A second request for a webhook-id means its failed first attempt is on disk
    # (the retry is scheduled from the row); kill while every retry is in flight.
    async def every_retry_in_flight() -> bool:
        counts = [len(received) for received in hooks.by_job().values()]
        return len(counts) == 20 and min(counts) >= 2

    await wait_for(every_retry_in_flight, timeout=20)
    await first.kill()
    release.set()
    requests_before_kill = len(hooks.seen)

    second = await serve(DISPATCHER_DELIVERY_TIMEOUT="30")

    async def all_succeeded() -> list[dict[str, Any]] | None:
        found = await http.jobs(second, job_ids)
        summaries = [found[job_id]["deliveries"] for job_id in job_ids]
        if not all(len(d) == 1 and d[0]["status"] == "succeeded" for d in summaries):
            return None
        return [await http.delivery(second, d[0]["id"]) for d in summaries]

    deliveries = await wait_for(all_succeeded, timeout=30, every=0.1)
    by_job = hooks.by_job()
    for job_id, delivery in zip(job_ids, deliveries, strict=True):
        attempts = delivery["attempts"]
        assert delivery["attempt_count"] >= 2, delivery
        assert [a["number"] for a in attempts] == list(range(1, len(attempts) + 1)), delivery
        assert len(attempts) == delivery["attempt_count"], delivery
        assert attempts[0]["status_code"] == 500, delivery
        assert attempts[-1]["status_code"] == 200, delivery
        received = by_job[job_id]
        assert len(received) >= 3, "first attempt, the retry killed in flight, the recovery"
        assert {hook.webhook_id for hook in received} == {delivery["id"]}
        assert len({hook.raw for hook in received}) == 1, "every attempt sends the same bytes"
    print(
        f"\nretries: {requests_before_kill} requests before kill -9, "
        f"{len(hooks.seen)} in all, {hooks.duplicates()} were retries of a webhook-id, "
        f"{time.monotonic() - started:.1f}s"
    )


async def test_sigterm_exits_zero_and_releases_running_jobs(serve, make_hooks, http, tmp_path):
    hooks = await make_hooks()
    # A 30 s lease: a job the next process takes at once was released, not lapsed.
    settings = {"DISPATCHER_SHUTDOWN_GRACE": "0.5", "DISPATCHER_LEASE_SECONDS": "30"}
    first = await serve(**settings, DISPATCHER_WORKERS="3")

    done = [
        await http.submit(first, type="echo", payload={"n": n}, callback_url=hooks.url)
        for n in range(2)
    ]
    done_ids = [job["id"] for job in done]

    async def delivered(count: int) -> bool:
        return len(hooks.job_ids()) >= count

    await wait_for(lambda: delivered(2), timeout=10)
    # Submitted before the quick ones, the long jobs take all three slots.
    long = [
        await http.submit(first, type="sleep", payload={"seconds": 30, "result": n})
        for n in range(3)
    ]
    long_ids = [job["id"] for job in long]
    queued = [
        await http.submit(first, type="echo", payload={"q": n}, callback_url=hooks.url)
        for n in range(3)
    ]
    queued_ids = [job["id"] for job in queued]

    async def long_running() -> dict[str, dict[str, Any]] | None:
        found = await http.jobs(first, long_ids)
        return found if all(j["status"] == "running" for j in found.values()) else None

    before = await wait_for(long_running, timeout=10)
    for job in (await http.jobs(first, queued_ids)).values():
        assert job["status"] == "queued", job

    sent = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    code = await first.exit_code(timeout=15)
    took = time.monotonic() - sent
    assert code == 0, first.stderr_tail()

    rows = database_rows(tmp_path, done_ids + long_ids + queued_ids)
    assert len(rows) == 8
    for job_id in long_ids + queued_ids:
        assert rows[job_id]["status"] == "queued", dict(rows[job_id])
        assert rows[job_id]["lease_owner"] is None, dict(rows[job_id])
    for job_id in done_ids:
        assert rows[job_id]["status"] == "succeeded", dict(rows[job_id])

    second = await serve(**settings)

    async def resumed() -> dict[str, dict[str, Any]] | None:
        found = await http.jobs(second, long_ids + queued_ids)
        again = all(
            found[j]["status"] == "running" and found[j]["started_at"] > before[j]["started_at"]
            for j in long_ids
        )
        finished = all(found[j]["status"] == "succeeded" for j in queued_ids)
        return found if again and finished else None

    # Well inside the 30 s lease: only a released job is taken this fast.
    await wait_for(resumed, timeout=10, every=0.1)
    await wait_for(lambda: delivered(5), timeout=10)
    assert hooks.job_ids() == set(done_ids + queued_ids)
    print(f"\nsigterm: exit {code} after {took:.2f}s")


async def test_sigterm_with_an_open_stream_exits_at_once_and_starts_no_job(serve, http, tmp_path):
    # The default 10 s grace: an exit within a few seconds means no stream held it.
    first = await serve(DISPATCHER_WORKERS="1", DISPATCHER_SHUTDOWN_GRACE=None)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with http.session.ws_connect(first.url + "/v1/events/ws", headers=headers) as ws:
        jobs = [
            await http.submit(first, type="sleep", payload={"seconds": 1, "result": n})
            for n in range(30)
        ]
        # Signal just after a job starts: the next one would start a second later.
        async with asyncio.timeout(10):
            while (await ws.receive_json())["status"] != "running":
                pass
        signalled_at = time.time()
        sent = time.monotonic()
        first.process.send_signal(signal.SIGTERM)

        async with asyncio.timeout(10):
            while (message := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                pass
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
    code = await first.exit_code(timeout=15)
    took = time.monotonic() - sent
    assert code == 0, first.stderr_tail()
    assert took < 5, f"exit took {took:.1f}s"

    job_ids = [job["id"] for job in jobs]
    rows = database_rows(tmp_path, job_ids)
    started_after = [
        dict(row)
        for row in rows.values()
        if row["started_at"] is not None and row["started_at"] > signalled_at
    ]
    assert started_after == []
    # The job running at the signal finished within the grace; the rest wait, unclaimed.
    assert {row["status"] for row in rows.values()} <= {"succeeded", "queued"}
    queued = [row for row in rows.values() if row["status"] == "queued"]
    assert len(queued) > len(job_ids) // 2
    assert all(row["lease_owner"] is None for row in queued), [dict(row) for row in queued]
    print(f"\nsigterm with a stream open: exit {code} after {took:.2f}s")


async def test_sigterm_does_not_wait_for_a_blocking_handler(serve, http, tmp_path):
    # A plain-def handler sleeping in its thread: the grace runs out, the job is
    # released, and the thread must not keep the process alive.
    first = await serve(
        DISPATCHER_HANDLERS="tests.support.handlers",
        DISPATCHER_SHUTDOWN_GRACE="0.5",
        PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))),
    )
    job = await http.submit(first, type="blocking", payload={"seconds": 60})

    async def running() -> bool:
        return (await http.job(first, job["id"]))["status"] == "running"

    await wait_for(running, timeout=10)
    sent = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    code = await first.exit_code(timeout=15)
    took = time.monotonic() - sent
    assert code == 0, first.stderr_tail()
    assert took < 5, f"exit took {took:.1f}s"

    row = database_rows(tmp_path, [job["id"]])[job["id"]]
    assert row["status"] == "queued", dict(row)
    assert row["lease_owner"] is None, dict(row)
    print(f"\nsigterm with a blocking handler: exit {code} after {took:.2f}s")


async def test_serve_prints_admin_key_once_on_empty_database(serve, http):
    first = await serve(DISPATCHER_ADMIN_KEY=None, DISPATCHER_SHUTDOWN_GRACE="0.5")
    keys = ADMIN_KEY_LINE.findall(first.stdout())
    assert len(keys) == 1, first.stdout()
    [key] = keys

    status, body = await http.call(first, "GET", "/v1/keys", key=key)
    assert status == 200, body
    status, _ = await http.call(first, "GET", "/v1/keys", key=key + "x")
    assert status == 401

    first.process.send_signal(signal.SIGTERM)
    assert await first.exit_code(timeout=15) == 0, first.stderr_tail()

    second = await serve(DISPATCHER_ADMIN_KEY=None, DISPATCHER_SHUTDOWN_GRACE="0.5")
    assert ADMIN_KEY_LINE.findall(second.stdout()) == [], second.stdout()
    status, body = await http.call(second, "GET", "/v1/keys", key=key)
    assert status == 200, body


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DISPATCHER_HANDLERS", "no_such_module", "no module 'no_such_module'"),
        ("DISPATCHER_SMTP_URL", "http://127.0.0.1:1", "DISPATCHER_SMTP_URL"),
    ],
)
async def test_serve_with_a_bad_setting_exits_at_once_with_one_line(
    tmp_path, variable, value, reason
):
    env = {
        **os.environ,
        "DISPATCHER_PORT": str(free_port()),
        "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path}/bad.db",
        "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
        variable: value,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher.cli", "serve",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode != 0
    [line] = stderr.decode().strip().splitlines()
    assert reason in line
