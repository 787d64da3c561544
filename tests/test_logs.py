"""Logs: one JSON object per line on request, and never a key from a URL."""

from __future__ import annotations

import json
import logging

from dispatcher import logs
from dispatcher.app import create_app
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
