"""The command line: commands that talk to a server run as subprocesses against a real app."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from dispatcher.cli import main
from dispatcher.webhooks import generate_secret, sign
from tests.conftest import ADMIN_KEY

BODY = json.dumps({"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {}})


@dataclass
class Result:
    code: int
    out: str
    err: str


async def run_cli(
    *args: str,
    url: str,
    key: str = ADMIN_KEY,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
) -> Result:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env = {**inherited, "DISPATCHER_URL": url, "DISPATCHER_KEY": key, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatcher.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Result(proc.returncode or 0, out.decode(), err.decode())


def url_of(api: Any) -> str:
    return str(api.client.make_url(""))


@pytest.fixture
async def failed(make_api: Any, make_receiver: Any) -> tuple[Any, dict[str, Any]]:
    """An app without retries and a webhook delivery that failed (500 "boom"; then 200)."""
    api = await make_api(retry_schedule="")
    receiver = await make_receiver((500, {}, "boom"), 200)
    job = await api.submit(type="echo", payload={}, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed", delivery
    return api, delivery


def raw_request(headers: dict[str, str], body: str) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST /hook HTTP/1.1\r\nhost: example.com\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body.encode())}\r\n{head}\r\n{body}"
    ).encode()


def verify_in_process(monkeypatch: Any, capsys: Any, secret: str, raw: bytes) -> Result:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    code = main(["verify", "--secret", secret])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


# keys


async def test_keys_create_prints_a_working_key(api):
    result = await run_cli("keys", "create", "--tenant", "acme", url=url_of(api))

    assert result.code == 0, result.err
    key = result.out.strip()
    assert key.startswith("dk_")
    status, _ = await api.as_key(key).call("GET", "/v1/jobs")
    assert status == 200


# deliveries


async def test_deliveries_list_shows_the_failed_delivery(failed):
    api, delivery = failed

    result = await run_cli(
        "deliveries", "list", "--status", "failed", "--since", "1h", url=url_of(api)
    )

    assert result.code == 0, result.err
    [row] = [line for line in result.out.splitlines() if delivery["id"] in line]
    assert row.split() == [
        delivery["id"],
        "failed",
        "webhook",
        delivery["target"],
        "1",
        "500",
        delivery["created_at"],
    ]


async def test_deliveries_show_prints_every_attempt(failed):
    api, delivery = failed

    result = await run_cli("deliveries", "show", delivery["id"], url=url_of(api))

    assert result.code == 0, result.err
    assert delivery["id"] in result.out
    assert re.search(r"^attempt 1 .* scheduled\s+HTTP 500", result.out, re.M), result.out
    assert "response: boom" in result.out


async def test_deliveries_replay_by_id(failed):
    api, delivery = failed

    result = await run_cli("deliveries", "replay", delivery["id"], url=url_of(api))

    assert result.code == 0, result.err
    assert result.out.strip() == "replayed 1 delivery"
    settled = await api.settled_delivery(delivery["job_id"])
    assert [a["trigger"] for a in settled["attempts"]] == ["scheduled", "manual"]


async def test_deliveries_replay_by_status_since(failed):
    api, delivery = failed

    result = await run_cli(
        "deliveries", "replay", "--status", "failed", "--since", "1h", url=url_of(api)
    )

    assert result.code == 0, result.err
    assert result.out.strip() == "replayed 1 delivery"
    settled = await api.settled_delivery(delivery["job_id"])
    assert settled["attempt_count"] == 2


async def test_unknown_delivery_fails_with_one_line(api):
    missing = "msg_" + "0" * 26

    result = await run_cli("deliveries", "show", missing, url=url_of(api))

    assert result.code != 0
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert f"no delivery {missing}" in result.err


async def test_unreachable_server_fails_with_one_line():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = await run_cli("deliveries", "list", url=url)

    assert result.code != 0
    assert result.err.count("\n") == 1
    assert "connection refused" in result.err


# verify


def test_verify_accepts_a_signed_request(monkeypatch, capsys):
    secret = generate_secret()
    headers = sign(secret, "msg_verify", int(time.time()), BODY)

    result = verify_in_process(monkeypatch, capsys, secret, raw_request(headers, BODY))

    assert result.code == 0, result.err
    assert "msg_verify" in result.out


def test_verify_rejects_a_tampered_request(monkeypatch, capsys):
    secret = generate_secret()
    headers = sign(secret, "msg_verify", int(time.time()), BODY)
    tampered = BODY.replace("succeeded", "cancelled")

    result = verify_in_process(monkeypatch, capsys, secret, raw_request(headers, tampered))

    assert result.code != 0
    assert result.err.count("\n") == 1
    assert "not verified" in result.err


# listen


@dataclass
class Listener:
    url: str
    lines: asyncio.Queue[str]  # stdout: one per request
    errors: asyncio.Queue[str]  # stderr after the banner


async def _pump(stream: asyncio.StreamReader | None, into: asyncio.Queue[str]) -> None:
    assert stream is not None
    async for line in stream:
        await into.put(line.decode())


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Listener, str]]:
    secret = generate_secret()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "dispatcher.cli", "listen", "--port", "0", "--secret", secret),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: asyncio.Queue[str] = asyncio.Queue()
    errors: asyncio.Queue[str] = asyncio.Queue()
    assert proc.stderr is not None
    readers: list[asyncio.Task[None]] = []
    try:
        banner = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+/", banner)
        assert found, banner
        readers += [
            asyncio.create_task(_pump(proc.stdout, lines)),
            asyncio.create_task(_pump(proc.stderr, errors)),
        ]
        yield Listener(found[0], lines, errors), secret
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    await asyncio.gather(*readers)


async def post(url: str, headers: dict[str, str], body: str = BODY) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "hook", data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_listen_accepts_and_prints_a_signed_webhook(listener):
    found, secret = listener
    headers = sign(secret, "msg_listen", int(time.time()), BODY)

    assert (await post(found.url, headers))[0] == 200

    line = await asyncio.wait_for(found.lines.get(), 10)
    assert "msg_listen" in line
    assert "job.succeeded" in line
    assert line.rstrip().endswith(" verified")


async def test_listen_rejects_an_unsigned_webhook_without_printing_its_body(listener):
    found, _ = listener
    headers = {"webhook-id": "msg_unsigned", "webhook-timestamp": str(int(time.time()))}

    status, answer = await post(found.url, headers)

    assert status == 401
    line = await asyncio.wait_for(found.lines.get(), 10)
    assert "msg_unsigned" in line
    assert "not verified" in line
    assert "job.succeeded" not in line
    assert "job.succeeded" not in answer


async def test_listen_never_prints_a_body_signed_by_another_secret(listener):
    found, _ = listener
    body = json.dumps({"type": "forged-type-0xC0FFEE", "data": {"note": "forged-note"}})
    headers = sign(generate_secret(), "msg_forged", int(time.time()), body)

    status, answer = await post(found.url, headers, body)

    assert status == 401
    line = await asyncio.wait_for(found.lines.get(), 10)
    assert "msg_forged" in line
    assert "not verified (no matching signature" in line
    assert "forged" not in line.replace("msg_forged", "")
    assert "forged-type" not in answer


async def test_listen_answers_401_to_any_method_and_prints_it(listener):
    found, _ = listener
    async with aiohttp.ClientSession() as session, session.get(found.url) as response:
        assert response.status == 401
    line = await asyncio.wait_for(found.lines.get(), 10)
    assert "not verified" in line


async def test_listen_reports_a_malformed_request_in_one_line(listener):
    found, _ = listener
    port = int(found.url.rstrip("/").rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # aiohttp answers 400 and closes
    writer.close()
    await writer.wait_closed()

    line = await asyncio.wait_for(found.errors.get(), 10)

    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert "Traceback" not in line
    assert "BadHttpMessage" in line
    assert found.errors.empty(), found.errors.get_nowait()
