"""With DISPATCHER_LOG_FORMAT=json every line a real `dispatcher serve` writes, on stdout and
stderr, from its first line to its last, is one JSON object a log pipeline can parse."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.support.process import REPO_ROOT, free_port, serve_until_it_stops


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        record = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(record, dict), line
        assert {"time", "level", "event"} <= set(record), line
        parsed.append(record)
    return parsed


async def test_every_line_from_start_to_stop_is_json(serve, http, tmp_path, make_receiver):
    receiver = await make_receiver(500)
    # No bootstrap key: serve mints one and prints it, as a JSON line too.
    server = await serve(
        DISPATCHER_LOG_FORMAT="json",
        DISPATCHER_ADMIN_KEY=None,
        DISPATCHER_RETRY_SCHEDULE="",
        DISPATCHER_HANDLERS="tests.support.handlers",
        cwd=REPO_ROOT,
    )
    printed = json_lines(server.stdout())
    [minted] = [line for line in printed if line["event"] == "admin_key.created"]
    key = minted["key"]
    assert [line["event"] for line in printed][:2] == ["dispatcher.version", "dispatcher.database"]
    await wait_for(lambda: '"dispatcher.listening"' in server.stdout())

    headers = {"Authorization": f"Bearer {key}"}
    jobs = [
        {"type": "echo", "payload": 1, "callback_url": receiver.url + "?token=query-secret"},
        {"type": "raises", "payload": {}},
        {"type": "fail", "payload": {"message": "no"}},
    ]
    ids = []
    for job in jobs:
        async with http.session.post(server.url + "/v1/jobs", json=job, headers=headers) as r:
            assert r.status == 202, await r.text()
            ids.append((await r.json())["id"])
    await receiver.wait_for_requests(1)
    for job_id in ids:  # every job ended, and the webhook's failure is on record
        status, done = await http.call(server, "GET", f"/v1/jobs/{job_id}?wait=10", key=key)
        assert status == 200 and done["status"] in ("succeeded", "failed"), done
    status, first = await http.call(server, "GET", f"/v1/jobs/{ids[0]}", key=key)
    delivery_id = first["deliveries"][0]["id"]

    async def delivery_failed() -> bool:
        _, found = await http.call(server, "GET", f"/v1/deliveries/{delivery_id}", key=key)
        return found["status"] == "failed"

    await wait_for(delivery_failed)
    server.process.send_signal(signal.SIGTERM)
    assert await server.exit_code(timeout=20) == 0

    everything = json_lines(server.stdout()) + json_lines(server.stderr_file.read_text())
    events = {line["event"] for line in everything}
    assert {"dispatcher.listening", "http.request", "delivery.failed", "dispatcher.stopped"} <= (
        events
    )
    # A handler's traceback is inside its line, not on lines of its own.
    assert any("exception" in line for line in everything)
    stderr = server.stderr_file.read_text()
    assert "query-secret" not in stderr and key not in stderr


async def _serve_fails(tmp_path: Path, **settings: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")},
        "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
        "DISPATCHER_LOG_FORMAT": "json",
        **settings,
    }
    code, stdout, stderr = await serve_until_it_stops(env)
    assert code != 0
    json_lines(stdout)
    [line] = json_lines(stderr)
    assert line["level"] == "ERROR" and line["event"] == "dispatcher.failed"
    return str(line["reason"])


async def test_a_port_in_use_is_one_json_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reason = await _serve_fails(tmp_path, DISPATCHER_PORT=str(port))
    assert "address already in use" in reason


async def test_an_invalid_setting_is_one_json_line(tmp_path):
    reason = await _serve_fails(
        tmp_path, DISPATCHER_WORKERS="many", DISPATCHER_PORT=str(free_port())
    )
    assert "workers" in reason
