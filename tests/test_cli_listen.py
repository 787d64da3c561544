"""`dispatcher listen`: the installed script as a local receiver, fed real HTTP requests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from dispatcher.webhooks import generate_secret, generate_signing_key, sign
from tests.support.process import DISPATCHER
from tests.test_cli import BODY, run_cli


@dataclass
class Listener:
    url: str
    secret: str
    lines: asyncio.Queue[str]  # stdout
    errors: asyncio.Queue[str]  # stderr after the banner

    async def next_line(self) -> str:
        return await asyncio.wait_for(self.lines.get(), 10)

    async def next_error(self) -> str:
        return await asyncio.wait_for(self.errors.get(), 10)


async def _pump(stream: asyncio.StreamReader | None, into: asyncio.Queue[str]) -> None:
    assert stream is not None
    async for line in stream:
        await into.put(line.decode())


@pytest.fixture
async def start_listener() -> AsyncIterator[Callable[..., Awaitable[Listener]]]:
    """Start `dispatcher listen --port 0` with these extra arguments; stopped after the test."""
    procs: list[asyncio.subprocess.Process] = []
    readers: list[asyncio.Task[None]] = []

    async def start(*extra: str) -> Listener:
        secret = generate_secret()
        proc = await asyncio.create_subprocess_exec(
            *(DISPATCHER, "listen", "--port", "0", "--secret", secret, *extra),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stderr is not None
        banner = (await asyncio.wait_for(proc.stderr.readline(), 10)).decode()
        found = re.search(r"http://127\.0\.0\.1:\d+/", banner)
        assert found, banner
        listener = Listener(found[0], secret, asyncio.Queue(), asyncio.Queue())
        readers.append(asyncio.create_task(_pump(proc.stdout, listener.lines)))
        readers.append(asyncio.create_task(_pump(proc.stderr, listener.errors)))
        return listener

    try:
        yield start
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        await asyncio.gather(*readers)


@pytest.fixture
async def listener(start_listener: Callable[..., Awaitable[Listener]]) -> Listener:
    return await start_listener()


async def post(url: str, headers: dict[str, str], body: str | bytes = BODY) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "hook", data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


def signed(listener: Listener, msg_id: str, body: str = BODY) -> dict[str, str]:
    return sign(listener.secret, msg_id, int(time.time()), body)


async def test_listen_accepts_and_prints_a_signed_webhook(listener):
    assert (await post(listener.url, signed(listener, "msg_listen")))[0] == 200

    line = await listener.next_line()
    assert "msg_listen" in line
    assert "job.succeeded" in line
    assert line.rstrip().endswith(" verified")


async def test_listen_rejects_an_unsigned_webhook_without_printing_its_body(listener):
    headers = {"webhook-id": "msg_unsigned", "webhook-timestamp": str(int(time.time()))}

    status, answer = await post(listener.url, headers)

    assert status == 401
    line = await listener.next_line()
    assert "msg_unsigned" in line
    assert "not verified" in line
    assert "job.succeeded" not in line
    assert "job.succeeded" not in answer


async def test_listen_never_prints_a_body_signed_by_another_secret(listener):
    body = json.dumps({"type": "forged-type-0xC0FFEE", "data": {"note": "forged-note"}})
    headers = sign(generate_secret(), "msg_forged", int(time.time()), body)

    status, answer = await post(listener.url, headers, body)

    assert status == 401
    line = await listener.next_line()
    assert "msg_forged" in line
    assert "not verified (no matching signature" in line
    assert "forged" not in line.replace("msg_forged", "")
    assert "forged-type" not in answer


async def test_listen_answers_401_to_any_method_and_prints_it(listener):
    async with aiohttp.ClientSession() as session, session.get(listener.url) as response:
        assert response.status == 401
    assert "not verified" in await listener.next_line()


async def test_listen_reports_a_malformed_request_in_one_line(listener):
    port = int(listener.url.rstrip("/").rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # aiohttp answers 400 and closes
    writer.close()
    await writer.wait_closed()

    line = await listener.next_error()

    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert "Traceback" not in line
    assert "BadHttpMessage" in line
    assert listener.errors.empty(), listener.errors.get_nowait()


# --print-json


async def test_print_json_prints_each_verified_body_as_one_line_and_nothing_else(
    start_listener,
):
    listener = await start_listener("--print-json")
    forged = sign(generate_secret(), "msg_forged", int(time.time()), BODY)
    pretty = json.dumps(json.loads(BODY), indent=2)  # a body over several lines

    assert (await post(listener.url, forged))[0] == 401
    assert "msg_forged  not verified" in await listener.next_error()
    assert (await post(listener.url, signed(listener, "msg_json", pretty), pretty))[0] == 200

    assert json.loads(await listener.next_line()) == json.loads(BODY)
    assert "msg_json  job.succeeded  verified" in await listener.next_error()
    assert listener.lines.empty(), listener.lines.get_nowait()


# --save


async def test_a_saved_request_verifies_with_dispatcher_verify(start_listener, tmp_path):
    listener = await start_listener("--save", str(tmp_path / "hooks"))
    assert (await post(listener.url, signed(listener, "msg_saved")))[0] == 200

    line = await listener.next_line()
    saved = tmp_path / "hooks" / "msg_saved.http"
    assert line.rstrip().endswith(f"saved {saved}"), line
    result = await run_cli("verify", "--secret", listener.secret, stdin=saved.read_bytes())

    assert result.code == 0, result.err
    assert result.out == "verified: msg_saved  job.succeeded\n"
    assert saved.read_bytes().startswith(b"POST /hook HTTP/1.1\r\n")


async def test_a_chunked_request_is_saved_with_its_length(start_listener, tmp_path):
    listener = await start_listener("--save", str(tmp_path))

    async def chunks() -> AsyncIterator[bytes]:
        for part in (BODY[:10], BODY[10:]):
            yield part.encode()

    status, _ = await post(listener.url, signed(listener, "msg_chunked"), chunks())
    assert status == 200
    await listener.next_line()
    raw = (tmp_path / "msg_chunked.http").read_bytes()

    assert b"transfer-encoding" not in raw.lower()
    assert f"Content-Length: {len(BODY)}\r\n".encode() in raw
    result = await run_cli("verify", "--secret", listener.secret, stdin=raw)
    assert result.code == 0, result.err


async def test_a_repeated_webhook_id_is_saved_beside_the_first(start_listener, tmp_path):
    listener = await start_listener("--save", str(tmp_path))

    for _ in range(2):
        assert (await post(listener.url, signed(listener, "msg_twice")))[0] == 200
        await listener.next_line()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["msg_twice-2.http", "msg_twice.http"]


async def test_an_unverified_request_is_saved_and_verify_refuses_it(start_listener, tmp_path):
    listener = await start_listener("--save", str(tmp_path))
    forged = sign(generate_secret(), "msg_forged", int(time.time()), BODY)

    assert (await post(listener.url, forged))[0] == 401
    await listener.next_line()
    result = await run_cli(
        "verify", "--secret", listener.secret, stdin=(tmp_path / "msg_forged.http").read_bytes()
    )

    assert result.code == 1
    assert result.err.startswith("dispatcher: not verified: no matching signature")


async def test_a_webhook_id_that_is_not_a_file_name_is_saved_as_request(start_listener, tmp_path):
    hooks = tmp_path / "hooks"
    listener = await start_listener("--save", str(hooks))
    headers = {"webhook-id": "../../escaped", "webhook-timestamp": str(int(time.time()))}

    assert (await post(listener.url, headers))[0] == 401
    await listener.next_line()

    assert [p.name for p in hooks.iterdir()] == ["request.http"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hooks"]


async def test_saved_requests_are_readable_only_by_their_owner(start_listener, tmp_path):
    listener = await start_listener("--save", str(tmp_path))
    assert (await post(listener.url, signed(listener, "msg_private")))[0] == 200
    await listener.next_line()

    assert os.stat(tmp_path / "msg_private.http").st_mode & 0o077 == 0


async def test_listen_takes_an_ed25519_endpoints_public_key(start_listener):
    private, public = generate_signing_key()
    listener = await start_listener("--secret", public)
    headers = sign(private, "msg_ed25519", int(time.time()), BODY)
    assert headers["webhook-signature"].startswith("v1a,")
    status, _ = await post(listener.url, headers)
    assert status == 200
    assert "msg_ed25519" in await listener.next_line()
    forged = sign(generate_signing_key()[0], "msg_forged", int(time.time()), BODY)
    status, _ = await post(listener.url, forged)
    assert status == 401
