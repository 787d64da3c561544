"""Durable 202s per second from `POST /v1/jobs`, next to a bare aiohttp baseline.

Both servers run as separate processes on loopback; the same client loop posts
the same body with the same concurrency to each, so the ratio is what the
store, validation and auth cost. Figures are printed; nothing is asserted.

    python benchmarks/submit.py [--requests 20000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time

import aiohttp

ADMIN_KEY = "dk_benchmark_admin_key_000000"
BODY = b'{"type": "echo", "payload": {"n": 1}}'

BASELINE = """
import sys
from aiohttp import web
async def accept(request):
    await request.read()
    return web.json_response({"id": "job_x", "status": "queued"}, status=202)
app = web.Application()
app.router.add_post("/v1/jobs", accept)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def hammer(base: str, requests: int, concurrency: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    left = requests
    failures = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal left, failures
        while left > 0:
            left -= 1
            async with session.post(f"{base}/v1/jobs", data=BODY, headers=headers) as response:
                await response.read()
                failures += response.status != 202

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, failures


async def measure(command: list[str], env: dict[str, str], port: int, args: argparse.Namespace):
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_ready(f"{base}/healthz" if "serve" in command else f"{base}/v1/jobs")
        await hammer(base, min(2000, args.requests), args.concurrency)  # warm up
        return await hammer(base, args.requests, args.concurrency)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    port = free_port()
    baseline, _ = await measure(
        [sys.executable, "-c", BASELINE, str(port)], dict(os.environ), port, args
    )
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "DISPATCHER_PORT": str(port),
            "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
            "DISPATCHER_LOG_LEVEL": "WARNING",
            "DISPATCHER_MAX_QUEUE": str(10 * args.requests),
        }
        command = [sys.executable, "-m", "dispatcher.cli", "serve"]
        rate, failures = await measure(command, env, port, args)
    print(f"bare aiohttp 202s/s:        {baseline:10.0f}")
    print(f"dispatcher durable 202s/s:  {rate:10.0f}   (non-202: {failures})")
    print(f"ratio dispatcher/baseline:  {rate / baseline:10.2f}")


if __name__ == "__main__":
    asyncio.run(main())
