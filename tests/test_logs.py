"""Logs: one JSON object per line on request, and never a key from a URL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from dispatcher import logs
from dispatcher.app import create_app
from dispatcher.cli import operator_secrets
from dispatcher.settings import Settings
from tests.conftest import ADMIN_KEY, Api, settings_for, wait_for


def test_json_format_is_one_object_per_line_with_extras(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("json", "INFO")
    try:
        logging.getLogger("dispatcher.test").info(
            "job.finished", extra={"action": "job.finished", "job_id": "job_1"}
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "job.finished"
    assert record["job_id"] == "job_1"
    assert record["level"] == "INFO"


async def test_access_log_leaves_out_the_query_string(
    aiohttp_server, aiohttp_client, tmp_path, caplog
):
    # aiohttp decides per connection, as it opens, whether to log: level first.
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    app = create_app(settings_for(tmp_path))
    server = await aiohttp_server(app, access_log_class=logs.AccessLogger)
    client = await aiohttp_client(server)
    api = Api(client)
    async with client.get(f"/v1/jobs?token={ADMIN_KEY}&limit=5") as response:
        assert response.status == 401  # ?token= only counts on stream routes
    status, _ = await api.call("GET", "/v1/jobs")
    assert status == 200

    def logged() -> list[logging.LogRecord]:
        # A request's line is written just after its answer is sent.
        found = [r for r in caplog.records if r.getMessage() == "http.request"]
        return found if len(found) == 2 else []

    requests = await wait_for(logged)
    assert {r.path for r in requests} == {"/v1/jobs"}
    assert {r.status for r in requests} == {401, 200}
    assert ADMIN_KEY not in caplog.text


def test_debug_level_never_lets_aiosqlite_log_statements():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("text", "DEBUG")
        assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_keys_and_tokens_are_masked_in_any_line_and_traceback(capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("json", "INFO")
    try:
        try:
            raise ValueError(f"bad request line GET /x?token={ADMIN_KEY}&a=1")
        except ValueError:
            logging.getLogger("aiohttp.server").exception(
                "Error handling request %s", "whsec_QUJDREVGR0hJSktMTU5PUFFS"
            )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert ADMIN_KEY not in line and "QUJDREVGR0hJ" not in line
    record = json.loads(line)
    assert "token=***" in record["exception"]
    assert record["event"] == "Error handling request whsec_***"


# The operator's own secrets, whatever they look like

OPERATOR_KEY = "operator-chosen-Secret-1234"


@contextlib.contextmanager
def configured(log_format: str, secrets: list[str]) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure(log_format, "INFO", secrets=secrets)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configured_secrets_are_masked_however_they_are_spelled(capsys, log_format):
    odd = 'p@ss "wörd"\\1'
    with configured(log_format, [OPERATOR_KEY, odd]):
        log = logging.getLogger("some.library")
        log.warning("bad header: %r", f"Bearer {OPERATOR_KEY}\x01".encode())
        log.warning("login with %s failed", odd, extra={"detail": f"url=smtp://u:{odd}@h"})
        log.warning("encoded %s and %s", quote(odd, safe=""), json.dumps(odd))
        try:
            raise RuntimeError(f"cannot use {OPERATOR_KEY!r}")
        except RuntimeError:
            log.exception("failed")
        log.warning("as a stack", stack_info=True, extra={"key": OPERATOR_KEY})
    err = capsys.readouterr().err

    assert "***" in err
    for spelling in (OPERATOR_KEY, odd, quote(odd, safe=""), json.dumps(odd)[1:-1], "wörd"):
        assert spelling not in err, spelling


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer tenant-credential-xyz",
        "headers={'Authorization': 'Bearer tenant-credential-xyz', 'Host': 'x'}",
        '{"authorization": "Basic tenant-credential-xyz"}',
        "proxy sent authorization=tenant-credential-xyz&next=1",
        "[('Authorization', 'Bearer tenant-credential-xyz')]",
        "b'Authorization: Bearer tenant-credential-xyz\\x01'",
        "GET /v1/events/ws?token=tenant-credential-xyz HTTP/1.1",
        "GET /v1/events/ws?a=1&access_token=tenant,credential'xyz",
        "URL('http://127.0.0.1/v1/jobs/job_x/events?token=tenant-credential-xyz')",
    ],
)
def test_authorization_values_and_tokens_are_masked_whatever_they_look_like(capsys, line):
    with configured("text", []):
        logging.getLogger("aiohttp.server").error("Error handling request: %s", line)
    err = capsys.readouterr().err

    assert "credential" not in err
    assert "***" in err


def test_serve_passes_every_secret_setting_to_the_logs():
    settings = Settings(
        admin_key=OPERATOR_KEY,
        smtp_url="smtp://mailer:p%40ss-word@mail.example:587",
        sms_auth_token="twilio-token-value",
        database_url="postgresql://app:db-pass@db.example/dispatcher",
    )

    secrets = set(operator_secrets(settings))

    assert {OPERATOR_KEY, "p%40ss-word", "p@ss-word", "twilio-token-value", "db-pass"} <= secrets


async def test_serve_never_logs_the_admin_key_from_bad_requests(serve):
    server = await serve(DISPATCHER_ADMIN_KEY=OPERATOR_KEY)
    port = int(server.url.rsplit(":", 1)[1])
    bad_header = f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_KEY}\x01\r\n"
    stream = f"GET /v1/jobs/job_x/events?token={OPERATOR_KEY} HTTP/1.1\r\nHost: x\r\n"
    bad_stream = f"GET /v1/events/ws?token={OPERATOR_KEY}\x01 HTTP/1.1\r\nHost: x\r\n"
    answers = [await raw_exchange(port, request) for request in (bad_header, stream, bad_stream)]
    assert [a.split(b" ", 2)[1] for a in answers] == [b"400", b"404", b"400"], answers

    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_code(timeout=20) == 0
    out, err = server.stdout(), server.stderr_file.read_text()

    assert "Invalid header value char" in err and "Invalid char in url query" in err, err
    assert OPERATOR_KEY not in out + err
    assert "Secret-1234" not in out + err


async def raw_exchange(port: int, request: str) -> bytes:
    """Send one raw request (no client library would send these) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.encode() + b"Connection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


def test_json_lines_have_milliseconds_and_no_repeated_fields(capsys):
    with configured("json", []):
        logging.getLogger("dispatcher.test").info(
            "job.finished", extra={"action": "job.finished", "job_id": "job_1"}
        )
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert "action" not in record, record
    assert record["time"].endswith("Z")
    assert len(record["time"].split(".")[1]) == len("123Z")


def test_a_text_line_names_its_job_before_the_traceback(capsys):
    with configured("text", []):
        try:
            raise ValueError("the disk is on fire")
        except ValueError:
            logging.getLogger("dispatcher.worker").exception(
                "job.handler_failed", extra={"action": "job.handler_failed", "job_id": "job_1"}
            )
    first, *rest = capsys.readouterr().err.strip().splitlines()
    assert first.endswith("ERROR dispatcher.worker job.handler_failed job_id=job_1"), first
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: the disk is on fire"
