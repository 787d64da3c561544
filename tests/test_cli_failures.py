"""Every way the command line can fail ends in one line on stderr and a non-zero exit.

The real command runs in a subprocess, against scripted servers on loopback.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from aiohttp import web

from tests.support.process import DISPATCHER
from tests.test_cli import Result, run_cli
from tests.test_client import silent_server

REFUSED = "http://127.0.0.1:9"  # never reached: these fail before connecting


def assert_one_line_failure(result: Result, *expected: str) -> None:
    assert result.code != 0, result
    assert result.out == "", result
    assert "Traceback" not in result.err, result.err
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), result.err
    for text in expected:
        assert text in result.err, result.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("deliveries", "list", "--since", "99999999999d"), "before the year 1"),
        (("deliveries", "list", "--since", "999999d"), "before the year 1"),
        (("deliveries", "list", "--since", "9" * 40 + "d"), "neither a duration"),
        (("deliveries", "list", "--until", "9999-12-31T23:00:00-05:00"), "out of range"),
        (("deliveries", "replay", "--status", "failed", "--since", "0001-01-01T00:00+05:00"), ""),
        (("deliveries", "list", "--since", "2026-13-01T00:00:00Z"), "RFC 3339"),
        (("deliveries", "list", "--since", "2026-01-01T00:00:00"), "with an offset"),
        (("deliveries", "list", "--limit", "0"), "positive"),
        (("--timeout", "nan", "deliveries", "list"), "--timeout"),
        (("deliveries", "list", "--timeout", "1e999"), "--timeout"),
        (("listen", "--port", "0", "--secret", "whsec_QUJD", "--tolerance", "nan"), "tolerance"),
        (("listen", "--port", "70000", "--secret", "whsec_QUJD"), "port"),
        (("deliveries", "explode"), "invalid choice"),
        (("jobs", "submit", "echo", "--payload", "{"), "not JSON"),
        (("jobs", "submit", "echo", "--payload", "NaN"), "not JSON"),
        (("jobs", "submit", "echo", "--payload", "@/no/such/file.json"), "cannot read"),
        (("jobs", "list", "--status", "done"), "invalid choice"),
        (("keys", "create"), "--tenant"),
        (("serve", "--port", "99999"), "port"),
        (("serve", "--workers", "0"), "positive"),
        (("listen", "--port", "0", "--secret", "whsec_QUJD", "--save", "/proc/x"), "--save"),
    ],
)
async def test_bad_arguments_fail_in_one_line(args, expected):
    result = await run_cli(*args, url=REFUSED)

    assert_one_line_failure(result, expected)
    assert result.code == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DISPATCHER_TIMEOUT": "soon"}, "DISPATCHER_TIMEOUT"),
        ({"DISPATCHER_TIMEOUT": "-3"}, "DISPATCHER_TIMEOUT"),
        ({"DISPATCHER_URL": "http://[::1"}, "DISPATCHER_URL"),
        ({"DISPATCHER_URL": "http://127.0.0.1:99999"}, "DISPATCHER_URL"),
        ({"DISPATCHER_URL": "ftp://127.0.0.1/"}, "DISPATCHER_URL"),
        ({"DISPATCHER_KEY": "dk_with\x01control"}, "DISPATCHER_KEY"),
    ],
)
async def test_bad_environment_fails_in_one_line(env, expected):
    result = await run_cli("deliveries", "list", url=REFUSED, env=env)

    assert_one_line_failure(result, expected)
    assert "\x01" not in result.err


async def scripted(aiohttp_server: Any, status: int, body: str, content_type: str) -> str:
    """A server that answers every request with this status and body."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (500, "<html>\n<h1>Internal\nServer Error</h1>\n</html>", "text/html", "HTTP 500"),
        (502, "", "text/plain", "HTTP 502"),
        (503, "\x1b[31mred\x1b[0m\nand more", "text/plain", "HTTP 503"),
        (200, "<html>not json</html>", "text/html", "not JSON"),
        (200, "[" * 100_000 + "]" * 100_000, "application/json", "not JSON"),
        (200, "[]", "application/json", "unexpected answer"),
        (200, '{"items": "nope"}', "application/json", "unexpected answer"),
        (200, '{"items": [1, 2]}', "application/json", "unexpected answer"),
    ],
)
async def test_bad_server_answers_fail_in_one_line(
    aiohttp_server, status, body, content_type, expected
):
    url = await scripted(aiohttp_server, status, body, content_type)

    result = await run_cli("deliveries", "list", url=url)

    assert_one_line_failure(result, expected)
    assert "\x1b" not in result.err


async def test_bad_show_and_replay_answers_fail_in_one_line(aiohttp_server):
    url = await scripted(aiohttp_server, 200, '"just a string"', "application/json")

    commands = [
        ("deliveries", "show", "msg_x"),
        ("deliveries", "replay", "--status", "failed"),
        ("deliveries", "replay", "msg_x"),
        ("keys", "create", "--tenant", "acme"),
        ("keys", "list"),
        ("jobs", "submit", "echo"),
        ("jobs", "get", "job_x"),
        ("jobs", "list"),
        ("jobs", "cancel", "job_x"),
    ]
    for command in commands:
        assert_one_line_failure(await run_cli(*command, url=url), "unexpected answer")


async def test_silent_server_times_out_after_the_timeout_option():
    async with silent_server() as url:
        started = time.monotonic()
        result = await run_cli("--timeout", "1", "deliveries", "list", url=url)
        took = time.monotonic() - started

    assert_one_line_failure(result, f"dispatcher: no answer from {url} within 1s")
    assert took < 10, took


async def test_timeout_option_also_follows_the_command():
    async with silent_server() as url:
        result = await run_cli("deliveries", "show", "msg_x", "--timeout", "0.5", url=url)

    assert_one_line_failure(result, f"no answer from {url} within 0.5s")


async def test_silent_server_times_out_after_dispatcher_timeout():
    async with silent_server() as url:
        result = await run_cli(
            "deliveries", "replay", "--status", "failed", url=url, env={"DISPATCHER_TIMEOUT": "1"}
        )

    assert_one_line_failure(result, f"no answer from {url} within 1s")


async def test_a_reader_that_goes_away_gets_no_traceback(aiohttp_server):
    rows = ",".join(f'{{"id": "msg_{n}", "status": "failed"}}' for n in range(500))
    url = await scripted(aiohttp_server, 200, f'{{"items": [{rows}]}}', "application/json")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    env = {**os.environ, "DISPATCHER_URL": url, "DISPATCHER_KEY": "dk_x"}
    try:
        proc = await asyncio.create_subprocess_exec(
            DISPATCHER,
            *("deliveries", "list"),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), 20)

    assert proc.returncode != 0
    assert err.decode() == "", err.decode()
