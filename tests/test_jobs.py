"""Jobs: handlers, failures, retries, timeouts, deadlines, cancel, long-poll."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import wait_for
from tests.support import handlers as sample

HANDLERS = "tests.support.handlers"


@pytest.fixture
async def handler_api(make_api):
    sample.runs.clear()
    return await make_api(handlers=HANDLERS)


async def test_job_object_has_every_field(api):
    job = await api.submit(type="echo", payload={"a": 1}, metadata={"order": 7})
    done = await api.job(job["id"], wait=5)
    assert set(done) == {
        "id", "type", "status", "payload", "result", "error", "callback_url", "endpoint_id",
        "notify", "metadata", "deadline", "created_at", "started_at", "finished_at", "deliveries",
    }  # fmt: skip
    assert done["status"] == "succeeded"
    assert done["result"] == {"a": 1}
    assert done["metadata"] == {"order": 7}
    assert done["created_at"].endswith("Z")
    assert done["started_at"] is not None and done["finished_at"] is not None


async def test_submit_answers_202_with_location(api):
    status, body = await api.call("POST", "/v1/jobs", json={"type": "echo", "payload": 1})
    assert status == 202
    async with api.client.post(
        "/v1/jobs", json={"type": "echo", "payload": None}, headers=api.headers()
    ) as response:
        assert response.status == 202
        job = await response.json()
        assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert body["id"].startswith("job_")


async def test_failing_handler_gives_failed_job_with_its_error(api):
    job = await api.submit(type="fail", payload={"message": "boom"})
    done = await api.job(job["id"], wait=5)
    assert done["status"] == "failed"
    assert done["error"] == {"type": "JobFailed", "message": "boom"}
    # The worker survived: the next job still runs.
    again = await api.submit(type="echo", payload=2)
    assert (await api.job(again["id"], wait=5))["status"] == "succeeded"


async def test_failed_job_is_delivered_as_job_failed(api, make_receiver):
    receiver = await make_receiver(200)
    await api.submit(type="fail", payload={"message": "boom"}, callback_url=receiver.url)
    [request] = await receiver.wait_for_requests(1)
    assert b'"type":"job.failed"' in request.body


async def test_long_poll_is_woken_when_the_job_finishes(api):
    job = await api.submit(type="sleep", payload={"seconds": 0.3, "result": "done"})
    started = time.monotonic()
    done = await api.job(job["id"], wait=30)
    elapsed = time.monotonic() - started
    assert done["status"] == "succeeded"
    assert done["result"] == "done"
    assert elapsed < 5, "the long-poll waited for its timeout instead of the job"


async def test_long_poll_answers_the_current_state_after_the_wait(make_api):
    api = await make_api(workers=1, shutdown_grace=0)
    await api.submit(type="sleep", payload={"seconds": 0.3})
    job = await api.submit(type="sleep", payload={"seconds": 5})
    assert (await api.job(job["id"]))["status"] == "queued"
    started = time.monotonic()
    # The job starts during the wait; the answer must say so.
    later = await api.job(job["id"], wait=1)
    assert later["status"] == "running"
    assert time.monotonic() - started >= 0.99


async def test_many_long_polls_on_one_job_are_all_woken(api):
    job = await api.submit(type="sleep", payload={"seconds": 0.5, "result": 1})
    answers = await asyncio.gather(*(api.job(job["id"], wait=30) for _ in range(200)))
    assert {a["status"] for a in answers} == {"succeeded"}


async def test_handler_retry_runs_the_job_again(handler_api):
    job = await handler_api.submit(type="flaky", payload={"name": "a", "succeed_on": 3})
    done = await handler_api.job(job["id"], wait=10)
    assert done["status"] == "succeeded"
    assert done["result"] == {"runs": 3}


async def test_handler_retry_fails_when_retries_are_spent(handler_api):
    job = await handler_api.submit(type="flaky", payload={"name": "b", "succeed_on": 10})
    done = await handler_api.job(job["id"], wait=10)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "retries_exhausted"
    assert sample.runs["b"] == 3  # the first run and two retries


async def test_job_outliving_its_timeout_fails_with_timeout(handler_api):
    job = await handler_api.submit(type="too_slow", payload={})
    done = await handler_api.job(job["id"], wait=10)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "timeout"


async def test_sync_handler_runs_off_the_event_loop(handler_api):
    job = await handler_api.submit(type="blocking", payload={"seconds": 0.5})
    # While the handler blocks its thread, the loop still answers.
    started = time.monotonic()
    status, _ = await handler_api.call("GET", "/healthz")
    assert status == 200
    assert time.monotonic() - started < 0.4
    done = await handler_api.job(job["id"], wait=10)
    assert done["result"] == {"slept": 0.5}
    assert sample.thread_names and sample.thread_names[-1] != threading.main_thread().name


async def test_result_that_is_not_json_fails_the_job(handler_api):
    job = await handler_api.submit(type="not_json", payload={})
    done = await handler_api.job(job["id"], wait=10)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "TypeError"


async def test_cancel_queued_job_delivers_job_cancelled(make_api, make_receiver):
    api = await make_api(workers=1)
    receiver = await make_receiver(200)
    blocker = await api.submit(type="sleep", payload={"seconds": 0.5})
    queued = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    status, body = await api.call("POST", f"/v1/jobs/{queued['id']}/cancel")

    assert status == 200
    assert body["status"] == "cancelled"
    [request] = await receiver.wait_for_requests(1)
    assert b'"type":"job.cancelled"' in request.body
    assert (await api.job(blocker["id"], wait=5))["status"] == "succeeded"
    assert (await api.job(queued["id"]))["status"] == "cancelled"


async def test_cancel_running_job_is_409(api):
    job = await api.submit(type="sleep", payload={"seconds": 2})

    async def running() -> bool:
        return (await api.job(job["id"]))["status"] == "running"

    await wait_for(running)
    status, body = await api.call("POST", f"/v1/jobs/{job['id']}/cancel")
    assert status == 409
    assert body["title"] == "Conflict"


async def test_job_not_started_by_its_deadline_is_cancelled(make_api, make_receiver):
    api = await make_api(workers=1)
    receiver = await make_receiver(200)
    await api.submit(type="sleep", payload={"seconds": 1.5})
    deadline = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    job = await api.submit(type="echo", payload=1, deadline=deadline, callback_url=receiver.url)

    done = await api.job(job["id"], wait=10)

    assert done["status"] == "cancelled"
    assert done["error"]["type"] == "deadline"
    assert done["started_at"] is None
    [request] = await receiver.wait_for_requests(1)
    assert b'"type":"job.cancelled"' in request.body


async def test_no_delivery_retry_after_the_deadline(make_api, make_receiver):
    api = await make_api(retry_schedule="0.05,2,2")
    receiver = await make_receiver(500)
    deadline = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    job = await api.submit(type="echo", payload=1, deadline=deadline, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 2  # the 2 s retry would land after the deadline


async def test_jobs_list_filters_by_status_and_type(api):
    ok = await api.submit(type="echo", payload=1)
    bad = await api.submit(type="fail", payload={"message": "x"})
    await api.job(ok["id"], wait=5)
    await api.job(bad["id"], wait=5)

    _, failed = await api.call("GET", "/v1/jobs?status=failed")
    _, echoes = await api.call("GET", "/v1/jobs?type=echo")

    assert [j["id"] for j in failed["items"]] == [bad["id"]]
    assert [j["id"] for j in echoes["items"]] == [ok["id"]]
    assert failed["next_cursor"] is None


async def test_json_answers_end_with_a_newline(api):
    # `curl -s` output then leaves the shell prompt on a line of its own.
    for method, path, body in (
        ("POST", "/v1/jobs", {"type": "echo", "payload": 1}),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/job_nope", None),
    ):
        async with api.client.request(method, path, json=body, headers=api.headers()) as r:
            text = await r.text()
        assert text.endswith("}\n"), (path, text[-20:])
