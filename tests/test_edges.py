"""Edges found in review: inputs that are JSON to Python but not to anyone else, handlers
that fail in unusual ways, and work whose task dies."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.delivery.plan import finished
from dispatcher.ids import new_id, now
from dispatcher.store.records import JobStatus, NewJob
from dispatcher.store.sqlite import SQLiteStore
from tests.conftest import wait_for

HANDLERS = "tests.support.handlers"


async def assert_refused_and_nothing_stored(api, body: bytes, status: int) -> dict:
    code, problem = await api.call(
        "POST", "/v1/jobs", data=body, headers={"content-type": "application/json"}
    )
    assert code == status, problem
    assert problem["status"] == status
    _, listed = await api.call("GET", "/v1/jobs")
    assert listed["items"] == []
    return problem


async def test_a_paired_surrogate_escape_is_fine(api):
    job = await api.submit(type="echo", payload="\U0001f600")
    assert (await api.job(job["id"], wait=5))["result"] == "\U0001f600"


@pytest.mark.parametrize(
    "deadline", ["0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59-10:00"]
)
async def test_deadline_outside_representable_times_is_422(api, deadline):
    body = f'{{"type": "echo", "payload": 1, "deadline": "{deadline}"}}'.encode()
    problem = await assert_refused_and_nothing_stored(api, body, 422)
    assert problem["errors"][0]["field"] == "deadline"


async def test_delivery_filter_outside_representable_times_is_422(api):
    status, problem = await api.call("GET", "/v1/deliveries?since=0001-01-01T00:00:00%2B14:00")
    assert status == 422
    assert problem["errors"][0]["field"] == "since"


async def test_phone_number_with_a_trailing_newline_is_422(api):
    body = b'{"type": "echo", "notify": {"sms": "+1234567890\\n"}}'
    await assert_refused_and_nothing_stored(api, body, 422)


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [("cancelled", "CancelledError"), ("exit", "SystemExit"), ("timeout", "TimeoutError")],
)
async def test_handler_raising_unusual_exceptions_fails_only_its_job(make_api, kind, error_type):
    api = await make_api(handlers=HANDLERS)
    job = await api.submit(type="raises", payload={"kind": kind})
    done = await api.job(job["id"], wait=5)
    assert done["status"] == "failed"
    assert done["error"]["type"] == error_type
    again = await api.submit(type="echo", payload=1)
    assert (await api.job(again["id"], wait=5))["status"] == "succeeded"


async def test_handlers_own_timeout_error_keeps_its_message(make_api):
    api = await make_api(handlers=HANDLERS)
    job = await api.submit(type="raises", payload={"kind": "timeout"})
    done = await api.job(job["id"], wait=5)
    assert done["error"] == {"type": "TimeoutError", "message": "upstream took too long"}


@pytest.mark.parametrize("kind", ["nan", "surrogate"])
async def test_result_json_cannot_carry_fails_the_job(make_api, make_receiver, kind):
    api = await make_api(handlers=HANDLERS)
    receiver = await make_receiver(200)
    job = await api.submit(type="bad_result", payload={"kind": kind}, callback_url=receiver.url)
    done = await api.job(job["id"], wait=5)
    assert done["status"] == "failed"
    [request] = await receiver.wait_for_requests(1)
    assert b'"type":"job.failed"' in request.body


async def test_same_idempotency_key_with_a_full_queue_never_500s(make_api):
    api = await make_api(max_queue=1, workers=1, shutdown_grace=0)
    await api.submit(type="sleep", payload={"seconds": 5})
    await api.submit(type="sleep", payload={"seconds": 5})
    answers = await asyncio.gather(
        *(
            api.call(
                "POST",
                "/v1/jobs",
                json={"type": "echo", "payload": 1},
                headers={"Idempotency-Key": "k"},
            )
            for _ in range(5)
        )
    )
    assert {status for status, _ in answers} <= {202, 200, 503}
    assert any(status == 503 for status, _ in answers)


async def test_only_leases_in_hand_are_renewed(tmp_path):
    store = SQLiteStore(str(tmp_path / "leases.db"))
    await store.open()
    try:
        for _ in range(2):
            job = NewJob(new_id("job"), "acme", "echo", 1, None, None, None, None, None, now())
            await store.submit_job(job, 10)
        start = now()
        kept, dropped = await store.claim_jobs("me", 10, start, lease=0.5)
        await store.renew_leases("me", [kept.id], [], 60)
        # Later, another process finds only the job whose lease was not renewed.
        taken = await store.claim_jobs("other", 10, start + 1, lease=30)
        assert [job.id for job in taken] == [dropped.id]
    finally:
        await store.close()


async def test_handler_that_swallows_cancellation_still_times_out(make_api):
    api = await make_api(handlers=HANDLERS, shutdown_grace=0)
    job = await api.submit(type="stubborn", payload={})
    done = await api.job(job["id"], wait=5)
    assert done["status"] == "failed"
    assert done["error"]["type"] == "timeout"


async def test_callback_port_written_with_a_plus_sign_is_delivered(api, make_receiver):
    receiver = await make_receiver(200)
    port = receiver.url.split(":")[2].split("/")[0]
    url = receiver.url.replace(f":{port}/", f":+{port}/")
    job = await api.submit(type="echo", payload=1, callback_url=url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    assert len(receiver.requests) == 1


async def test_query_token_counts_only_on_the_stream_routes(api):
    async with api.client.delete(f"/v1/keys/ws?token={api.key}") as response:
        assert response.status == 401


@pytest.mark.parametrize("token", ["dk_\u00ff\u00fe", "dk_caf\u00e9"])
async def test_non_ascii_key_is_401_not_500(api, token):
    async with api.client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401
        assert r.content_type == "application/problem+json"


async def test_non_ascii_idempotency_key_is_422(api):
    status, problem = await api.call(
        "POST",
        "/v1/jobs",
        json={"type": "echo", "payload": 1},
        headers={"Idempotency-Key": "k\u00ff"},
    )
    assert status == 422
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    _, listed = await api.call("GET", "/v1/jobs")
    assert listed["items"] == []


async def test_pending_deliveries_from_before_hosts_get_one_on_open(tmp_path):
    path = str(tmp_path / "old.db")
    store = SQLiteStore(path)
    await store.open()
    job = NewJob(
        new_id("job"), "acme", "echo", 1, "http://127.0.0.1:9/h", None, None, None, None, now()
    )
    await store.submit_job(job, 10)
    [claimed] = await store.claim_jobs("a", 10, now(), lease=30)
    await store.finish_job(job.id, "a", finished(claimed, JobStatus.SUCCEEDED, now()))
    await store._writer.write(_back_to_version_2)  # a database from before hosts
    await store.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        rows = await store._read("SELECT host FROM deliveries")
        assert [row["host"] for row in rows] == ["127.0.0.1:9"]
    finally:
        await store.close()


def _back_to_version_2(batch) -> None:
    """Undo migrations 6 to 3, so that opening the file applies them again."""
    for statement in (
        "DROP TABLE write_probe",
        "DROP INDEX deliveries_failed",
        "DROP TABLE endpoints",
        "DROP INDEX deliveries_endpoint_pending",
        "ALTER TABLE tenants DROP COLUMN previous_secrets",
        "DROP INDEX jobs_tenant_queued",
        "ALTER TABLE jobs DROP COLUMN lapses",
        "ALTER TABLE deliveries DROP COLUMN lapses",
        "ALTER TABLE deliveries DROP COLUMN host",
        "DELETE FROM schema_version WHERE version >= 3",
    ):
        batch.db.execute(statement)


async def test_payload_is_required(api):
    body = b'{"type": "echo"}'
    problem = await assert_refused_and_nothing_stored(api, body, 422)
    assert problem["errors"][0]["field"] == "payload"


@pytest.mark.parametrize("email", ["ops@localhost", "ops@example.test", "a@b"])
async def test_any_address_with_a_domain_is_an_email(api, email):
    job = await api.submit(type="echo", payload=1, notify={"email": email})
    assert job["notify"]["email"] == email


@pytest.mark.parametrize("email", ["ops", "ops@", "@example.com", "Ops <ops@example.com>"])
async def test_an_address_without_a_domain_is_422(api, email):
    body = f'{{"type": "echo", "payload": 1, "notify": {{"email": "{email}"}}}}'.encode()
    problem = await assert_refused_and_nothing_stored(api, body, 422)
    assert problem["errors"][0]["field"] == "notify.email"


async def test_an_expired_job_answers_404_without_a_restart(make_api):
    api = await make_api(retention_days=0.00001)  # under a second
    job = await api.submit(type="echo", payload=1)
    assert (await api.job(job["id"], wait=5))["status"] == "succeeded"

    async def gone() -> bool:
        status, _ = await api.call("GET", f"/v1/jobs/{job['id']}")
        return status == 404

    await wait_for(gone, timeout=10)
