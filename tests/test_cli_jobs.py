"""`dispatcher jobs`: the installed script against a real `dispatcher serve` process."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, wait_for
from tests.support.process import DISPATCHER, Http, Server
from tests.test_cli import labelled, one_line_failure, run_cli

# A job type that runs until the test creates the file its payload names.
GATE_MODULE = """
import asyncio
import pathlib

from dispatcher import handler


@handler("gate")
async def gate(payload):
    path = pathlib.Path(payload["open"])
    while not path.exists():
        await asyncio.sleep(0.01)
    return {"opened": True}
"""


@pytest.fixture
async def server(serve: Any, tmp_path: Path) -> Server:
    """One worker, so that a second job waits while a gate job runs."""
    (tmp_path / "cli_gate.py").write_text(GATE_MODULE)
    return await serve(cwd=tmp_path, DISPATCHER_HANDLERS="cli_gate", DISPATCHER_WORKERS="1")


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """Create this file to let every gate job finish."""
    return tmp_path / "open"


async def running_gate(http: Http, server: Server, gate: Path) -> dict[str, Any]:
    job = await http.submit(server, type="gate", payload={"open": str(gate)})

    async def running() -> bool:
        return (await http.job(server, job["id"]))["status"] == "running"

    await wait_for(running)
    return job


@pytest.fixture
async def watcher(server: Server) -> AsyncIterator[Any]:
    """Start `dispatcher jobs watch ID`; its stdout is read line by line as it comes."""
    procs: list[asyncio.subprocess.Process] = []

    async def watch(job_id: str) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env |= {"DISPATCHER_URL": server.url, "DISPATCHER_KEY": ADMIN_KEY}
        proc = await asyncio.create_subprocess_exec(
            *(DISPATCHER, "jobs", "watch", job_id),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield watch
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def next_line(proc: asyncio.subprocess.Process) -> list[str]:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()


# submit


async def test_submit_prints_the_id_of_a_job_that_then_runs(server, http):
    result = await run_cli("jobs", "submit", "echo", "--payload", '{"a": 1}', url=server.url)

    assert result.code == 0, result.err
    job_id = result.out.strip()
    assert result.out == f"{job_id}\n" and job_id.startswith("job_")
    done = await http.wait(server, job_id)
    assert done["status"] == "succeeded"
    assert done["result"] == {"a": 1}


async def test_submit_reads_the_payload_from_a_file(server, http, tmp_path):
    (tmp_path / "payload.json").write_text('{"from": "a file"}\n')

    result = await run_cli(
        "jobs", "submit", "echo", "--payload", f"@{tmp_path}/payload.json", url=server.url
    )

    assert result.code == 0, result.err
    assert (await http.job(server, result.out.strip()))["payload"] == {"from": "a file"}


async def test_submit_sends_the_callback_the_notifications_and_the_idempotency_key(server, http):
    args = (
        *("jobs", "submit", "echo", "--callback-url", "http://127.0.0.1:9/hook"),
        *("--email", "ops@example.com", "--sms", "+14155550100", "--idempotency-key", "k-1"),
    )

    first = await run_cli(*args, url=server.url)
    again = await run_cli(*args, url=server.url)

    assert first.code == 0, first.err
    assert again.out == first.out
    job = await http.job(server, first.out.strip())
    assert job["callback_url"] == "http://127.0.0.1:9/hook"
    assert job["notify"]["email"] == "ops@example.com"
    assert job["notify"]["sms"] == "+14155550100"
    assert sorted(d["channel"] for d in (await http.wait(server, job["id"]))["deliveries"]) == [
        "email",
        "sms",
        "webhook",
    ]


async def test_submit_wait_shows_the_finished_job_and_exits_0(server):
    result = await run_cli(
        "jobs", "submit", "sleep", "--payload", '{"seconds": 0.2, "result": "done"}', "--wait",
        url=server.url,
    )  # fmt: skip

    assert result.code == 0, result.err
    shown = labelled(result.out)
    assert shown["status"] == "succeeded"
    assert shown["result"] == '"done"'


async def test_submit_wait_of_a_failing_job_exits_3_with_its_error(server):
    result = await run_cli(
        "jobs", "submit", "fail", "--payload", '{"message": "boom"}', "--wait", "--json",
        url=server.url,
    )  # fmt: skip

    assert result.code == 3
    job = json.loads(result.out)
    assert job["status"] == "failed"
    assert one_line_failure(result) == f"job {job['id']} failed: JobFailed: boom"


# get and list


async def test_get_shows_status_result_and_deliveries(server, http):
    job = await http.submit(
        server, type="echo", payload={"n": 7}, callback_url="http://127.0.0.1:9/hook"
    )
    done = await http.wait(server, job["id"])

    result = await run_cli("jobs", "get", job["id"], url=server.url)
    as_json = await run_cli("jobs", "get", job["id"], "--json", url=server.url)

    assert result.code == 0, result.err
    shown = labelled(result.out)
    assert (shown["job"], shown["type"], shown["status"]) == (job["id"], "echo", "succeeded")
    assert shown["result"] == '{"n": 7}'
    assert shown["callback"] == "http://127.0.0.1:9/hook"
    [delivery] = done["deliveries"]
    assert any(line.split()[:3] == [delivery["id"], delivery["status"], "webhook"]
               for line in result.out.splitlines())  # fmt: skip
    assert json.loads(as_json.out)["id"] == job["id"]


async def test_list_filters_by_status_and_type(server, http):
    echoed = await http.submit(server, type="echo", payload={})
    failed = await http.submit(server, type="fail", payload={})
    await http.wait(server, echoed["id"])
    await http.wait(server, failed["id"])

    table = await run_cli("jobs", "list", "--status", "failed", url=server.url)
    by_type = await run_cli("jobs", "list", "--type", "echo", "--json", url=server.url)

    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "STATUS", "TYPE", "CREATED", "FINISHED"]
    assert [row.split()[:3] for row in rows] == [[failed["id"], "failed", "fail"]]
    assert [json.loads(line)["id"] for line in by_type.out.splitlines()] == [echoed["id"]]


async def test_an_empty_list_says_so(server):
    result = await run_cli("jobs", "list", "--status", "cancelled", url=server.url)

    assert (result.code, result.out) == (0, "no jobs\n")


# cancel and watch


async def test_watch_prints_each_change_as_it_happens_and_exits_0(server, http, gate, watcher):
    job = await running_gate(http, server, gate)
    proc = await watcher(job["id"])

    assert (await next_line(proc))[1:] == [job["id"], "running"]
    assert proc.returncode is None  # still watching: the job is still running
    gate.touch()
    assert (await next_line(proc))[1:] == [job["id"], "succeeded"]
    assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_a_cancelled_job_is_watched_to_its_end_and_exits_4(server, http, gate, watcher):
    await running_gate(http, server, gate)
    queued = await http.submit(server, type="echo", payload={})  # the one worker is busy

    cancelled = await run_cli("jobs", "cancel", queued["id"], url=server.url)
    watched = await watcher(queued["id"])

    assert cancelled.code == 0, cancelled.err
    assert cancelled.out == f"cancelled {queued['id']}\n"
    assert (await next_line(watched))[1:3] == [queued["id"], "cancelled"]
    assert await asyncio.wait_for(watched.wait(), 10) == 4
    assert watched.stderr is not None
    reason = (await watched.stderr.read()).decode()
    assert reason == f"dispatcher: job {queued['id']} was cancelled\n", reason


async def test_cancelling_a_running_job_fails_in_one_line(server, http, gate):
    job = await running_gate(http, server, gate)

    result = await run_cli("jobs", "cancel", job["id"], url=server.url)

    assert one_line_failure(result).endswith("only a queued job can be cancelled [HTTP 409]")


async def test_watching_a_failed_job_exits_3(server, http):
    job = await http.submit(server, type="fail", payload={"message": "boom"})
    await http.wait(server, job["id"])

    result = await run_cli("jobs", "watch", job["id"], url=server.url)

    assert result.code == 3
    assert result.out.split()[1:] == [job["id"], "failed", "JobFailed:", "boom"]
    assert one_line_failure(result) == f"job {job['id']} failed: JobFailed: boom"
